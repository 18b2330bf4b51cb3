"""docker-compose.yml: valid, production-shaped, and in step with the Makefile, .env.example,
the Dockerfile and aicmo's settings.

No Docker engine runs here. When a compose client is installed (``docker compose`` or
``docker-compose``), ``config`` validates the file against the Compose specification; the
structural checks below run always, on the file as YAML.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from aicmo.config import Settings
from tests.conftest import ROOT

COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
MAKEFILE = ROOT / "Makefile"
DOCKERFILE = ROOT / "Dockerfile"
AICMO_SERVICES = ("migrate", "worker", "beat", "flower", "web")
SENTINEL_PROFILE = ("redis-replica", "sentinel-1", "sentinel-2", "sentinel-3")
VARIABLE = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)(?::?[-?][^}]*)?\}")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = compose["services"]
    return found


def env_example() -> dict[str, str]:
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return values


def make_recipe(target: str) -> list[str]:
    """The first command of a Makefile target, with $(BIN)/ and $(VENV) prefixes dropped."""
    lines = MAKEFILE.read_text().splitlines()
    for index, line in enumerate(lines):
        if line.startswith(f"{target}:"):
            recipe = lines[index + 1].strip()
            return shlex.split(recipe.replace("$(BIN)/", ""))
    raise AssertionError(f"no {target} target in the Makefile")


def compose_client() -> list[str] | None:
    docker = shutil.which("docker")
    if docker:
        probe = subprocess.run([docker, "compose", "version"], capture_output=True, timeout=30)
        if probe.returncode == 0:
            return [docker, "compose"]
    standalone = shutil.which("docker-compose")
    return [standalone] if standalone else None


def test_compose_file_is_valid_compose(tmp_path: Path) -> None:
    client = compose_client()
    if client is None:
        # No client here: the YAML must still load and the checks below still run.
        assert isinstance(yaml.safe_load(COMPOSE.read_text()), dict)
        return
    ok = subprocess.run(
        [*client, "-f", str(COMPOSE), "--env-file", str(ENV_EXAMPLE), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert ok.returncode == 0, ok.stderr
    # Without a .env the secrets are missing, and compose refuses to start (never open).
    empty = tmp_path / "empty.env"
    empty.write_text("")
    refused = subprocess.run(
        [*client, "-f", str(COMPOSE), "--env-file", str(empty), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert refused.returncode != 0
    assert "POSTGRES_PASSWORD" in refused.stderr + refused.stdout


def test_the_stack_has_every_service_with_healthchecks(services: dict[str, Any]) -> None:
    assert set(services) == {"redis", "postgres", "pgbouncer", *AICMO_SERVICES, *SENTINEL_PROFILE}
    for name, service in services.items():
        if name == "migrate":
            assert service["restart"] == "no"
            assert "healthcheck" not in service
        else:
            assert service["healthcheck"]["test"], name
            assert service["restart"] == "unless-stopped", name


def test_postgres_and_redis_keep_their_data_in_volumes(
    compose: dict[str, Any], services: dict[str, Any]
) -> None:
    postgres_volume = services["postgres"]["volumes"][0].split(":")
    assert postgres_volume[1] == "/var/lib/postgresql/data"
    assert postgres_volume[0] in compose["volumes"]
    assert services["redis"]["volumes"][0].split(":")[0] in compose["volumes"]
    assert "--appendonly" in services["redis"]["command"]


def test_aicmo_services_wait_for_the_migration_and_healthy_services(
    services: dict[str, Any],
) -> None:
    assert services["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert services["pgbouncer"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    for name in ("worker", "beat", "flower", "web"):
        assert services[name]["depends_on"] == {
            "migrate": {"condition": "service_completed_successfully"},
            "redis": {"condition": "service_healthy"},
            "pgbouncer": {"condition": "service_healthy"},
        }, name
    for name in AICMO_SERVICES:
        environment = services[name]["environment"]
        assert environment["AICMO_DATABASE_URL"].startswith("postgresql+psycopg://")
        assert environment["AICMO_BROKER_URL"] == "${AICMO_BROKER_URL:-redis://redis:6379/0}"
        assert services[name]["build"] == "."


def test_workers_producers_and_beat_go_through_pgbouncer_in_transaction_pooling(
    services: dict[str, Any],
) -> None:
    bouncer = services["pgbouncer"]
    assert bouncer["environment"]["POOL_MODE"] == "transaction"
    assert bouncer["environment"]["DB_HOST"] == "postgres"
    assert bouncer["healthcheck"]["test"]
    port = bouncer["environment"]["LISTEN_PORT"]
    for name in ("worker", "beat", "flower", "web"):
        environment = services[name]["environment"]
        assert f"@pgbouncer:{port}/" in environment["AICMO_DATABASE_URL"], name
        # psycopg must not prepare statements behind transaction pooling.
        assert environment["AICMO_DATABASE_POOLER"] == "transaction", name
    # The migration goes straight to PostgreSQL.
    migrate = services["migrate"]["environment"]
    assert "@postgres:5432/" in migrate["AICMO_DATABASE_URL"]
    assert migrate["AICMO_DATABASE_POOLER"] == "none"


def test_sentinel_is_an_opt_in_profile_the_settings_accept(services: dict[str, Any]) -> None:
    for name in SENTINEL_PROFILE:
        assert services[name]["profiles"] == ["sentinel"], name
    assert "--replicaof" in services["redis-replica"]["command"]
    for name in ("sentinel-1", "sentinel-2", "sentinel-3"):
        assert "sentinel monitor aicmo redis 6379 2" in services[name]["command"][-1]
    # The URL the comments and .env.example give, with the default master name, is valid.
    documented = next(
        line.split("AICMO_BROKER_URL=", 1)[1]
        for line in ENV_EXAMPLE.read_text().splitlines()
        if "AICMO_BROKER_URL=sentinel://" in line
    )
    assert documented.strip() in COMPOSE.read_text()
    settings = Settings(broker_url=documented.strip(), broker_master_name="aicmo")
    assert settings.is_sentinel_broker
    assert services["worker"]["environment"]["AICMO_BROKER_MASTER_NAME"].endswith("-aicmo}")


def test_commands_match_the_makefile(services: dict[str, Any]) -> None:
    assert services["migrate"]["command"] == make_recipe("migrate")
    for name in ("worker", "beat", "flower"):
        # Same program and subcommand as `make worker|beat|flower`.
        assert (
            services[name]["command"][:4]
            == make_recipe(name)[:4]
            == ["celery", "-A", "tasks", name]
        )
    assert services["web"]["command"][:2] == make_recipe("serve")[:2] == ["aicmo", "serve"]
    assert services["web"]["ports"][0].startswith("127.0.0.1:")
    assert "/healthz" in " ".join(services["web"]["healthcheck"]["test"])
    assert make_recipe("up")[:3] == ["docker", "compose", "up"]
    assert make_recipe("down")[:3] == ["docker", "compose", "down"]
    # Flower listens on the Makefile's port inside the container, published on localhost only.
    make_port = next(a for a in make_recipe("flower") if a.startswith("--port=")).split("=")[1]
    assert f"--port={make_port}" in services["flower"]["command"]
    published = services["flower"]["ports"][0]
    assert published.startswith("127.0.0.1:") and published.endswith(f":{make_port}")
    assert f"127.0.0.1:{make_port}/healthcheck" in " ".join(
        services["flower"]["healthcheck"]["test"]
    )


def test_flower_is_behind_required_basic_auth(services: dict[str, Any]) -> None:
    auth = services["flower"]["environment"]["FLOWER_BASIC_AUTH"]
    assert re.fullmatch(r"\$\{FLOWER_BASIC_AUTH:\?[^}]+\}", auth), auth
    assert "FLOWER_UNAUTHENTICATED_API" not in services["flower"]["environment"]
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"].startswith(
        "${POSTGRES_PASSWORD:?"
    )


def test_env_example_and_compose_use_the_same_variables() -> None:
    used = set(VARIABLE.findall(COMPOSE.read_text()))
    defined = set(env_example())
    assert used - defined == set(), "compose uses variables .env.example does not define"
    assert defined - used == set(), ".env.example defines variables compose never uses"
    for name in defined:
        assert env_example()[name], f"{name} has no example value"


def test_every_aicmo_variable_is_a_real_setting(services: dict[str, Any]) -> None:
    fields = {f"AICMO_{name.upper()}" for name in Settings.model_fields}
    names = {n for n in env_example() if n.startswith("AICMO_")}
    for name in AICMO_SERVICES:
        names |= {n for n in services[name]["environment"] if n.startswith("AICMO_")}
    assert names - fields == set()
    # And the example values are valid settings.
    Settings(
        **{n.removeprefix("AICMO_").lower(): v for n, v in env_example().items() if n in fields}
    )


def test_dockerfile_ships_what_the_services_run() -> None:
    text = DOCKERFILE.read_text()
    for needed in ("migrations", "tasks", "aicmo", "beat_schedule.py", "pyproject.toml"):
        assert re.search(rf"^COPY .*\b{re.escape(needed)}\b", text, re.MULTILINE), needed
    assert "pip install -e ." in text  # Alembic finds migrations/ next to the code
    assert re.search(r"^USER (?!root)\w+", text, re.MULTILINE), "the image must not run as root"
    assert 'aicmo = "aicmo.cli:main"' in (ROOT / "pyproject.toml").read_text()
