"""Plain Celery in ``make bench`` runs with exactly aicmo's Celery settings.

Each test builds both apps in a fresh process, the way their workers build them (aicmo:
``celery -A tasks``; plain: ``celery -A tests.benchmarks.plain_app`` from the configuration the
harness derives from ``tasks/config.py``), and compares every Celery setting (defaults
included: acks, prefetch, events, serializers, result backend, time limits...) and the options
of the task each side runs. No service is contacted.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import pytest

from tests.benchmarks.bench_env import ACTION_MODULES, BenchEnv, shell_settings
from tests.benchmarks.bench_settings import DEFAULT_EVENTS, asymmetries, both, check_symmetric
from tests.support import services
from tests.support.processes import ROOT

BROKER = "redis://127.0.0.1:6379/15"  # never connected to: apps are only built


def _env(**aicmo: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AICMO_", "BENCH_"))}
    env.update(
        {
            "PYTHONPATH": str(ROOT),
            "AICMO_DATABASE_URL": "postgresql+psycopg://postgres@127.0.0.1:5432/aicmo_unused",
            "AICMO_BROKER_URL": BROKER,
            "AICMO_ACTION_MODULES": ACTION_MODULES,
            "BENCH_PLAIN_BROKER": BROKER,
            **aicmo,
        }
    )
    return env


@pytest.mark.parametrize("task_events", [None, "true", "false"])
def test_plain_app_runs_with_aicmos_celery_settings(task_events: str | None) -> None:
    extra = {} if task_events is None else {"AICMO_TASK_EVENTS": task_events}
    found = both(_env(**extra), derive_events="aicmo")
    assert asymmetries(found) == []
    for side in ("aicmo", "plain"):
        conf, task = found[side]["conf"], found[side]["task"]
        assert conf["task_acks_late"] is True and task["acks_late"] is True, side
        assert conf["worker_prefetch_multiplier"] == 1, side
        assert conf["task_send_sent_event"] is False, side
        assert conf["worker_send_task_events"] is (task_events != "false"), side
        assert conf["result_backend"] is None and task["ignore_result"] is True, side
        assert (task["soft_time_limit"], task["time_limit"]) == (240.0, 300.0), side


def test_plain_with_celerys_default_events_differs_only_in_the_event_switches() -> None:
    found = both(_env(AICMO_TASK_EVENTS="true"), derive_events="off")
    assert asymmetries(found, events=False) == []
    differing = {line.split(":")[0] for line in asymmetries(found)}
    assert differing == {f"conf.{key}" for key in DEFAULT_EVENTS if key != "task_send_sent_event"}


def test_the_comparison_catches_a_plain_app_with_its_own_settings() -> None:
    """Broken on purpose: the asymmetry of issue 18 (only plain sent task-sent events) and a
    lighter prefetch must both be reported."""
    reference = both(_env(), derive_events="aicmo")
    config = {
        key: value
        for key, value in reference["plain"]["conf"].items()
        if key.startswith(("task_", "worker_", "broker_", "result_", "accept_", "event_"))
        and key not in ("task_queues", "task_default_queue", "task_default_routing_key")
        and not (isinstance(value, str) and value.startswith("<"))
    }
    config.update(task_send_sent_event=True, worker_prefetch_multiplier=4)
    env = _env(
        BENCH_PLAIN_CONFIG=json.dumps(config),
        BENCH_PLAIN_TASK_OPTIONS=json.dumps({"acks_late": True, "ignore_result": True}),
    )
    found = both(env)
    differing = {line.split(":")[0] for line in asymmetries(found)}
    assert {"conf.task_send_sent_event", "conf.worker_prefetch_multiplier"} <= differing
    # Task options the plain app was not given: the registry's time limits.
    assert {"task.soft_time_limit", "task.time_limit"} <= differing
    # The check every run makes before measuring refuses it.
    [problem, *_] = check_symmetric(lambda events: env)
    assert "plain does not run with aicmo's settings" in problem
    assert "task_send_sent_event: aicmo=False plain=True" in problem


@pytest.fixture
def bench_env() -> Iterator[BenchEnv]:
    env = BenchEnv()
    env.found = services.TestServices("aicmo_bench_unused", 15)
    yield env
    env.close()  # no database or Redis number was claimed: only the temp folder goes


def test_aicmo_settings_from_the_shell_reach_the_workers(
    bench_env: BenchEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    shell = {
        "AICMO_TASK_EVENTS": "false",
        "AICMO_LOG_LEVEL": "WARNING",
        "AICMO_DATABASE_URL": "postgresql+psycopg://elsewhere/prod",  # the run owns this one
        "AICMO_TEST_PG_ADMIN": "postgresql://postgres@127.0.0.1/postgres",  # the harness's
    }
    passed = shell_settings(shell)
    assert passed == {"AICMO_TASK_EVENTS": "false", "AICMO_LOG_LEVEL": "WARNING"}
    bench_env.shell_settings = passed
    worker = bench_env.worker("aicmo", ["aol"])
    assert worker.env["AICMO_TASK_EVENTS"] == "false"
    assert worker.env["AICMO_LOG_LEVEL"] == "WARNING"
    assert worker.env["AICMO_DATABASE_URL"] == bench_env.database_url
    # The same variables, given to both apps, switch events off on both sides.
    found = both(_env(**passed), derive_events="aicmo")
    assert asymmetries(found) == []
    assert found["plain"]["conf"]["worker_send_task_events"] is False


def test_secrets_from_the_shell_are_masked_in_the_report(bench_env: BenchEnv) -> None:
    bench_env.shell_settings = {"AICMO_LLM_API_KEY": "sk-live-123", "AICMO_TASK_EVENTS": "false"}
    shown = bench_env.shell_settings_shown()
    assert shown == {"AICMO_LLM_API_KEY": "***", "AICMO_TASK_EVENTS": "false"}
