"""Recipient-aware admission on PostgreSQL: send windows and frequency caps across campaigns,
decided in begin_publish; and the caps under concurrent real worker processes."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select, text, update

from aicmo.cam import admission, leads, publishing, review
from aicmo.cam.models import OutreachMessage
from aicmo.cam.orchestrator import tick
from aicmo.config import reload_settings
from aicmo.db import session_factory
from aicmo.ops.actions import action_dict
from aicmo.orchestration.errors import TransientError
from aicmo.orchestration.models import AOLAction
from tests.conftest import Book
from tests.support import campaigns as support
from tests.support.fake_smtp import FakeSMTPServer
from tests.support.processes import CeleryProcess, wait_for, worker

pytestmark = pytest.mark.usefixtures("clean", "default_caps")

DEFAULT_CAPS = "1/24h,3/7d"  # the shipped defaults (the test suite turns caps off elsewhere)


@pytest.fixture
def default_caps(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("AICMO_CAM_FREQUENCY_CAPS", DEFAULT_CAPS)
    reload_settings()
    yield
    monkeypatch.undo()
    reload_settings()


def approved(url: str, people: list[dict[str, Any]], **overrides: Any) -> list[tuple[int, int]]:
    """A campaign reaching ``people``: its first messages approved and queued (nothing sent to
    the broker). Returns (message id, publish action id) per person."""
    cid = support.create(url, n_leads=0, **overrides)
    with support.recording_dispatcher(), session_factory(url)() as s, s.begin():
        leads.capture(s, cid, "test", people)
        tick(s, cid, generator=None)
        ids = list(
            s.scalars(
                select(OutreachMessage.id)
                .where(OutreachMessage.campaign_id == cid)
                .order_by(OutreachMessage.id)
            )
        )
        results = review.approve_many(s, ids, "ada")
    return [(r.message_id, r.publish_action_id or 0) for r in results]


def begin(url: str, message_id: int, action_id: int, now: datetime | None = None) -> Any:
    with session_factory(url)() as s, s.begin():
        return publishing.begin_publish(
            s, message_id, action_id, now or datetime.now(UTC), proof_mode=True
        )


ADA = {"email": "Ada@Example.com", "first_name": "Ada"}


def test_a_publish_outside_the_send_window_waits_for_the_opening(database_url: str) -> None:
    window = {"start": "09:00", "end": "17:30", "days": ["mon", "tue", "wed", "thu", "fri"]}
    [(mid, aid)] = approved(database_url, [ADA], timezone="Europe/Paris", send_window=window)
    saturday = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
    refused = begin(database_url, mid, aid, saturday)
    assert isinstance(refused, publishing.Refused)
    assert isinstance(refused.error, admission.SendWindowClosed)
    assert refused.error.opening == datetime(2026, 12, 7, 8, 0, tzinfo=UTC)  # Monday 09:00 CET
    assert refused.error.retry_after == (refused.error.opening - saturday).total_seconds()
    # Nothing reserved, nothing counted against the person.
    [message] = support.messages(database_url, _cid(database_url, mid))
    assert message.sending_at_utc is None
    monday = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
    assert isinstance(begin(database_url, mid, aid, monday), publishing.PublishJob)


def _cid(url: str, message_id: int) -> int:
    with session_factory(url)() as s:
        return int(s.get(OutreachMessage, message_id).campaign_id)  # type: ignore[union-attr]


def test_the_window_is_the_leads_own_timezone_when_it_has_one(database_url: str) -> None:
    window = {"start": "09:00", "end": "17:00", "days": ["tue"]}
    tokyo = {**ADA, "timezone": "Asia/Tokyo"}
    paris = {"email": "bob@example.com", "first_name": "Bob"}
    [(tokyo_mid, tokyo_aid), (paris_mid, paris_aid)] = approved(
        database_url, [tokyo, paris], timezone="Europe/Paris", send_window=window
    )
    now = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)  # Tuesday: 10:00 Paris, 18:00 Tokyo
    assert isinstance(begin(database_url, paris_mid, paris_aid, now), publishing.PublishJob)
    refused = begin(database_url, tokyo_mid, tokyo_aid, now)
    assert isinstance(refused, publishing.Refused)
    assert "waiting for send window until 2026-12-08T09:00:00+09:00" in str(refused.error)


def test_the_cap_counts_one_person_across_campaigns(database_url: str) -> None:
    [(first, first_action)] = approved(database_url, [ADA])
    [(second, second_action)] = approved(database_url, [{"email": "ada@example.com"}])
    assert isinstance(begin(database_url, first, first_action), publishing.PublishJob)
    refused = begin(database_url, second, second_action)
    assert isinstance(refused, publishing.Refused)
    assert isinstance(refused.error, admission.FrequencyCapped)
    assert "1 per 24h for email:ada@example.com" in str(refused.error)
    # ~24 h from the first admission, on the database's clock.
    assert 24 * 3600 - 60 < refused.error.retry_after <= 24 * 3600  # type: ignore[operator]


def test_a_released_send_stops_counting(database_url: str) -> None:
    [(first, first_action)] = approved(database_url, [ADA])
    [(second, second_action)] = approved(database_url, [ADA])
    job = begin(database_url, first, first_action)
    assert isinstance(job, publishing.PublishJob)
    with session_factory(database_url)() as s, s.begin():
        publishing.release_publish(
            s, job, first_action, datetime.now(UTC), TransientError("SMTP 451")
        )
    assert isinstance(begin(database_url, second, second_action), publishing.PublishJob)


def test_a_campaign_may_be_stricter_never_looser(database_url: str) -> None:
    bob = {"email": "bob@example.com"}
    [(first, first_action)] = approved(database_url, [bob])
    [(second, second_action)] = approved(
        database_url, [bob], frequency_caps=[{"max": 5, "hours": 1}]
    )
    assert isinstance(begin(database_url, first, first_action), publishing.PublishJob)
    refused = begin(database_url, second, second_action)  # the global 1/24h still holds
    assert isinstance(refused, publishing.Refused)
    assert isinstance(refused.error, admission.FrequencyCapped)


def test_a_cap_that_outlasts_the_messages_validity_fails_it(database_url: str) -> None:
    [(first, first_action)] = approved(database_url, [ADA])
    [(second, second_action)] = approved(database_url, [ADA])
    assert isinstance(begin(database_url, first, first_action), publishing.PublishJob)
    with session_factory(database_url)() as s, s.begin():
        s.execute(
            update(OutreachMessage)
            .where(OutreachMessage.id == second)
            .values(approved_at_utc=datetime.now(UTC) - timedelta(days=13, hours=12))
        )
    refused = begin(database_url, second, second_action)
    assert isinstance(refused, publishing.Refused)
    assert isinstance(refused.error, admission.FrequencyCapExceeded)
    [message] = support.messages(database_url, _cid(database_url, second))
    assert message.publish_status == "FAILED"
    assert "frequency cap" in (message.error or "")


def test_two_admissions_to_one_person_take_turns_on_the_persons_lock(database_url: str) -> None:
    """Deterministic race: both admissions are held after counting (their contact insert
    waits on a table lock the test holds). Without the person's row lock both would have
    counted zero and both been admitted."""
    [(first, first_action)] = approved(database_url, [ADA])
    [(second, second_action)] = approved(database_url, [ADA])
    with session_factory(database_url)() as s, s.begin():  # a person seen before
        s.execute(
            text(
                "INSERT INTO cam_recipients (address, created_at_utc) "
                "VALUES ('email:ada@example.com', now()) ON CONFLICT DO NOTHING"
            )
        )
    with session_factory(database_url)() as blocker:
        blocker.begin()
        blocker.execute(text("LOCK TABLE cam_contacts IN SHARE MODE"))
        one = support.Thread(begin, database_url, first, first_action)
        two = support.Thread(begin, database_url, second, second_action)
        one.start()
        two.start()
        support.wait_for_lock_waiter(database_url, waiters=2)
        blocker.rollback()
    outcomes = [one.join_result(), two.join_result()]
    jobs = [o for o in outcomes if isinstance(o, publishing.PublishJob)]
    refused = [o for o in outcomes if isinstance(o, publishing.Refused)]
    assert len(jobs) == 1 and len(refused) == 1
    assert isinstance(refused[0].error, admission.FrequencyCapped)


# -- real workers ----------------------------------------------------------------------------

PEOPLE = 3
CAMPAIGNS = 4
WORKERS = 3  # processes, 2 pool children each: 6 publishes at once


@pytest.fixture
def slow_smtp() -> Iterator[FakeSMTPServer]:
    server = FakeSMTPServer("unused", data_delay_seconds=1.5).start()
    yield server
    server.stop()


@pytest.fixture
def live_workers(
    celery_app: Any, log_dir: Path, slow_smtp: FakeSMTPServer
) -> Iterator[list[CeleryProcess]]:
    env = {
        "AICMO_PROOF_MODE": "false",
        "AICMO_SMTP_HOST": "127.0.0.1",
        "AICMO_SMTP_PORT": str(slow_smtp.port),
        "AICMO_SMTP_SECURITY": "none",
        "AICMO_CAM_FREQUENCY_CAPS": DEFAULT_CAPS,
        # Live campaign mail carries signed unsubscribe links (aicmo.cam.outcomes.tokens).
        "AICMO_EMAIL_TOKEN_KEYS": "test-token-key",
    }
    started = [worker(log_dir, concurrency=2, env=env, extra=["-Q", "aol"]) for _ in range(WORKERS)]
    for process in started:
        process.start()
    yield started
    for process in started:
        process.stop()


def test_campaigns_publishing_to_one_person_at_once_never_exceed_the_cap(
    database_url: str, book: Book, slow_smtp: FakeSMTPServer, live_workers: list[CeleryProcess]
) -> None:
    people = [{"email": f"person{i}@example.com", "first_name": f"P{i}"} for i in range(PEOPLE)]
    # The cap is also each campaign's own: a session-wide worker another test left on the
    # queue (started before this test's settings) must enforce it too.
    cap = [{"max": 1, "hours": 24}]
    cids = [
        support.create(database_url, n_leads=0, mode="live", frequency_caps=cap)
        for _ in range(CAMPAIGNS)
    ]
    with support.recording_dispatcher(), session_factory(database_url)() as s, s.begin():
        for cid in cids:
            leads.capture(s, cid, "test", people)
            tick(s, cid, generator=None)
    ids = [m.id for cid in cids for m in support.messages(database_url, cid)]
    assert len(ids) == PEOPLE * CAMPAIGNS
    # One commit: every publish reaches the broker at once and the workers race.
    with session_factory(database_url)() as s, s.begin():
        results = review.approve_many(s, ids, "ada")
    action_ids = [r.publish_action_id for r in results if r.publish_action_id]
    assert len(action_ids) == len(ids)

    def settled() -> bool:
        found = [book.action(i) for i in action_ids]
        return all(
            a.status == "SUCCESS"
            or (a.status == "RETRY" and "FrequencyCapped" in (a.last_error or ""))
            for a in found
        )

    wait_for(settled, 90, interval=0.2, message="every publish to send or wait for its cap")
    with session_factory(database_url)() as s:
        actions = list(s.scalars(select(AOLAction).where(AOLAction.id.in_(action_ids))))
        published = Counter(
            s.scalars(
                select(OutreachMessage.lead_id).where(
                    OutreachMessage.id.in_(ids), OutreachMessage.publish_status == "PUBLISHED"
                )
            )
        )
    # One per person (each campaign has its own lead row for a person: count by address).
    assert sum(published.values()) == PEOPLE
    waiting = [a for a in actions if a.status == "RETRY"]
    assert len(waiting) == PEOPLE * (CAMPAIGNS - 1)
    for action in waiting:
        assert action.attempts == 0, "waiting for a cap spent an attempt"
        shown = action_dict(action)["waiting"]
        assert shown is not None and shown.startswith("waiting for frequency cap (1 per 24h")
        assert action.not_before_utc > datetime.now(UTC) + timedelta(hours=23)
    assert len(slow_smtp.received) <= PEOPLE
    recipients = Counter(rcpt for message in slow_smtp.received for rcpt in message.rcpt_tos)
    assert all(count == 1 for count in recipients.values())


def test_a_worker_defers_a_publish_outside_the_window_and_says_until_when(
    database_url: str, book: Book, live_workers: list[CeleryProcess], log_dir: Path
) -> None:
    from click.testing import CliRunner

    from aicmo.cam.admission import WEEKDAYS
    from aicmo.cli import main

    now = datetime.now(UTC)
    tomorrow = (now + timedelta(days=1)).date()
    window = {"start": "09:00", "end": "17:00", "days": [WEEKDAYS[tomorrow.weekday()]]}
    cid = support.create(database_url, n_leads=0, timezone="UTC", send_window=window)
    with support.recording_dispatcher(), session_factory(database_url)() as s, s.begin():
        leads.capture(s, cid, "test", [ADA])
        tick(s, cid, generator=None)
    [message] = support.messages(database_url, cid)
    with session_factory(database_url)() as s, s.begin():
        [result] = review.approve_many(s, [message.id], "ada")
    action_id = result.publish_action_id
    assert action_id is not None
    wait_for(lambda: book.action(action_id).status == "RETRY", 30, message="the deferral")
    action = book.action(action_id)
    opening = datetime.combine(tomorrow, datetime.min.time(), tzinfo=UTC) + timedelta(hours=9)
    # The delay is measured on the worker's clock, added to the database's: equal up to skew.
    assert abs((action.not_before_utc - opening).total_seconds()) < 5
    assert action.attempts == 0  # a deferral spends no attempt
    shown = CliRunner(env={"COLUMNS": "250"}).invoke(main, ["actions", "show", str(action_id)])
    assert shown.exit_code == 0, shown.output
    assert f"waiting for send window until {opening.isoformat()}" in shown.output
    # The console's action page says the same.
    from tests.support.web import Browser, WebServer, make_user

    web = WebServer(log_dir).start()
    try:
        browser = Browser(web)
        browser.login(make_user("viewer"))
        page = browser.get(f"/actions/{action_id}").text
        assert 'id="waiting"' in page
        assert f"waiting for send window until {opening.isoformat()}" in page
    finally:
        web.stop()


@pytest.mark.usefixtures("celery_app")
def test_the_daily_limit_is_a_deferral_that_spends_no_attempt(database_url: str) -> None:
    """A publish over its campaign's daily limit waits for the local midnight like a closed
    send window: RETRY, its attempt given back (waiting can never reach the DLQ), not_before
    at the reset, and ``aicmo actions show`` says what it waits for."""
    from click.testing import CliRunner

    from aicmo.cam import keys
    from aicmo.cam.clock import today_bounds
    from aicmo.cli import main
    from aicmo.ops.actions import show_action
    from aicmo.orchestration.executor import Executor, OutcomeKind
    from aicmo.orchestration.queue import ActionQueue

    people = [ADA, {"email": "bob@example.com", "first_name": "Bob"}]
    [(_, first_action), (second, _)] = approved(
        database_url, people, timezone="Asia/Tokyo", daily_send_limit=1
    )
    with support.recording_dispatcher():
        with session_factory(database_url)() as s, s.begin():  # by hand: past the reservation
            over = ActionQueue.enqueue_action(
                s, keys.PUBLISH, {"message_id": second}, keys.publish_key(second)
            ).id
        assert Executor().run(first_action, keys.PUBLISH).kind is OutcomeKind.SUCCEEDED
        for round_ in (1, 2):  # twice: a second wait spends nothing either
            if round_ == 2:  # due again at once, as if the day had turned without room
                with session_factory(database_url)() as s, s.begin():
                    s.execute(
                        text("UPDATE aol_actions SET not_before_utc = now() WHERE id = :id"),
                        {"id": over},
                    )
            outcome = Executor().run(over, keys.PUBLISH)
            assert outcome.kind is OutcomeKind.RETRY, outcome
    with session_factory(database_url)() as s:
        action = s.get(AOLAction, over)
        assert action is not None
        assert (action.status, action.attempts) == ("RETRY", 0)
    _, reset = today_bounds(datetime.now(UTC), "Asia/Tokyo")
    assert abs((action.not_before_utc - reset).total_seconds()) < 5
    shown = show_action(over)
    assert shown["waiting"] is not None
    assert shown["waiting"].startswith("waiting for the daily limit")
    assert reset.astimezone(ZoneInfo("Asia/Tokyo")).isoformat() in shown["waiting"]
    cli = CliRunner(env={"COLUMNS": "250"}).invoke(main, ["actions", "show", str(over)])
    assert cli.exit_code == 0, cli.output
    assert "waiting for the daily limit" in cli.output
