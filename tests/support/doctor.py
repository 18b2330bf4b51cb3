"""``aicmo doctor`` as a test assertion: a scenario ends with nothing stranded."""

from __future__ import annotations

from aicmo.db import session_scope


def stranded(database_url: str | None = None) -> list[str]:
    """What doctor reports stranded, one line per finding ("check subject: detail")."""
    from aicmo.ops import doctor

    with session_scope(database_url) as session:
        return [f"{f.check} {f.subject}: {f.detail}" for f in doctor.find(session)]


def assert_nothing_stranded(database_url: str | None = None) -> None:
    found = stranded(database_url)
    assert not found, f"doctor reports {len(found)} stranded:\n" + "\n".join(found[:20])
