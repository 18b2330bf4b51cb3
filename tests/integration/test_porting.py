"""Code written against the original AICMO keeps working (issue 12), on SQLite and PostgreSQL.

Each test is written the way the original's own code and tests were: an ``AOLAction`` built by
hand, ``AOLExecutionLog`` rows with ``level``/``message``/``ts_utc``, the daemon's direct
``handle_post_social(session, action_id, payload, proof_mode)`` call, the campaign handlers and
``multichannel_batch`` with its original parameters. The engine's deliberate rules stay: a
payload is validated, a naive datetime is refused, an outcome is recorded once.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from aicmo.cam import campaigns, leads
from aicmo.cam.auto import multichannel_batch
from aicmo.cam.models import Lead, OutreachMessage
from aicmo.db import NaiveDatetimeError, get_engine, session_factory
from aicmo.migrate import upgrade
from aicmo.orchestration.errors import (
    IdempotencyConflict,
    InvalidPayload,
    InvalidSchedule,
    InvalidTransition,
    RealRunUnconfigured,
    UnknownActionType,
)
from aicmo.orchestration.executor import Executor
from aicmo.orchestration.models import AOLAction, AOLExecutionLog
from aicmo.orchestration.retry import RetryPolicy
from tests.conftest import ROOT
from tests.support import campaigns as support
from tests.support.recording import RecordingDispatcher

pytestmark = pytest.mark.usefixtures("celery_app")

ORIGINAL_POST = {
    "social_platform": "LinkedIn Page",
    "content": "We launched!",
    "audience": {"segment": "founders", "region": "EU"},
}


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        found = f"sqlite:///{tmp_path / 'original.db'}"
        upgrade(found)
        return found
    request.getfixturevalue("clean")
    database_url: str = request.getfixturevalue("database_url")
    return database_url


@pytest.fixture(autouse=True)
def recorder() -> Iterator[RecordingDispatcher]:
    """Messages are recorded, not sent: no worker runs these actions behind the test's back."""
    with support.recording_dispatcher() as found:
        yield found


@pytest.fixture
def session(url: str) -> Iterator[Session]:
    with session_factory(url)() as s:
        yield s


def hand_built(session: Session, key: str, payload: Any, status: str = "READY") -> AOLAction:
    """What the original's code did: only its own columns, the payload as JSON text."""
    action = AOLAction(
        idempotency_key=key,
        action_type="POST_SOCIAL",
        payload_json=payload if isinstance(payload, str) else json.dumps(payload),
        status=status,
    )
    session.add(action)
    session.commit()
    return action


def logs(session: Session, action_id: int) -> list[AOLExecutionLog]:
    return list(
        session.scalars(
            select(AOLExecutionLog)
            .where(AOLExecutionLog.action_id == action_id)
            .order_by(AOLExecutionLog.ts_utc, AOLExecutionLog.id)
        )
    )


# -- AOLAction and AOLExecutionLog by hand -------------------------------------------------


def test_an_action_built_with_only_the_original_columns_inserts_and_reads_back(
    url: str, session: Session, recorder: RecordingDispatcher
) -> None:
    before = datetime.now(UTC)
    action = AOLAction(
        idempotency_key="orig-1",
        action_type="POST_SOCIAL",
        payload_json=json.dumps(ORIGINAL_POST),
        status="READY",
    )
    assert action.payload_json == ORIGINAL_POST  # the object, at once
    session.add(action)
    session.flush()
    assert recorder.sent == []  # nothing leaves before the commit
    session.commit()
    assert recorder.ids == [action.id]

    with session_factory(url)() as fresh:
        row = fresh.get(AOLAction, action.id)
        assert row is not None
        # Stored in its checked form: the platform as it is configured and routed.
        assert row.payload_json == {**ORIGINAL_POST, "social_platform": "linkedin_page"}
        assert row.max_attempts == 5  # POST_SOCIAL's retry policy
        assert row.attempts == 0
        for when in (row.not_before_utc, row.created_at_utc, row.updated_at_utc):
            assert when.tzinfo is not None
            assert before - timedelta(seconds=5) <= when <= datetime.now(UTC)
        assert row.queued_at_utc is not None  # its message went out: the sweeper leaves it


def test_an_insert_in_the_original_style_gets_the_defaults_and_the_object(
    url: str, session: Session
) -> None:
    session.execute(
        insert(AOLAction).values(
            idempotency_key="orig-core",
            action_type="NOT_REGISTERED_HERE",
            payload_json='{"campaign_id": 5}',
            status="PENDING",
        )
    )
    session.commit()
    row = session.scalars(select(AOLAction).where(AOLAction.idempotency_key == "orig-core")).one()
    session.refresh(row)
    assert row.payload_json == {"campaign_id": 5}
    # A type this process does not know gets the default policy (the sweeper sets it aside).
    assert row.max_attempts == RetryPolicy.from_settings().max_attempts
    assert row.not_before_utc.tzinfo is not None


def test_a_hand_built_row_is_checked_as_an_enqueue_is(url: str, session: Session) -> None:
    bad: list[tuple[dict[str, Any], type[Exception], str]] = [
        ({"action_type": "ESCALATE_OVERDUE_TASKS"}, UnknownActionType, "unknown action type"),
        ({"payload_json": '{"content": "no platform"}'}, InvalidPayload, "social_platform"),
        (
            {"not_before_utc": datetime(2026, 1, 1, 12, 0)},  # the original's utcnow()
            InvalidSchedule,
            "naive datetime",
        ),
    ]
    for index, (change, error, message) in enumerate(bad):
        values: dict[str, Any] = {
            "idempotency_key": f"bad-{index}",
            "action_type": "POST_SOCIAL",
            "payload_json": json.dumps(ORIGINAL_POST),
            "status": "READY",
            **change,
        }
        session.add(AOLAction(**values))
        with pytest.raises(error, match=message):
            session.commit()
        session.rollback()
    with pytest.raises(ValueError, match="not valid JSON"):
        AOLAction(idempotency_key="bad-json", action_type="POST_SOCIAL", payload_json="{oops")
    with pytest.raises(ValueError, match="must encode a JSON object"):
        AOLAction(idempotency_key="bad-list", action_type="POST_SOCIAL", payload_json="[1, 2]")
    assert session.scalar(select(func.count()).select_from(AOLAction)) == 0  # no row at all


def test_a_pending_hand_built_row_is_sent_by_the_sweeper_when_due(
    url: str, session: Session, recorder: RecordingDispatcher
) -> None:
    from aicmo.orchestration.sweeper import Sweeper

    action = hand_built(session, "orig-pending", ORIGINAL_POST, status="PENDING")
    assert recorder.sent == []
    Sweeper(dispatcher=recorder, engine=get_engine(url)).sweep()
    assert recorder.ids == [action.id]
    session.refresh(action)
    assert action.status == "READY"


def test_execution_log_rows_in_the_original_style(url: str, session: Session) -> None:
    action = hand_built(session, "orig-log", ORIGINAL_POST)
    now = datetime.now(UTC)
    session.add_all(
        [
            AOLExecutionLog(action_id=action.id, level="INFO", message="second", ts_utc=now),
            AOLExecutionLog(
                action_id=action.id,
                level="warning",
                message="first",
                ts_utc=now - timedelta(seconds=1),
            ),
            AOLExecutionLog(action_id=action.id, level="ERROR", message="third"),
        ]
    )
    session.commit()
    rows = logs(session, action.id)
    assert [(r.level, r.message) for r in rows] == [
        ("WARNING", "first"),
        ("INFO", "second"),
        ("ERROR", "third"),
    ]
    assert all(r.event == "NOTE" and r.ts_utc == r.created_at_utc for r in rows)
    errors = session.scalars(
        select(AOLExecutionLog.message).where(AOLExecutionLog.level == "ERROR")
    ).all()
    assert errors == ["third"]
    with pytest.raises(ValueError, match="level must be one of"):
        AOLExecutionLog(action_id=action.id, level="LOUD", message="x")
    with pytest.raises(NaiveDatetimeError, match=r"ts_utc .* naive"):
        AOLExecutionLog(action_id=action.id, level="INFO", ts_utc=datetime(2026, 1, 1))


# -- the daemon's direct calls -------------------------------------------------------------


def test_handle_post_social_in_proof_mode_records_success_with_the_artifact(
    url: str, session: Session
) -> None:
    from aicmo.orchestration.adapters.social_adapter import handle_post_social

    # As the original daemon called it: the row's payload plus the action's key.
    action = hand_built(session, "orig-proof", ORIGINAL_POST)
    payload = {**json.loads(json.dumps(ORIGINAL_POST)), "idempotency_key": "orig-proof"}
    result = handle_post_social(session, action.id, payload, proof_mode=True)

    assert action.status == "SUCCESS"  # the caller's copy reads the outcome
    assert action.attempts == 1 and action.finished_at_utc is not None
    succeeded = [r for r in logs(session, action.id) if r.event == "SUCCEEDED"]
    assert len(succeeded) == 1 and succeeded[0].level == "INFO"
    artifact = Path(succeeded[0].artifact_ref or "")
    document = json.loads(artifact.read_text())
    assert succeeded[0].artifact_sha256 == hashlib.sha256(artifact.read_bytes()).hexdigest()
    assert document["platform"] == "linkedin_page"
    assert json.loads(document["audience"]) == ORIGINAL_POST["audience"]
    assert result["artifacts"][0]["sha256"] == succeeded[0].artifact_sha256
    assert action.result_json is not None and action.result_json["platform"] == "linkedin_page"


def test_handle_post_social_in_live_mode_records_failed_and_raises(
    url: str, session: Session
) -> None:
    from aicmo.orchestration.adapters.social_adapter import handle_post_social

    # Scheduled for later, enqueued the engine's way: a direct call runs it now anyway.
    from aicmo.orchestration.queue import ActionQueue

    action = ActionQueue.enqueue_action(
        session,
        "POST_SOCIAL",
        {"social_platform": "x", "content": "live"},
        "orig-live",
        datetime.now(UTC) + timedelta(hours=1),
    )
    assert action.status == "PENDING"
    with pytest.raises(RealRunUnconfigured, match="no social poster is configured for 'x'"):
        handle_post_social(session, action.id, {"social_platform": "x", "content": "live"})
    assert action.status == "FAILED" and action.attempts == 1
    assert action.last_error is not None and "RealRunUnconfigured" in action.last_error
    failed = [r for r in logs(session, action.id) if r.event == "FAILED"]
    assert len(failed) == 1 and failed[0].level == "ERROR"
    assert "no social poster" in failed[0].message
    # Recorded once: a second call finds nothing to run.
    with pytest.raises(InvalidTransition, match="is FAILED"):
        handle_post_social(session, action.id, {"social_platform": "x", "content": "live"})


def test_a_payload_missing_required_keys_records_failed_and_raises_value_error(
    url: str, session: Session
) -> None:
    from aicmo.orchestration.adapters.social_adapter import handle_post_social

    action = hand_built(session, "orig-missing", ORIGINAL_POST)
    with pytest.raises(ValueError, match="social_platform"):
        handle_post_social(session, action.id, {"content": "no platform"}, proof_mode=True)
    assert action.status == "FAILED"
    assert action.last_error == "invalid payload: social_platform: Field required"


def test_a_direct_call_runs_the_rows_payload_only(url: str, session: Session) -> None:
    from aicmo.orchestration.adapters.social_adapter import handle_post_social

    action = hand_built(session, "orig-other", ORIGINAL_POST)
    with pytest.raises(IdempotencyConflict, match="a different payload"):
        handle_post_social(
            session, action.id, {**ORIGINAL_POST, "content": "something else"}, proof_mode=True
        )
    assert action.status == "READY" and action.attempts == 0


def test_a_direct_call_goes_through_the_workers_fencing(url: str, session: Session) -> None:
    from aicmo.orchestration.adapters.social_adapter import handle_post_social

    action = hand_built(session, "orig-fenced", ORIGINAL_POST)
    # A worker holds the claim: the direct call must neither run it nor touch its row.
    worker = Executor(worker="test-worker", engine=get_engine(url))
    claimed = worker.store.claim(
        action.id, "POST_SOCIAL", "test-worker/1", lease_seconds=300, skew_seconds=0
    )
    assert claimed is not None
    with pytest.raises(InvalidTransition, match="is RUNNING"):
        handle_post_social(session, action.id, ORIGINAL_POST, proof_mode=True)
    assert (action.status, action.claimed_by, action.attempts) == ("RUNNING", "test-worker/1", 1)
    if worker.store.direct is not None:
        worker.store.direct.close()


def test_a_direct_call_leaves_a_paused_type_alone(url: str, session: Session) -> None:
    from aicmo.orchestration import manager
    from aicmo.orchestration.adapters.social_adapter import handle_post_social

    action = hand_built(session, "orig-paused", ORIGINAL_POST, status="PENDING")
    manager.pause(session, "POST_SOCIAL", reason="porting test")
    session.commit()
    with pytest.raises(InvalidTransition, match="pause:POST_SOCIAL is on"):
        handle_post_social(session, action.id, ORIGINAL_POST, proof_mode=True)
    assert (action.status, action.attempts) == ("PENDING", 0)


def test_the_campaign_handlers_take_the_original_payloads(url: str, session: Session) -> None:
    from aicmo.cam.clock import local_date
    from aicmo.orchestration.adapters.campaign_adapter import (
        handle_campaign_capture_leads,
        handle_campaign_fetch_metrics,
        handle_campaign_publish,
        handle_campaign_tick,
    )
    from aicmo.orchestration.queue import ActionQueue

    cid = support.create(url, n_leads=2, requires_approval=False)
    tick = ActionQueue.enqueue_action(session, "CAMPAIGN_TICK", {"campaign_id": cid}, "t-1")
    result = handle_campaign_tick(
        session,
        tick.id,
        {"campaign_id": cid, "batch_size": 25, "mode": "live", "idempotency_key": "t-1"},
        proof_mode=True,
    )
    assert (result["outcome"], result["messages_queued"]) == ("done", 2)
    assert tick.status == "SUCCESS"

    publish = session.scalars(
        select(AOLAction).where(AOLAction.action_type == "CAMPAIGN_PUBLISH").order_by(AOLAction.id)
    ).first()
    assert publish is not None
    message_id = publish.payload_json["message_id"]
    original = {
        "outreach_message_id": message_id,
        "platform": "email",
        "content": "(the approved message's body is what goes out)",
        "audience": {"segment": "founders"},
        "idempotency_key": publish.idempotency_key,
    }
    sent = handle_campaign_publish(session, publish.id, original, proof_mode=True)
    assert sent["message_id"] == message_id and sent["artifacts"]
    assert publish.status == "SUCCESS"
    message = session.get(OutreachMessage, message_id, populate_existing=True)
    assert message is not None and message.publish_status == "PUBLISHED"

    # The campaign's own day (Europe/Paris), not UTC's: they differ an hour each night.
    day = local_date(datetime.now(UTC), "Europe/Paris").isoformat()
    metrics = ActionQueue.enqueue_action(
        session, "CAMPAIGN_FETCH_METRICS", {"campaign_id": cid, "date": day}, "m-1"
    )
    counted = handle_campaign_fetch_metrics(
        session, metrics.id, {"campaign_id": cid, "date": day, "idempotency_key": "m-1"}, True
    )
    assert counted["messages_published"] == 1 and metrics.status == "SUCCESS"

    people = [{"email": "grace@example.org", "first_name": "Grace"}]
    capture = ActionQueue.enqueue_action(
        session,
        "CAMPAIGN_CAPTURE_LEADS",
        {"campaign_id": cid, "source": "webhook", "event_id": "e-1", "leads": people},
        "l-1",
    )
    captured = handle_campaign_capture_leads(
        session,
        capture.id,
        {
            "campaign_id": cid,
            "source": "webhook",
            "event_id": "e-1",
            "leads": people,
            "idempotency_key": "l-1",
        },
        proof_mode=True,
    )
    assert captured["created"] == 1 and capture.status == "SUCCESS"


# -- multichannel_batch --------------------------------------------------------------------


def test_multichannel_batch_dry_run_writes_and_queues_nothing(
    url: str, session: Session, recorder: RecordingDispatcher
) -> None:
    # No approval needed: a real batch would queue publishes at once.
    cid = support.create(
        url,
        n_leads=0,
        requires_approval=False,
        channels=["email", "linkedin"],
        steps=[{"subject": "Hi", "body": "Hello {first_name}", "wait_minutes": 0}],
    )
    people = [
        {**lead, "linkedin_url": f"https://www.linkedin.com/in/ada{i}/"}
        for i, lead in enumerate(support.lead_dicts(4))
    ]
    with session_factory(url)() as s, s.begin():
        leads.capture(s, cid, "test", [*people, {"phone": "+33612345678"}])

    def snapshot() -> tuple[int, int, list[tuple[int, int]]]:
        with session_factory(url)() as s:
            return (
                s.scalar(select(func.count()).select_from(OutreachMessage)) or 0,
                s.scalar(select(func.count()).select_from(AOLAction)) or 0,
                [(lead.id, lead.step) for lead in s.scalars(select(Lead).order_by(Lead.id))],
            )

    before = snapshot()
    # The original's parameters, positionally: db, campaign_id, email_sender, batch_size,
    # from_email, from_name, dry_run.
    planned = multichannel_batch(session, cid, None, 10, "me@example.com", "Me", True)
    session.commit()
    assert snapshot() == before and recorder.sent == []
    assert planned == {
        "processed": 5,
        "multichannel_sent": 0,
        "email_sent": 0,
        "linkedin_sent": 0,
        "form_sent": 0,
        "failed": 1,
        "dry_run": True,
        "drafted": 4,
        "awaiting_review": 0,
        "by_channel": {"email": 2, "linkedin": 2},
        "outcome": "done",
        "reason": None,
    }

    done = multichannel_batch(db=session, campaign_id=cid, batch_size=10, dry_run=False)
    session.commit()
    assert (done["processed"], done["failed"], done["drafted"]) == (5, 1, 4)
    assert (done["multichannel_sent"], done["email_sent"], done["linkedin_sent"]) == (4, 2, 2)
    assert len(recorder.sent) == 4  # the publishes, sent after the commit


def test_multichannel_batch_on_a_paused_campaign_does_nothing(url: str, session: Session) -> None:
    cid = support.create(url, n_leads=2, requires_approval=False)
    with session_factory(url)() as s, s.begin():
        campaigns.pause(s, cid)
    for dry_run in (True, False):
        result = multichannel_batch(session, cid, dry_run=dry_run)
        session.commit()
        assert (result["outcome"], result["reason"]) == ("stopped", "campaign is PAUSED")
        assert result["multichannel_sent"] == 0


# -- packaging habits ----------------------------------------------------------------------


def test_alembic_upgrade_head_from_the_repository_root(tmp_path: Path) -> None:
    database = tmp_path / "bare.db"
    env = {**os.environ, "AICMO_DATABASE_URL": f"sqlite:///{database}"}
    alembic = Path(sys.executable).parent / "alembic"
    done = subprocess.run(
        [str(alembic), "upgrade", "head"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    with get_engine(f"sqlite:///{database}").connect() as conn:
        heads = conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalars().all()
    from aicmo.migrate import current_heads

    assert set(heads) == current_heads()


def test_the_orchestration_package_has_a_version() -> None:
    import aicmo
    import aicmo.orchestration

    assert aicmo.orchestration.__version__ == aicmo.__version__


# -- make test on a fresh machine ----------------------------------------------------------


def _ensure_services(tmp_path: Path, path: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tests.support.ensure_services"],
        cwd=ROOT,
        env={
            **os.environ,
            "PATH": path,
            # Nothing listens on port 1: both "missing".
            "AICMO_TEST_PG_ADMIN": "postgresql://postgres@127.0.0.1:1/postgres",
            "AICMO_TEST_REDIS": "redis://127.0.0.1:1",
            **env,
        },
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_make_test_says_how_to_start_missing_services_without_docker(tmp_path: Path) -> None:
    done = _ensure_services(tmp_path, str(tmp_path))  # a PATH with no docker on it
    assert done.returncode == 2
    assert (
        "PostgreSQL is not reachable at postgresql://postgres@127.0.0.1:1/postgres" in done.stderr
    )
    assert "Redis is not reachable at redis://127.0.0.1:1" in done.stderr
    assert "docker compose -f docker-compose.test.yml up -d postgres redis" in done.stderr
    assert "AICMO_TEST_PG_ADMIN=" in done.stderr


def test_make_test_starts_missing_services_with_docker_when_it_exists(tmp_path: Path) -> None:
    calls = tmp_path / "calls"
    docker = tmp_path / "bin" / "docker"
    docker.parent.mkdir()
    docker.write_text(f'#!/bin/sh\necho "$@" >> {calls}\nexit 0\n')
    docker.chmod(0o755)
    done = _ensure_services(
        tmp_path, f"{docker.parent}:/usr/bin:/bin", AICMO_TEST_SERVICES_WAIT="1"
    )
    started = calls.read_text().splitlines()
    assert started[0] == "compose version"
    assert started[1] == f"compose -f {ROOT / 'docker-compose.test.yml'} up -d postgres redis"
    assert done.returncode == 2 and "still waiting after 1" in done.stderr  # nothing came up


def test_make_test_installs_before_it_tests() -> None:
    plan = subprocess.run(
        ["make", "-n", "-B", "test", "VENV=/nonexistent-venv"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.splitlines()
    create = plan.index("python3 -m venv /nonexistent-venv")
    install = next(i for i, line in enumerate(plan) if "pip install --quiet -e" in line)
    check = next(i for i, line in enumerate(plan) if "tests.support.ensure_services" in line)
    run = next(i for i, line in enumerate(plan) if line.startswith("/nonexistent-venv/bin/pytest"))
    assert create < install < check < run
