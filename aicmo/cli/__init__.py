"""The ``aicmo`` command: inspect, enqueue, replay, pause, health, review, serve and the demo.

Every command reads its settings from the environment (``AICMO_*``, see aicmo/config.py),
prints rich tables for people and ``--json`` for scripts, and exits non-zero with one clear
line on bad input. Exit codes: 0 ok, 1 refused or failed (unknown action, invalid payload,
unhealthy), 2 usage error (bad option or argument).

One module per command group, each thin: parse the input, call ``aicmo.ops``, render.
"""

from aicmo.cli import (
    accounts,
    actions,
    campaigns,
    db,
    demo,
    doctor,
    messages,
    operate,
    serve,
    users,
)
from aicmo.cli.base import main

__all__ = [
    "accounts",
    "actions",
    "campaigns",
    "db",
    "demo",
    "doctor",
    "main",
    "messages",
    "operate",
    "serve",
    "users",
]
