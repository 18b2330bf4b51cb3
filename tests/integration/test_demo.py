"""``aicmo demo`` (what ``make demo`` runs) on the embedded default: no PostgreSQL, no Redis.

It runs as a newcomer would run it: the installed console script, in a fresh folder, with
no AICMO_* setting, real ``celery worker`` and ``celery beat`` children on the file
transport and a SQLite file. The database it leaves behind is checked directly.
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import psutil
import pytest

from tests.support.processes import wait_for

AICMO = Path(sys.executable).with_name("aicmo")


def fresh_machine_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AICMO_")}
    env["COLUMNS"] = "120"
    return env


def child_pids(output: str) -> list[int]:
    found = re.search(r"worker pid (\d+), beat pid (\d+)", output)
    assert found, output
    return [int(found.group(1)), int(found.group(2))]


def gone(pids: list[int]) -> bool:
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                return False
        except psutil.NoSuchProcess:
            pass
    return True


def celery_processes_in(folder: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline", "environ"]):
        try:
            environ = proc.info.get("environ") or {}
        except psutil.Error:
            continue
        if str(folder) in environ.get("AICMO_DATABASE_URL", ""):
            found.append(proc)
    return found


def test_demo_runs_the_whole_flow_on_the_embedded_default(tmp_path: Path) -> None:
    started = time.monotonic()
    done = subprocess.run(
        [str(AICMO), "demo"],
        cwd=tmp_path,
        env=fresh_machine_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    took = time.monotonic() - started
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert took < 60, f"the demo took {took:.0f}s"

    folder = tmp_path / "var" / "demo"  # the default --dir, relative to where it runs
    # Progress while it ran, then the summary and where things are.
    for line in (
        "✓ schema through Alembic",
        "✓ start a Celery worker and beat",
        "actions:",
        "is DLQ after 3 attempts",
        "is SUCCESS on its replay",
        "campaign: leads, ticks, review, publishing in proof mode",
        "draft(s) waiting for review",
        "actions by type and status",
        "artifacts written",
        "demo finished in",
        f"artifacts:  {folder / 'artifacts'}",
        "open the console on the demo's data",
        "aicmo serve",
        "log in as demo / ",
    ):
        assert line in output, (line, output)
    assert "Traceback" not in output
    assert "campaign flow not available" not in output

    # The database the demo made through Alembic holds the story it told.
    with sqlite3.connect(folder / "aicmo.db") as db:
        revision = db.execute("SELECT version_num FROM alembic_version").fetchone()
        statuses = dict(
            db.execute("SELECT status, count(*) FROM aol_actions GROUP BY status").fetchall()
        )
        by_type = dict(
            db.execute("SELECT action_type, count(*) FROM aol_actions GROUP BY 1").fetchall()
        )
        types = set(by_type)
        export_id, attempts = db.execute(
            "SELECT id, attempts FROM aol_actions WHERE action_type = 'DEMO_CRM_EXPORT'"
        ).fetchone()
        events = [
            row[0]
            for row in db.execute(
                "SELECT event FROM aol_execution_logs WHERE action_id = ? ORDER BY id",
                (export_id,),
            )
        ]
        messages = dict(
            db.execute(
                "SELECT publish_status, count(*) FROM cam_outreach_messages GROUP BY 1"
            ).fetchall()
        )
        dnc_messages = db.execute(
            "SELECT count(*) FROM cam_outreach_messages m JOIN cam_leads l ON l.id = m.lead_id "
            "WHERE l.consent = 'DNC'"
        ).fetchone()[0]
        reviewers = {row[0] for row in db.execute("SELECT reviewer FROM cam_outreach_messages")}
    assert revision is not None
    assert set(statuses) == {"SUCCESS"}, statuses
    assert {"POST_SOCIAL", "CAMPAIGN_TICK", "CAMPAIGN_PUBLISH", "DEMO_CRM_EXPORT"} <= types
    # The campaign: every published message was approved by the reviewer; the rejected one
    # and the do-not-contact lead were never sent anything.
    assert messages == {"PUBLISHED": 6, "REJECTED": 1}, messages
    assert dnc_messages == 0
    assert reviewers == {"demo reviewer"}
    assert events == [
        "CLAIMED",
        "RETRY_SCHEDULED",
        "CLAIMED",
        "RETRY_SCHEDULED",
        "CLAIMED",
        "DEAD_LETTERED",
        "REPLAYED",
        "CLAIMED",
        "SUCCEEDED",
    ]
    assert attempts == 1  # the replay's fresh budget

    # Proof-mode artifacts on disk: one per successful side effect (a tick has none).
    artifacts = Counter(p.parent.name for p in (folder / "artifacts").rglob("*") if p.is_file())
    assert artifacts == {
        "post_social": by_type["POST_SOCIAL"],
        "campaign_publish": by_type["CAMPAIGN_PUBLISH"],
        "demo_crm_export": 1,
    }
    assert by_type["CAMPAIGN_PUBLISH"] == 6
    assert list((folder / "crm-inbox").glob("report-*.json"))

    # Its worker and beat are gone.
    assert gone(child_pids(output))
    assert celery_processes_in(folder) == []


def test_demo_refuses_to_wipe_a_folder_it_did_not_make(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    done = subprocess.run(
        [str(AICMO), "demo", "--dir", str(tmp_path)],
        env=fresh_machine_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "was not made by `aicmo demo`" in done.stderr
    assert (tmp_path / "precious.txt").read_text() == "keep me"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupting_the_demo_stops_its_worker_and_beat(tmp_path: Path, sig: int) -> None:
    folder = tmp_path / "demo"
    out_path = tmp_path / "out.txt"
    with out_path.open("w") as out:
        demo = subprocess.Popen(
            [str(AICMO), "demo", "--dir", str(folder)],
            env=fresh_machine_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )
    try:
        wait_for(
            lambda: "✓ start a Celery worker and beat" in out_path.read_text(),
            60,
            interval=0.1,
            message="the demo's worker and beat",
        )
        pids = child_pids(out_path.read_text())
        assert not gone(pids)
        demo.send_signal(sig)
        code = demo.wait(timeout=30)
    finally:
        if demo.poll() is None:
            demo.kill()
    output = out_path.read_text()
    assert code == 130, output
    assert "demo interrupted; its worker and beat are stopped" in output
    assert gone(pids), output
    assert celery_processes_in(folder) == []
