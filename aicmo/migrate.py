"""Run the Alembic migrations from code (``aicmo db upgrade``, tests, the demo)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from aicmo.config import get_settings

ROOT = Path(__file__).resolve().parent.parent
MIGRATIONS = ROOT / "migrations"
# At the project root, as Alembic projects keep it, so a bare `alembic upgrade head` works.
ALEMBIC_INI = ROOT / "alembic.ini"


def alembic_config(url: str | None = None) -> Config:
    config = Config(str(ALEMBIC_INI))
    config.set_main_option("script_location", str(MIGRATIONS))
    # ConfigParser treats % as interpolation: escape it (URL-encoded passwords).
    url = url or get_settings().database_url
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.attributes["configure_logger"] = False
    return config


def upgrade(url: str | None = None, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str | None, revision: str) -> None:
    command.downgrade(alembic_config(url), revision)


def current_heads() -> set[str]:
    from alembic.script import ScriptDirectory

    return set(ScriptDirectory.from_config(alembic_config()).get_heads())
