"""One source for both sides' Celery settings: ``tasks/config.py``.

The plain app must run with exactly the settings aicmo's app runs with (acks, prefetch, events,
serializers, result backend, time limits...), or a ratio measures the settings instead of
aicmo. So the harness derives the plain app's configuration from ``celery_config(Settings())``
(the same function aicmo's app is built from, reading the same ``AICMO_*`` environment) and
hands it to the plain worker as JSON in ``BENCH_PLAIN_CONFIG``. The plain worker itself
imports only Celery, so its memory and start-up stay those of a plain Celery worker.

``python -m tests.benchmarks.bench_settings`` prints both apps' effective settings (every
Celery setting, defaults included, and the options of the task each side runs) as JSON, built
the way each worker builds them; :func:`differences` lists what is not the same.
``tests/unit/test_bench_settings.py`` and the start of every benchmark run check it is empty.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

# Routing and naming: each app has its own queue and task names, which cost nothing per task.
# beat_schedule is aicmo's beat entries (the benchmarks run no beat).
DIFFERENT_BY_DESIGN = frozenset(
    {"task_queues", "task_default_queue", "task_default_routing_key", "beat_schedule"}
)
# Per task: what the worker does around each call.
TASK_OPTIONS = (
    "acks_late",
    "acks_on_failure_or_timeout",
    "reject_on_worker_lost",
    "ignore_result",
    "store_errors_even_if_ignored",
    "track_started",
    "soft_time_limit",
    "time_limit",
    "max_retries",
    "default_retry_delay",
    "rate_limit",
    "serializer",
    "priority",
    "expires",
    "typing",
)
# The reference task on each side: a no-op (aicmo: T_NOOP, registry defaults).
AICMO_TASK = "aol.T_NOOP"
PLAIN_TASK = "plain.noop"
# What "Celery's defaults (events off)" changes from aicmo's settings: the two event switches.
DEFAULT_EVENTS = {"worker_send_task_events": False, "task_send_sent_event": False}


def plain_config(broker_url: str, events: bool | None = None) -> dict[str, Any]:
    """aicmo's Celery settings (``tasks/config.py`` under this environment's ``AICMO_*``)
    minus its queues and routing, as JSON. ``events=False``: Celery's default event settings
    (both off) instead of aicmo's; ``None``: aicmo's own."""
    from aicmo.config import Settings
    from tasks.config import celery_config

    config = {
        key: value
        for key, value in celery_config(Settings()).items()
        if key not in DIFFERENT_BY_DESIGN
    }
    config["broker_url"] = broker_url
    if events is False:
        config.update(DEFAULT_EVENTS)
    elif events is True:
        config["worker_send_task_events"] = True
    json.dumps(config)  # the plain worker receives it as JSON: fail here, not in the worker
    return config


def plain_task_options() -> dict[str, Any]:
    """The options of aicmo's no-op task: ``ActionTask``'s and the registry's defaults."""
    import dataclasses

    from aicmo.orchestration.registry import ActionType
    from tasks.actions import ActionTask

    defaults = {f.name: f.default for f in dataclasses.fields(ActionType)}
    return {
        "acks_late": ActionTask.acks_late,
        "reject_on_worker_lost": ActionTask.reject_on_worker_lost,
        "ignore_result": ActionTask.ignore_result,
        "max_retries": ActionTask.max_retries,
        "typing": ActionTask.typing,
        "soft_time_limit": defaults["soft_time_limit"],
        "time_limit": defaults["time_limit"],
    }


def effective(app: Any, task_name: str) -> dict[str, Any]:
    """Every Celery setting of ``app`` (defaults included) and the options of one task."""
    app.loader.import_default_modules()
    table = app.conf.table(with_defaults=True)
    task = app.tasks[task_name]
    return {
        "conf": {key: _plain(value) for key, value in sorted(table.items())},
        "task": {name: _plain(getattr(task, name, None)) for name in TASK_OPTIONS},
    }


def _plain(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except TypeError:
        return repr(value)


def differences(aicmo: dict[str, Any], plain: dict[str, Any]) -> list[str]:
    """``key: aicmo=.. plain=..`` for every setting (not routing) that differs."""
    out = []
    for section in ("conf", "task"):
        left, right = aicmo[section], plain[section]
        for key in sorted(set(left) | set(right)):
            if section == "conf" and key in DIFFERENT_BY_DESIGN:
                continue
            if left.get(key) != right.get(key):
                out.append(f"{section}.{key}: aicmo={left.get(key)!r} plain={right.get(key)!r}")
    return out


def asymmetries(found: dict[str, Any], events: bool | None = None) -> list[str]:
    """What differs between the two apps of :func:`both`, but for the event switches when the
    plain app runs with Celery's defaults (``events=False``), which must then be those."""
    out = differences(found["aicmo"], found["plain"])
    if events is False:
        out = [line for line in out if line.split(":")[0][len("conf.") :] not in DEFAULT_EVENTS]
        out += [
            f"conf.{key}: plain={found['plain']['conf'].get(key)!r}, Celery's default {value!r}"
            for key, value in DEFAULT_EVENTS.items()
            if found["plain"]["conf"].get(key) != value
        ]
    return out


def both(env: dict[str, str], derive_events: str | None = None) -> dict[str, Any]:
    """Both apps' effective settings, built in a fresh process under ``env`` the way each
    worker builds them (aicmo: ``-A tasks``; plain: ``-A tests.benchmarks.plain_app``).

    ``env`` carries the plain app's ``BENCH_PLAIN_CONFIG`` as the harness made it; or, with
    ``derive_events`` (``aicmo`` or ``off``), that process derives it from its own ``AICMO_*``
    first, as the harness does."""
    argv = [sys.executable, "-m", "tests.benchmarks.bench_settings"]
    if derive_events is not None:
        argv += ["--derive", derive_events]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"reading the apps' settings failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def check_symmetric(worker_env: Callable[[bool | None], dict[str, str]]) -> list[str]:
    """Build both apps under the environment a run gives its workers (``worker_env(events)``:
    plain with aicmo's settings, then with Celery's default events) and say what differs."""
    problems = []
    for events in (None, False):
        diff = asymmetries(both(worker_env(events)), events)
        if diff:
            label = "plain (Celery's default events)" if events is False else "plain"
            problems.append(f"{label} does not run with aicmo's settings:\n  " + "\n  ".join(diff))
    return problems


def main(argv: list[str]) -> None:
    if argv[:1] == ["--derive"]:
        events = {"aicmo": None, "off": False}[argv[1]]
        os.environ["BENCH_PLAIN_CONFIG"] = json.dumps(
            plain_config(os.environ["BENCH_PLAIN_BROKER"], events)
        )
        os.environ["BENCH_PLAIN_TASK_OPTIONS"] = json.dumps(plain_task_options())
    import tasks
    from tests.benchmarks import plain_app

    out = {
        "aicmo": effective(tasks.app, AICMO_TASK),
        "plain": effective(plain_app.app, PLAIN_TASK),
    }
    print(json.dumps(out, default=repr))


if __name__ == "__main__":
    main(sys.argv[1:])
