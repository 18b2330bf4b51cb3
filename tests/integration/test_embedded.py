"""The embedded default: SQLite file + kombu's filesystem transport, with a real worker process.

Everything runs in subprocesses with their own environment, because settings are per process.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.processes import ROOT, CeleryProcess, wait_for, worker

PRODUCER = """
import json, sys
from sqlalchemy import text
from aicmo.db import session_scope
from aicmo.orchestration.queue import ActionQueue
import tasks  # installs the dispatcher for the filesystem transport

with session_scope() as s:
    s.execute(text("CREATE TABLE IF NOT EXISTS test_effects (id INTEGER PRIMARY KEY, "
                   "tag TEXT, action_id INTEGER, attempt INTEGER, worker TEXT)"))
with session_scope() as s:
    items = [("T_EFFECT", {"tag": f"emb{n}"}) for n in range(30)]
    items.append(("T_EFFECT", {"tag": "emb-flaky", "fail_first": 1}))
    items.append(("POST_SOCIAL", {"social_platform": "linkedin", "content": "embedded"}))
    done = ActionQueue.enqueue_many(s, items)
print(json.dumps([d.action_id for d in done]))
"""


@pytest.fixture
def embedded_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    env = {
        "AICMO_DATABASE_URL": f"sqlite:///{tmp_path / 'aicmo.db'}",
        "AICMO_BROKER_URL": "filesystem://",
        "AICMO_BROKER_DIR": str(tmp_path / "broker"),
        "AICMO_ARTIFACT_DIR": str(tmp_path / "artifacts"),
        "AICMO_ACTION_MODULES": "aicmo.orchestration.adapters,tests.support.actions",
    }
    yield env


def run_python(code: str, env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_happy_path_on_sqlite_and_the_file_transport(
    embedded_env: dict[str, str], tmp_path: Path, log_dir: Path
) -> None:
    run_python("from aicmo.migrate import upgrade; upgrade()", embedded_env)
    process: CeleryProcess = worker(log_dir, concurrency=2, env=embedded_env).start()
    try:
        ids = json.loads(run_python(PRODUCER, embedded_env))
        database = tmp_path / "aicmo.db"

        def statuses() -> dict[int, str]:
            with sqlite3.connect(database) as conn:
                return dict(conn.execute("SELECT id, status FROM aol_actions").fetchall())

        wait_for(
            lambda: set(statuses().values()) == {"SUCCESS"},
            60,
            interval=0.2,
            message=f"embedded actions to succeed: {statuses()}",
        )
        with sqlite3.connect(database) as conn:
            effects = conn.execute("SELECT action_id, attempt FROM test_effects").fetchall()
            flaky = conn.execute(
                "SELECT attempts FROM aol_actions WHERE payload_json LIKE '%emb-flaky%'"
            ).fetchone()
        assert sorted(a for a, _ in effects) == sorted(ids[:31]), "lost or doubled"
        assert flaky == (2,)
        assert list((tmp_path / "artifacts" / "post_social").glob("*.json"))
        assert "database is locked" not in process.log()
    finally:
        process.stop()


# -- the embedded file transport ---------------------------------------------------------


def test_file_transport_never_shows_a_consumer_a_half_written_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kombu's own transport creates ``<name>.msg`` before writing its body, so a consumer
    in another process can take an empty message (and its worker dies on the JSON error).
    Here nothing named ``*.msg`` exists until the message is whole."""
    from kombu import Connection

    from tasks import filesystem_transport as transport

    # While message k is written: the k earlier ones, each whole; never an empty *.msg.
    seen_while_writing: list[list[int]] = []
    real_dumps = transport.dumps

    def spy(payload: object) -> str:
        seen_while_writing.append([p.stat().st_size for p in tmp_path.glob("*.msg")])
        return str(real_dumps(payload))

    monkeypatch.setattr(transport, "dumps", spy)
    options = {
        "data_folder_in": str(tmp_path),
        "data_folder_out": str(tmp_path),
        "processed_folder": str(tmp_path / "processed"),
        "control_folder": str(tmp_path / "control"),  # kombu's default: ./control
        "store_processed": False,
    }
    with Connection(transport=transport.Transport, transport_options=options) as conn:
        queue = conn.SimpleQueue("aol")
        for n in range(3):
            queue.put({"n": n})
        assert [len(sizes) for sizes in seen_while_writing] == [0, 1, 2]
        assert all(size > 0 for sizes in seen_while_writing for size in sizes)
        assert not list(tmp_path.glob(".*.tmp"))  # nothing left behind
        received = []
        for _ in range(3):
            message = queue.get(timeout=5)
            received.append(message.payload["n"])
            message.ack()
        assert sorted(received) == [0, 1, 2]  # kombu orders by millisecond, then uuid


def test_the_celery_app_installs_the_atomic_transport_for_filesystem_urls() -> None:
    """What every producer, worker and beat does on importing the app (in a process of its
    own here)."""
    check = (
        "import tasks\n"
        "from kombu.transport import resolve_transport\n"
        "from tasks import filesystem_transport as transport\n"
        "assert resolve_transport('filesystem') is transport.Transport\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
