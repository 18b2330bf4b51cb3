"""Health checks for operators and container probes (``aicmo health``).

* database: reachable, and its schema at the newest migration;
* broker: a connection can be opened within the timeout;
* beat: the sweeper ran recently (the ``aol.sweep`` task records a heartbeat each run, so
  this also needs a worker to run it);
* workers: at least one answers a Celery ping;
* stranded: ``aicmo doctor`` finds nothing that no process will move (an action of an
  unregistered type, a lost message no resend will cover, an expired lease no sweep took).

The Celery app is imported by name (``AICMO_CELERY_APP``), as the dispatcher does, so this
module never depends on ``tasks/`` statically.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aicmo.config import Settings, get_settings
from aicmo.orchestration.redaction import redact


@dataclass
class CheckResult:
    name: str
    ok: bool
    detail: str
    duration_ms: float = 0.0
    data: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "ok": self.ok,
            "detail": self.detail,
            "duration_ms": round(self.duration_ms, 1),
            **self.data,
        }


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return redact(f"{type(exc).__name__}: {line}")


def celery_app(settings: Settings) -> Any:
    return importlib.import_module(settings.celery_app).app


def check_database(settings: Settings, timeout: float) -> CheckResult:
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy import text

    from aicmo.db import get_engine
    from aicmo.migrate import current_heads

    url = redact(settings.database_url)
    try:
        with get_engine(settings.database_url).connect() as conn:
            conn.execute(text("SELECT 1"))
            current = MigrationContext.configure(conn).get_current_revision()
    except Exception as exc:
        return CheckResult("database", False, f"{url}: {_first_line(exc)}")
    heads = current_heads()
    if current is None:
        return CheckResult("database", False, f"{url}: no schema; run `aicmo db upgrade`")
    if current not in heads:
        return CheckResult(
            "database",
            False,
            f"{url}: schema at {current}, code expects {', '.join(sorted(heads))}; "
            "run `aicmo db upgrade`",
            data={"revision": current},
        )
    return CheckResult("database", True, f"{url}, schema {current}", data={"revision": current})


def check_broker(settings: Settings, timeout: float) -> CheckResult:
    url = redact(settings.broker_url)
    try:
        app = celery_app(settings)
        with app.connection_for_read(connect_timeout=timeout) as conn:
            conn.ensure_connection(max_retries=1, timeout=timeout)
            _ = conn.default_channel  # opens a channel: on Redis, a PING
    except Exception as exc:
        return CheckResult("broker", False, f"{url}: {_first_line(exc)}")
    return CheckResult("broker", True, url)


def check_beat(settings: Settings, timeout: float) -> CheckResult:
    from aicmo.db import db_now, session_scope
    from aicmo.orchestration.stats import SWEEP_HEARTBEAT, read_heartbeat

    limit = settings.health_max_sweep_age_seconds
    try:
        with session_scope(settings.database_url) as session:
            beat = read_heartbeat(session, SWEEP_HEARTBEAT)
            now = db_now(session)  # the heartbeat was written on the database's clock
    except Exception as exc:
        return CheckResult("beat", False, f"cannot read the sweep heartbeat: {_first_line(exc)}")
    if beat is None:
        return CheckResult("beat", False, "the sweeper has never run (is beat running?)")
    age = beat.age_seconds(now)
    data = {"last_sweep_age_seconds": round(age, 3), "last_sweep_by": beat.by}
    if age > limit:
        return CheckResult(
            "beat",
            False,
            f"last sweep {age:.0f}s ago (limit {limit:g}s): is beat running, with a worker?",
            data=data,
        )
    return CheckResult("beat", True, f"last sweep {age:.1f}s ago, run by {beat.by}", data=data)


def check_workers(settings: Settings, timeout: float) -> CheckResult:
    try:
        app = celery_app(settings)
        replies = app.control.ping(timeout=timeout) or []
    except Exception as exc:
        return CheckResult("workers", False, f"ping failed: {_first_line(exc)}")
    names = sorted(name for reply in replies for name in reply)
    if not names:
        return CheckResult("workers", False, f"no worker answered a ping within {timeout:g}s")
    return CheckResult(
        "workers", True, f"{len(names)} answering: {', '.join(names)}", data={"workers": names}
    )


def check_stranded(settings: Settings, timeout: float) -> CheckResult:
    from aicmo.db import session_scope
    from aicmo.ops import doctor

    try:
        with session_scope(settings.database_url) as session:
            findings = doctor.find(session)
    except Exception as exc:
        return CheckResult("stranded", False, f"doctor could not run: {_first_line(exc)}")
    counts: dict[str, int] = {}
    for finding in findings:
        counts[finding.check] = counts.get(finding.check, 0) + 1
    if not findings:
        return CheckResult("stranded", True, "nothing stranded", data={"stranded": 0})
    listed = ", ".join(f"{name} {n}" for name, n in sorted(counts.items()))
    return CheckResult(
        "stranded",
        False,
        f"{len(findings)} stranded ({listed}): see `aicmo doctor`",
        data={"stranded": len(findings), "by_check": counts},
    )


CHECKS: dict[str, Callable[[Settings, float], CheckResult]] = {
    "database": check_database,
    "broker": check_broker,
    "beat": check_beat,
    "workers": check_workers,
    "stranded": check_stranded,
}


def run_checks(names: Iterable[str], timeout: float | None = None) -> list[CheckResult]:
    settings = get_settings()
    wait = timeout if timeout is not None else settings.health_timeout_seconds
    results = []
    for name in names:
        started = time.monotonic()
        try:
            result = CHECKS[name](settings, wait)
        except Exception as exc:  # a check must report, never crash the probe
            result = CheckResult(name, False, _first_line(exc))
        result.duration_ms = (time.monotonic() - started) * 1000
        results.append(result)
    return results
