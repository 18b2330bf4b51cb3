"""The ``aicmo`` command against the real PostgreSQL, Redis, worker and beat.

Most commands run in-process through click's CliRunner (same code path as the console
script); the health checks that need other settings run the installed script as a process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from aicmo.cli import main
from aicmo.orchestration.models import AOLAction
from tests.conftest import ROOT, Book
from tests.support.processes import CeleryProcess, beat, wait_for

pytestmark = pytest.mark.usefixtures("clean", "celery_app")

POST = {"social_platform": "linkedin", "content": "Launch day"}
AICMO = Path(sys.executable).with_name("aicmo")


def run(*args: str, input: str | None = None) -> Result:
    # A wide terminal, so table cells are not wrapped in the middle of what a test looks for.
    runner = CliRunner(env={"COLUMNS": "200"})
    return runner.invoke(main, list(args), input=input, catch_exceptions=False)


def ok_json(*args: str) -> Any:
    result = run(*args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def count_rows(session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(AOLAction)) or 0)


def all_commands(group: click.Group, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for name, command in group.commands.items():
        yield (*prefix, name)
        if isinstance(command, click.Group):
            yield from all_commands(command, (*prefix, name))


# -- help and the console script ------------------------------------------------------------


def test_every_command_has_help() -> None:
    commands = list(all_commands(main))
    expected = {
        ("db", "upgrade"),
        ("enqueue",),
        ("actions", "ls"),
        ("actions", "show"),
        ("actions", "replay"),
        ("actions", "cancel"),
        ("stats",),
        ("pause",),
        ("resume",),
        ("health",),
        ("demo",),
    }
    assert expected <= set(commands)
    for command in commands:
        result = run(*command, "--help")
        assert result.exit_code == 0, (command, result.output)
        assert f"Usage: main {' '.join(command)}" in result.output
        assert len(result.output.splitlines()) > 3


def test_console_script_is_installed_and_answers() -> None:
    done = subprocess.run([str(AICMO), "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "Usage: aicmo" in done.stdout
    assert "demo" in done.stdout


def test_unknown_command_and_option_are_usage_errors() -> None:
    assert run("nope").exit_code == 2
    result = run("actions", "ls", "--status", "DONE")
    assert result.exit_code == 2
    assert "DONE" in result.output


# -- db ------------------------------------------------------------------------------------


def test_db_upgrade_is_idempotent_and_current_reports_head() -> None:
    result = run("db", "upgrade")
    assert result.exit_code == 0, result.output
    assert "schema at" in result.output
    current = ok_json("db", "current")
    assert current["up_to_date"] is True
    assert current["current"] in current["heads"]


# -- enqueue -------------------------------------------------------------------------------


def test_enqueue_is_idempotent_on_key_and_refuses_a_different_payload(session: Session) -> None:
    first = ok_json("enqueue", "POST_SOCIAL", "--payload", json.dumps(POST), "--key", "cli-1")
    assert first["created"] is True
    assert first["status"] == "READY"
    again = ok_json("enqueue", "post_social", "-p", json.dumps(POST), "-k", "cli-1")
    # The same action (a worker of an earlier test may already be running it).
    assert {k: v for k, v in again.items() if k != "status"} == {
        **{k: v for k, v in first.items() if k != "status"},
        "created": False,
    }
    clash = run("enqueue", "POST_SOCIAL", "-p", json.dumps({**POST, "content": "x"}), "-k", "cli-1")
    assert clash.exit_code == 1
    assert "already used by action" in clash.output
    assert count_rows(session) == 1


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["NOPE", "-p", "{}"], 1, "unknown action type 'NOPE'"),
        (["SEND_EMAIL", "-p", '{"to": "not-an-address"}'], 1, "invalid payload for SEND_EMAIL"),
        (["SEND_EMAIL", "-p", "{bad json"], 2, "not valid JSON"),
        (["SEND_EMAIL", "-p", "[1, 2]"], 1, "expected a JSON object"),
        (["POST_SOCIAL", "-p", json.dumps(POST), "--at", "2030-01-01T09:00"], 2, "no timezone"),
        (["POST_SOCIAL", "-p", json.dumps(POST), "--at", "next tuesday"], 2, "not an ISO 8601"),
        (["POST_SOCIAL", "-p", "@/no/such/file.json"], 2, "cannot read"),
        (["POST_SOCIAL"], 2, "Missing option '--payload'"),
    ],
)
def test_enqueue_bad_input_is_a_clear_error_and_writes_nothing(
    session: Session, args: list[str], code: int, message: str
) -> None:
    result = run("enqueue", *args)
    assert result.exit_code == code, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert count_rows(session) == 0


def test_enqueue_reads_the_payload_from_a_file_or_stdin(tmp_path: Path) -> None:
    path = tmp_path / "post.json"
    path.write_text(json.dumps(POST))
    from_file = ok_json("enqueue", "POST_SOCIAL", "-p", f"@{path}", "-k", "file-1")
    from_stdin = run(
        "enqueue", "POST_SOCIAL", "-p", "-", "-k", "stdin-1", "--json", input=path.read_text()
    )
    assert from_stdin.exit_code == 0, from_stdin.output
    assert from_file["created"] and json.loads(from_stdin.stdout)["created"]


def test_enqueue_at_a_later_time_waits_pending_in_the_database() -> None:
    later = ok_json(
        "enqueue", "POST_SOCIAL", "-p", json.dumps(POST), "--at", "2099-01-01T09:00:00+02:00"
    )
    assert later["status"] == "PENDING"
    shown = ok_json("actions", "show", str(later["id"]))
    assert shown["not_before_utc"] == "2099-01-01T07:00:00+00:00"


# -- actions ls / show / cancel -------------------------------------------------------------


def test_actions_ls_filters_by_status_and_type_newest_first() -> None:
    ids = [
        ok_json("enqueue", "POST_SOCIAL", "-p", json.dumps(POST), "--at", "2099-01-01T00:00:00Z")[
            "id"
        ]
        for _ in range(3)
    ]
    listed = ok_json("actions", "ls", "--status", "pending", "--type", "POST_SOCIAL")
    assert [a["id"] for a in listed] == sorted(ids, reverse=True)
    assert ok_json("actions", "ls", "--status", "SUCCESS") == []
    assert len(ok_json("actions", "ls", "-n", "2")) == 2
    table = run("actions", "ls")
    assert table.exit_code == 0
    assert "PENDING" in table.output and "3 action(s)" in table.output
    misspelt = run("actions", "ls", "--type", "POST_SOCIALS")
    assert misspelt.exit_code == 1
    assert "unknown action type 'POST_SOCIALS'" in misspelt.output


def test_show_and_cancel_report_missing_and_invalid_transitions(book: Book) -> None:
    missing = run("actions", "show", "999999")
    assert missing.exit_code == 1
    assert "action 999999 does not exist" in missing.output
    assert run("actions", "show", "abc").exit_code == 2

    later = ok_json(
        "enqueue", "POST_SOCIAL", "-p", json.dumps(POST), "--at", "2099-01-01T00:00:00Z"
    )
    cancelled = ok_json("actions", "cancel", str(later["id"]))
    assert cancelled == {"cancelled": [later["id"]]}
    assert book.action(later["id"]).status == "CANCELLED"
    again = run("actions", "cancel", str(later["id"]))
    assert again.exit_code == 1
    assert "is CANCELLED; only PENDING/READY/RETRY" in again.output
    shown = ok_json("actions", "show", str(later["id"]))
    assert [entry["event"] for entry in shown["logs"]] == ["CANCELLED"]
    assert shown["logs"][0]["worker"].startswith("cli:")


# -- with a worker: replay, pause/resume, stats ----------------------------------------------


def open_gate(database_url: str, tag: str) -> None:
    from aicmo.db import get_engine

    with get_engine(database_url).begin() as conn:
        conn.execute(
            text(
                "INSERT INTO test_effects (tag, action_id, attempt, worker) "
                "VALUES (:t, 0, 0, 'test')"
            ),
            {"t": f"open:{tag}"},
        )


def test_replay_a_dead_letter_to_success_by_id_and_by_dlq(
    shared_worker: CeleryProcess, book: Book, database_url: str
) -> None:
    first = ok_json("enqueue", "T_GATED", "-p", '{"tag": "cli-gate-1"}')["id"]
    second = ok_json("enqueue", "T_GATED", "-p", '{"tag": "cli-gate-2"}')["id"]
    book.wait_all([first, second], "DLQ", timeout=30)
    assert ok_json("stats")["dlq_size"] == 2

    # Nothing changed: a replay fails the same way and ends in the DLQ again.
    assert ok_json("actions", "replay", str(first)) == {"replayed": [first]}
    book.wait_status(first, "DLQ", timeout=30)

    open_gate(database_url, "cli-gate-1")
    open_gate(database_url, "cli-gate-2")
    result = run("actions", "replay", str(first))
    assert result.exit_code == 0, result.output
    assert f"replayed 1 action(s): {first}" in result.output
    book.wait_status(first, "SUCCESS", timeout=30)
    assert ok_json("actions", "replay", "--dlq", "--type", "t_gated") == {"replayed": [second]}
    book.wait_status(second, "SUCCESS", timeout=30)
    assert ok_json("actions", "replay", "--dlq") == {"replayed": []}

    events = [e["event"] for e in ok_json("actions", "show", str(first))["logs"]]
    assert events.count("DEAD_LETTERED") == 2 and events.count("REPLAYED") == 2
    assert events[-1] == "SUCCEEDED"

    not_replayable = run("actions", "replay", str(first))
    assert not_replayable.exit_code == 1
    assert "is SUCCESS; only DLQ/FAILED actions can be replayed" in not_replayable.output
    assert run("actions", "replay").exit_code == 2
    assert run("actions", "replay", str(first), "--dlq").exit_code == 2
    assert run("actions", "replay", str(first), "--type", "T_GATED").exit_code == 2


def test_pause_holds_actions_and_resume_sends_them_at_once(
    shared_worker: CeleryProcess, book: Book
) -> None:
    assert ok_json("pause", "--type", "T_EFFECT", "--reason", "maintenance") == {
        "paused": "T_EFFECT",
        "reason": "maintenance",
    }
    held = ok_json("enqueue", "T_EFFECT", "-p", '{"tag": "cli-paused"}')["id"]
    other = ok_json("enqueue", "T_NOOP", "-p", "{}")["id"]
    book.wait_status(other, "SUCCESS", timeout=20)  # the worker runs, just not T_EFFECT
    time.sleep(0.5)
    action = book.action(held)
    assert (action.status, action.attempts) == ("READY", 0)
    stats = ok_json("stats")
    assert stats["paused"] == ["T_EFFECT"]
    assert stats["by_type"]["T_EFFECT"]["READY"] == 1

    resumed = ok_json("resume", "--type", "T_EFFECT")
    assert resumed["resumed"] == "T_EFFECT"
    assert resumed["held"] == 1 and resumed["sent"] == 1
    # Sent at once: no sweeper runs here, and the resend grace is far longer than this wait.
    book.wait_status(held, "SUCCESS", timeout=5)
    assert ok_json("stats")["paused"] == []
    assert run("pause", "--type", "NOPE").exit_code == 1


def test_stats_counts_ages_and_prometheus_text(shared_worker: CeleryProcess, book: Book) -> None:
    ok_json("pause", "--type", "T_NOOP")
    waiting = ok_json("enqueue", "T_NOOP", "-p", "{}")["id"]
    done = ok_json("enqueue", "T_EFFECT", "-p", '{"tag": "cli-stats"}')["id"]
    dead = ok_json("enqueue", "T_ALWAYS_FAIL", "-p", "{}")["id"]
    for _ in range(2):
        ok_json("enqueue", "POST_SOCIAL", "-p", json.dumps(POST), "--at", "2099-01-01T00:00:00Z")
    book.wait_status(done, "SUCCESS", timeout=20)
    book.wait_status(dead, "DLQ", timeout=30)
    time.sleep(1.0)  # let the held T_NOOP age
    assert book.action(waiting).status == "READY"

    stats = ok_json("stats")
    assert stats["total"] == 5
    assert stats["dlq_size"] == 1
    assert stats["by_status"]["PENDING"] == 2 and stats["by_status"]["SUCCESS"] == 1
    assert stats["by_type"]["T_ALWAYS_FAIL"]["DLQ"] == 1
    assert stats["by_type"]["SEND_EMAIL"]["SUCCESS"] == 0  # every registered type is listed
    assert stats["oldest_ready_age_seconds"] >= 1.0
    assert set(stats["oldest_ready_age_by_type"]) == {"T_NOOP"}

    result = run("stats", "--prometheus")
    assert result.exit_code == 0
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(result.output)
        for sample in family.samples
    }
    assert samples[("aicmo_dlq_size", ())] == 1
    assert samples[("aicmo_actions", (("status", "DLQ"), ("type", "T_ALWAYS_FAIL")))] == 1
    assert samples[("aicmo_queue_depth", (("status", "PENDING"), ("type", "POST_SOCIAL")))] == 2
    assert samples[("aicmo_queue_depth", (("status", "READY"), ("type", "T_NOOP")))] == 1
    assert samples[("aicmo_oldest_ready_age_seconds", (("type", "T_NOOP"),))] >= 1.0
    assert samples[("aicmo_oldest_ready_age_seconds", (("type", "T_EFFECT"),))] == 0
    assert samples[("aicmo_paused", (("scope", "T_NOOP"),))] == 1
    assert samples[("aicmo_paused", (("scope", "all"),))] == 0
    assert samples[("aicmo_last_sweep_age_seconds", ())] == -1  # no beat ran in this test

    table = run("stats")
    assert table.exit_code == 0
    assert "DLQ size: 1" in table.output and "paused: T_NOOP" in table.output
    assert run("stats", "--json", "--prometheus").exit_code == 2
    ok_json("resume", "--type", "T_NOOP")
    book.wait_status(waiting, "SUCCESS", timeout=10)


# -- doctor ---------------------------------------------------------------------------------


def strand_one_of_each(database_url: str) -> dict[str, int]:
    """What no process will move here (no beat runs in this test, and no worker reads the
    isolated queue): one row per doctor check."""
    from aicmo.db import get_engine

    rows = {
        "unknown_type": ("T_GONE", "READY", "NULL", "NULL"),
        "lost_message": ("T_ISOLATED_EFFECT", "READY", "now() - interval '1 hour'", "NULL"),
        "expired_lease": ("T_ISOLATED_EFFECT", "RUNNING", "NULL", "now() - interval '1 hour'"),
        "overdue_pending": ("T_ISOLATED_EFFECT", "PENDING", "NULL", "NULL"),
    }
    ids = {}
    with get_engine(database_url).begin() as conn:
        for check, (action_type, status, queued_at, lease) in rows.items():
            ids[check] = conn.execute(
                text(
                    "INSERT INTO aol_actions (idempotency_key, action_type, payload_json,"
                    " status, not_before_utc, attempts, max_attempts, created_at_utc,"
                    " updated_at_utc, queued_at_utc, lease_expires_at_utc, claimed_by)"
                    f' VALUES (:key, :type, \'{{"tag": "s"}}\'::jsonb, :status,'
                    " now() - interval '2 hours', 1, 3, now() - interval '2 hours',"
                    f" now() - interval '2 hours', {queued_at}, {lease}, 'gone/1/x')"
                    " RETURNING id"
                ),
                {"key": f"strand-{check}", "type": action_type, "status": status},
            ).scalar_one()
    return ids


def test_doctor_lists_the_stranded_repairs_what_it_safely_can_and_exits_1_until_none(
    database_url: str, book: Book
) -> None:
    ids = strand_one_of_each(database_url)
    result = run("doctor", "--json")
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert report["stranded"] == 4
    assert {(f["check"], f["subject"]) for f in report["findings"]} == {
        (check, f"action {action_id}") for check, action_id in ids.items()
    }
    table = run("doctor")
    assert table.exit_code == 1 and "4 stranded" in table.output and "T_GONE" in table.output
    health = run("health", "-c", "stranded", "--json")
    assert health.exit_code == 1 and "see `aicmo doctor`" in health.output

    repaired = run("doctor", "--repair", "--json")
    assert repaired.exit_code == 1, repaired.output  # the unknown type is the operator's
    after = json.loads(repaired.stdout)
    assert [f["check"] for f in after["findings"]] == ["unknown_type"]
    assert len(after["repaired"]) == 3, after["repaired"]
    assert book.action(ids["expired_lease"]).status == "RETRY"
    assert book.action(ids["overdue_pending"]).status == "READY"
    assert book.action(ids["lost_message"]).queued_at_utc is not None
    assert "LEASE_EXPIRED" in book.events(ids["expired_lease"])

    ok_json("actions", "cancel", str(ids["unknown_type"]))
    clean_run = run("doctor")
    assert clean_run.exit_code == 0 and "0 stranded" in clean_run.output
    assert run("doctor", "--check", "nope").exit_code == 2


# -- health ---------------------------------------------------------------------------------


def aicmo_process(
    *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(AICMO), *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture
def running_beat(shared_worker: CeleryProcess, log_dir: Path) -> Iterator[CeleryProcess]:
    process = beat(log_dir).start()
    yield process
    process.stop()


def test_health_passes_with_worker_and_beat_and_fails_when_beat_stops(
    running_beat: CeleryProcess,
) -> None:
    def swept() -> bool:
        return ok_json("stats")["last_sweep"] is not None

    wait_for(swept, 20, message="a sweep heartbeat")
    report = ok_json("health", "--timeout", "1")
    assert report["healthy"] is True, report
    checks = {c["name"]: c for c in report["checks"]}
    assert set(checks) == {"database", "broker", "beat", "workers", "stranded"}
    assert all(c["ok"] for c in checks.values()), checks
    assert checks["beat"]["last_sweep_age_seconds"] < 5
    assert checks["workers"]["workers"]
    table = run("health", "--timeout", "1")
    assert table.exit_code == 0 and "workers" in table.output

    running_beat.stop()
    time.sleep(1.5)
    stale = aicmo_process(
        "health", "--check", "beat", "--json", env={"AICMO_HEALTH_MAX_SWEEP_AGE_SECONDS": "1"}
    )
    assert stale.returncode == 1, stale.stdout + stale.stderr
    beat_check = json.loads(stale.stdout)["checks"][0]
    assert beat_check["name"] == "beat" and not beat_check["ok"]
    assert "is beat running" in beat_check["detail"]


def test_health_fails_with_exit_1_when_database_or_broker_is_unreachable() -> None:
    down = aicmo_process(
        "health",
        "-c",
        "database",
        "-c",
        "broker",
        "--timeout",
        "1",
        "--json",
        env={
            "AICMO_DATABASE_URL": "postgresql+psycopg://postgres@127.0.0.1:1/none",
            "AICMO_BROKER_URL": "redis://127.0.0.1:1/0",
        },
    )
    assert down.returncode == 1, down.stdout + down.stderr
    report = json.loads(down.stdout)
    assert report["healthy"] is False
    assert [(c["name"], c["ok"]) for c in report["checks"]] == [
        ("database", False),
        ("broker", False),
    ]
    assert "127.0.0.1:1" in report["checks"][1]["detail"]


def test_health_reports_a_missing_schema(tmp_path: Path) -> None:
    result = aicmo_process(
        "health", "-c", "database", env={"AICMO_DATABASE_URL": f"sqlite:///{tmp_path}/empty.db"}
    )
    assert result.returncode == 1
    assert "aicmo db upgrade" in result.stdout
    listing = aicmo_process(
        "actions", "ls", env={"AICMO_DATABASE_URL": f"sqlite:///{tmp_path}/empty.db"}
    )
    assert listing.returncode == 1
    assert "no aicmo schema yet" in listing.stderr and "Traceback" not in listing.stderr


def test_doctor_repairs_on_the_embedded_sqlite_default(tmp_path: Path) -> None:
    """SQLite locks the whole file for a writer: the census must let go before it repairs."""
    import sqlite3

    env = {
        "AICMO_DATABASE_URL": f"sqlite:///{tmp_path}/aicmo.db",
        "AICMO_BROKER_URL": "filesystem://",
        "AICMO_BROKER_DIR": str(tmp_path / "broker"),
    }
    assert aicmo_process("db", "upgrade", env=env).returncode == 0
    with sqlite3.connect(tmp_path / "aicmo.db") as db:
        db.execute(
            "INSERT INTO aol_actions (idempotency_key, action_type, payload_json, status,"
            " not_before_utc, attempts, max_attempts, created_at_utc, updated_at_utc)"
            " VALUES ('late', 'T_NOOP', '{}', 'PENDING', '2026-01-01 00:00:00.000000', 0, 3,"
            " '2026-01-01 00:00:00.000000', '2026-01-01 00:00:00.000000')"
        )
    repaired = aicmo_process("doctor", "--repair", "--json", env=env)
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    report = json.loads(repaired.stdout)
    assert report["found_before_repair"] == 1 and report["stranded"] == 0
    assert report["repaired"] == ["overdue_pending: ran the dispatch step: 1 action(s) sent"]


# -- campaigns, leads and the review gate (through aicmo.cam) -------------------------------

CAMPAIGN = {
    "name": "CLI campaign",
    "steps": [
        {"subject": "Hi {first_name|there}", "body": "Hello {first_name|there}", "wait_minutes": 0}
    ],
}


def test_campaign_leads_and_review_from_the_command_line(
    shared_worker: CeleryProcess, book: Book, tmp_path: Path
) -> None:
    created = ok_json("campaigns", "create", "--spec", json.dumps(CAMPAIGN))
    cid = created["id"]
    assert (created["status"], created["requires_approval"]) == ("DRAFT", True)

    leads_csv = tmp_path / "leads.csv"
    leads_csv.write_text(
        "E-mail,First Name,Company\n"
        "ada@example.com,Ada,Analytical\n"
        "grace@example.com,Grace,\n"
        ",Nobody,Nowhere\n"
    )
    imported = run("leads", "import", str(leads_csv), "--campaign", str(cid), "--json")
    assert imported.exit_code == 1, imported.output  # the invalid row is reported
    report = json.loads(imported.stdout)
    assert (report["rows"], report["created"], report["merged"]) == (3, 2, 0)
    assert report["invalid"][0]["index"] == 2
    assert "email, a phone number or a LinkedIn URL" in report["invalid"][0]["reason"]
    again = run("leads", "import", str(leads_csv), "-c", str(cid))
    assert "0 new lead(s), 2 merged, 1 invalid" in again.output
    assert "line 4:" in again.output

    not_yet = run("campaigns", "pause", str(cid))
    assert not_yet.exit_code == 1
    assert "is DRAFT; it cannot become PAUSED" in not_yet.output
    assert ok_json("campaigns", "activate", str(cid))["status"] == "ACTIVE"
    assert [c["id"] for c in ok_json("campaigns", "ls", "--status", "active")] == [cid]

    tick = ok_json("campaigns", "tick", str(cid))
    assert tick["key"].startswith(f"cam_tick:{cid}:")
    book.wait_status(tick["action_id"], "SUCCESS", timeout=30)
    drafts = ok_json("messages", "ls", "--campaign", str(cid), "--status", "draft")
    assert sorted(d["lead_id"] for d in drafts) == report["lead_ids"]
    assert all(d["step"] == 1 and d["channel"] == "email" for d in drafts)

    approved = ok_json("messages", "approve", str(drafts[0]["id"]), "--reviewer", "qa")
    assert approved[0]["publish_status"] == "QUEUED" and approved[0]["queued"] is True
    book.wait_status(approved[0]["publish_action_id"], "SUCCESS", timeout=30)
    rejected = ok_json("messages", "reject", str(drafts[1]["id"]), "-r", "qa", "--reason", "no")
    assert rejected[0]["publish_status"] == "REJECTED"

    final = {m["id"]: m for m in ok_json("messages", "ls", "-c", str(cid))}
    assert final[drafts[0]["id"]]["publish_status"] == "PUBLISHED"
    assert final[drafts[1]["id"]]["publish_status"] == "REJECTED"
    assert {m["reviewer"] for m in final.values()} == {"qa"}
    assert ok_json("campaigns", "pause", str(cid))["status"] == "PAUSED"

    listing = run("campaigns", "ls")
    assert listing.exit_code == 0 and "CLI campaign" in listing.output
    assert "PUBLISHED" in run("messages", "ls").output


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["campaigns", "create", "--spec", '{"name": "x"}'], 1, "invalid campaign"),
        (["campaigns", "create", "--spec", "[]"], 2, "must be a JSON object"),
        (["campaigns", "activate", "999999"], 1, "999999"),
        (["messages", "approve", "999999"], 1, "999999"),
        (["messages", "ls", "--status", "SENT"], 2, "SENT"),
        (["leads", "import", "/no/such.csv", "-c", "1"], 2, "does not exist"),
    ],
)
def test_campaign_commands_refuse_bad_input(args: list[str], code: int, message: str) -> None:
    result = run(*args)
    assert result.exit_code == code, result.output
    assert message in result.output
    assert "Traceback" not in result.output
