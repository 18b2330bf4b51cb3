"""A worker holds only what it runs: the main process no engine, a pool child no ORM and no
handler module until an action needs them (issue #18, memory).

Each check runs in a fresh interpreter on an SQLite file (the embedded default), so nothing
the test process imported hides a regression.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.support.processes import ROOT

MODULES = "aicmo.orchestration.adapters,tests.support.actions"

# The worker's view, step by step: import the app (the main process), load the engine (a pool
# child after the fork), run a handler that never touches ctx.session, then one that does.
CHILD = """
import json, sys
watched = ["sqlalchemy", "sqlalchemy.orm", "aicmo.cam", "httpx",
           "aicmo.orchestration.adapters.campaign_adapter",
           "aicmo.orchestration.adapters.social_adapter"]
seen = {}
def look(step):
    seen[step] = sorted(m for m in watched if m in sys.modules)
import tasks
look("main")
from tasks.actions import executor, load_engine
load_engine()
look("child")
noop_id, effect_id = map(int, sys.argv[1:3])
seen["noop"] = executor().run(noop_id, "T_NOOP").kind.value
look("after_noop")
seen["effect"] = executor().run(effect_id, "T_EFFECT").kind.value
look("after_session")
from aicmo.orchestration.registry import registry
registry.get("POST_SOCIAL")
look("after_get")
print(json.dumps(seen))
"""

ENQUEUE = """
import json
from aicmo.migrate import upgrade
from aicmo.db import get_engine, session_scope
from sqlalchemy import text
from aicmo.orchestration.queue import ActionQueue
from tests.support.actions import EFFECTS_DDL
upgrade()
with get_engine().begin() as conn:
    conn.execute(text(EFFECTS_DDL.format(id_type="INTEGER PRIMARY KEY AUTOINCREMENT")))
with session_scope() as s:
    ids = [ActionQueue.enqueue_action(s, "T_NOOP", {}).id,
           ActionQueue.enqueue_action(s, "T_EFFECT", {"tag": "lazy"}).id]
print(json.dumps(ids))
"""


def _python(code: str, tmp_path: Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AICMO_")}
    env.update(
        PYTHONPATH=str(ROOT),
        AICMO_DATABASE_URL=f"sqlite:///{tmp_path / 'aicmo.db'}",
        AICMO_BROKER_URL="filesystem://",
        AICMO_BROKER_DIR=str(tmp_path / "broker"),
        AICMO_ARTIFACT_DIR=str(tmp_path / "artifacts"),
        AICMO_ACTION_MODULES=MODULES,
    )
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1]


def test_worker_imports_the_orm_and_handlers_only_when_an_action_needs_them(
    tmp_path: Path,
) -> None:
    noop_id, effect_id = json.loads(_python(ENQUEUE, tmp_path))
    seen = json.loads(_python(CHILD, tmp_path, str(noop_id), str(effect_id)))

    # The main process: tasks are made from declarations; no database code at all.
    assert seen["main"] == []
    # A pool child: the engine on SQLAlchemy Core, no ORM, no campaign code.
    assert seen["child"] == ["sqlalchemy"]
    assert seen["noop"] == "SUCCEEDED"
    assert seen["after_noop"] == ["sqlalchemy"]
    # A handler that writes through ctx.session brings the ORM, nothing else.
    assert seen["effect"] == "SUCCEEDED"
    assert seen["after_session"] == ["sqlalchemy", "sqlalchemy.orm"]
    # A declared type's module is imported when the type is first needed.
    assert "aicmo.orchestration.adapters.social_adapter" in seen["after_get"]
    assert "aicmo.orchestration.adapters.campaign_adapter" not in seen["after_get"]
