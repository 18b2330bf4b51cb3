"""Nothing stranded on the campaign side, against the real PostgreSQL: a pause longer than the
retention, a resume racing a halted publish, a message that can never be built, and the census
(``aicmo.cam.reconcile``) that finds and repairs what nothing else would move.

Publishes run in this process through the real Executor; nothing reaches the broker.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import delete, update

from aicmo.cam import campaigns, keys, reconcile, review
from aicmo.cam.models import OrchestratorRun, OutreachMessage, RunStatus
from aicmo.cam.orchestrator import take_lease, tick
from aicmo.cam.publishing import remaining_today
from aicmo.db import get_engine, session_factory, utcnow
from aicmo.orchestration.executor import Executor, OutcomeKind
from aicmo.orchestration.models import AOLAction
from aicmo.orchestration.purge import purge_finished
from tests.support import campaigns as support
from tests.support.recording import RecordingDispatcher

pytestmark = pytest.mark.usefixtures("clean", "celery_app")


@pytest.fixture(autouse=True)
def no_broker() -> Iterator[RecordingDispatcher]:
    with support.recording_dispatcher() as recorder:
        yield recorder


def run(action_id: int, executor: Executor | None = None) -> Any:
    return (executor or Executor()).run(action_id, keys.PUBLISH)


def approved_and_queued(url: str, n: int, **overrides: Any) -> tuple[int, list[int]]:
    """A campaign with ``n`` messages approved and QUEUED; returns their publish actions."""
    cid = support.create(url, n_leads=n, **overrides)
    with session_factory(url)() as s, s.begin():
        tick(s, cid, generator=None)
    ids = [m.id for m in support.messages(url, cid)]
    with session_factory(url)() as s, s.begin():
        results = review.approve_many(s, ids, "ada")
    return cid, [r.publish_action_id for r in results if r.publish_action_id is not None]


def publish_everything_waiting(url: str) -> list[OutcomeKind]:
    outcomes = []
    for action in support.actions(url, keys.PUBLISH):
        if action.status in ("READY", "RETRY"):
            outcomes.append(run(action.id).kind)
    return outcomes


def room(url: str, campaign_id: int) -> int:
    with session_factory(url)() as s:
        return remaining_today(s, campaigns.get_campaign(s, campaign_id), utcnow())


def census(url: str) -> list[reconcile.Stranded]:
    with session_factory(url)() as s:
        return reconcile.census(s)


# -- item 2: a pause longer than the retention ----------------------------------------------


def test_a_campaign_paused_past_the_retention_sends_its_messages_after_resume(
    database_url: str,
) -> None:
    cid, actions = approved_and_queued(database_url, 2, daily_send_limit=2)
    with session_factory(database_url)() as s, s.begin():
        campaigns.pause(s, cid)
    assert [run(a).kind for a in actions] == [OutcomeKind.FAILED] * 2  # CampaignHalted
    # The pause outlives the retention: the FAILED publish actions are purged.
    assert purge_finished(timedelta(0), now=utcnow() + timedelta(seconds=1)).actions == 2
    with session_factory(database_url)() as s, s.begin():
        campaigns.activate(s, cid)
    assert publish_everything_waiting(database_url) == [OutcomeKind.SUCCEEDED] * 2
    assert support.statuses(database_url, cid) == Counter({"PUBLISHED": 2})
    assert census(database_url) == []


def test_a_queued_message_whose_publish_action_is_gone_is_queued_again_by_the_next_tick(
    database_url: str,
) -> None:
    cid, actions = approved_and_queued(database_url, 3, daily_send_limit=3)
    # However it happened (a purge, an operator's DELETE), the message holds daily room.
    with get_engine(database_url).begin() as conn:
        conn.execute(delete(AOLAction).where(AOLAction.id == actions[0]))
    assert room(database_url, cid) == 0
    [stranded] = census(database_url)
    assert (stranded.kind, stranded.action_status) == (reconcile.STRANDED_MESSAGE, "MISSING")
    with session_factory(database_url)() as s, s.begin():
        tick(s, cid, generator=None)
    assert publish_everything_waiting(database_url) == [OutcomeKind.SUCCEEDED] * 3
    assert support.statuses(database_url, cid) == Counter({"PUBLISHED": 3})
    assert census(database_url) == []


def test_resume_queues_again_a_message_left_queued_whose_publish_action_was_purged(
    database_url: str,
) -> None:
    # The state an older release left behind: QUEUED, its halted publish FAILED then purged.
    cid, [action_id] = approved_and_queued(database_url, 1, daily_send_limit=1)
    with session_factory(database_url)() as s, s.begin():
        campaigns.pause(s, cid)
    with get_engine(database_url).begin() as conn:
        conn.execute(delete(AOLAction).where(AOLAction.id == action_id))
    assert room(database_url, cid) == 0  # held by a message nothing would send
    with session_factory(database_url)() as s, s.begin():
        campaigns.resume(s, cid)
    assert publish_everything_waiting(database_url) == [OutcomeKind.SUCCEEDED]
    assert support.statuses(database_url, cid) == Counter({"PUBLISHED": 1})
    assert census(database_url) == []


# -- item 3: resume racing a publish that is recording CampaignHalted --------------------------


def test_resume_racing_a_publish_recording_campaign_halted_still_sends_the_message(
    database_url: str,
) -> None:
    cid, [action_id] = approved_and_queued(database_url, 1)
    with session_factory(database_url)() as s, s.begin():
        campaigns.set_kill_switch(s, cid, True)

    # The interleaving: the publish has decided "halted" and is about to record FAILED when
    # the resume commits. Its recording is held until then.
    executor = Executor()
    recording, resumed = threading.Event(), threading.Event()
    record_failure = executor.store.fail

    def held_fail(*args: Any, **kwargs: Any) -> bool:
        recording.set()
        assert resumed.wait(30)
        return record_failure(*args, **kwargs)

    executor.store.fail = held_fail  # type: ignore[method-assign]
    publish = support.Thread(run, action_id, executor)
    publish.start()
    assert recording.wait(30)
    with session_factory(database_url)() as s, s.begin():
        campaigns.resume(s, cid)
    resumed.set()
    assert publish.join_result().kind is OutcomeKind.FAILED

    assert publish_everything_waiting(database_url) == [OutcomeKind.SUCCEEDED]
    assert support.statuses(database_url, cid) == Counter({"PUBLISHED": 1})
    assert census(database_url) == []


# -- item 11: a message that can never be built ----------------------------------------------


def test_a_message_that_can_never_be_built_is_failed_at_once_and_frees_its_room(
    database_url: str,
) -> None:
    cid, [action_id] = approved_and_queued(database_url, 1, daily_send_limit=1)
    # A subject with a line break (from a lead captured before names were cleaned).
    with get_engine(database_url).begin() as conn:
        conn.execute(
            update(OutreachMessage)
            .where(OutreachMessage.campaign_id == cid)
            .values(subject="Hello Ada\r\nBcc: everyone@example.com")
        )
    assert room(database_url, cid) == 0
    outcome = run(action_id)
    assert outcome.kind is OutcomeKind.FAILED, outcome.error  # permanent: no retry
    assert outcome.error is not None and "line break" in outcome.error
    [message] = support.messages(database_url, cid)
    assert message.publish_status == "FAILED" and message.error is not None
    assert room(database_url, cid) == 1  # released at once, not after hours of retries
    assert census(database_url) == []


def test_a_lead_captured_with_a_newline_in_its_name_is_published(database_url: str) -> None:
    cid = support.create(database_url, n_leads=0, requires_approval=False)
    with session_factory(database_url)() as s, s.begin():
        from aicmo.cam import leads

        leads.capture(s, cid, "crm", [{"email": "ada@x.io", "first_name": "Ada\r\nBcc: x@y.io"}])
        tick(s, cid, generator=None)
    assert publish_everything_waiting(database_url) == [OutcomeKind.SUCCEEDED]
    [message] = support.messages(database_url, cid)
    assert message.subject == "Hello Ada Bcc: x@y.io"


# -- the census and its repairs --------------------------------------------------------------


def test_the_census_finds_every_stranded_campaign_item_and_repair_clears_them(
    database_url: str,
) -> None:
    cid, (gone, failed, halted, live) = approved_and_queued(database_url, 4)
    with get_engine(database_url).begin() as conn:
        conn.execute(delete(AOLAction).where(AOLAction.id == gone))
        conn.execute(
            update(AOLAction)
            .where(AOLAction.id == failed)
            .values(status="DLQ", last_error="SmtpTransient: 451 busy")
        )
        conn.execute(
            update(AOLAction)
            .where(AOLAction.id == halted)
            .values(status="FAILED", last_error="CampaignHalted: campaign was paused")
        )
    # Two tick leases held by no live run: one expired, one whose tick action ended.
    engine = get_engine(database_url)
    other = support.create(database_url, n_leads=0)
    expired = take_lease(engine, cid, utcnow() - timedelta(hours=1), 60)
    ended = take_lease(engine, other, utcnow(), 600, action_id=failed)
    assert expired is not None and ended is not None
    held = take_lease(engine, support.create(database_url, n_leads=0), utcnow(), 600)
    assert held is not None  # a live lease (a tick called directly, still running)

    found = census(database_url)
    assert {(i.kind, i.subject_id) for i in found} == {
        *((reconcile.STRANDED_MESSAGE, m.id) for m in support.messages(database_url, cid)[:3]),
        (reconcile.ORPHAN_LEASE, expired.run_id),
        (reconcile.ORPHAN_LEASE, ended.run_id),
    }
    assert live not in {i.subject_id for i in found}
    with session_factory(database_url)() as s, s.begin():
        done = reconcile.repair(s, found)
    said = {(r.item.kind, r.item.subject_id): r.done for r in done}
    messages = [(reconcile.STRANDED_MESSAGE, m.id) for m in support.messages(database_url, cid)]
    assert said[messages[0]] == "handed back to APPROVED for re-queueing; queued again"
    assert said[messages[1]] == "marked FAILED (its publish gave up)"
    assert said[messages[2]] == "handed back to APPROVED for re-queueing; queued again"
    leases = [(reconcile.ORPHAN_LEASE, lease.run_id) for lease in (expired, ended)]
    assert said[leases[0]] == said[leases[1]] == "lease released"
    assert census(database_url) == []
    with session_factory(database_url)() as s, s.begin():
        assert reconcile.repair(s, found) == []  # a second repair finds nothing to do
    statuses = [m.publish_status for m in support.messages(database_url, cid)]
    assert statuses == ["QUEUED", "FAILED", "QUEUED", "QUEUED"]
    assert publish_everything_waiting(database_url) == [OutcomeKind.SUCCEEDED] * 3
    assert support.count(database_url, OrchestratorRun, status=RunStatus.RUNNING) == 1


def test_a_tick_takes_over_a_lease_whose_tick_action_ended_but_never_a_live_ticks_lease(
    database_url: str,
) -> None:
    cid = support.create(database_url, n_leads=3, requires_approval=False)
    holder = support.enqueue_tick(database_url, cid)
    engine = get_engine(database_url)
    with engine.begin() as conn:  # as if a worker had claimed it
        conn.execute(update(AOLAction).where(AOLAction.id == holder).values(status="RUNNING"))
    lease = take_lease(engine, cid, utcnow(), 600, action_id=holder)
    assert lease is not None
    with session_factory(database_url)() as s, s.begin():
        assert tick(s, cid, generator=None).outcome == "skipped"  # a live tick holds it
    with engine.begin() as conn:  # that tick's action failed and its lease stayed behind
        conn.execute(update(AOLAction).where(AOLAction.id == holder).values(status="FAILED"))
    with session_factory(database_url)() as s, s.begin():
        taken = tick(s, cid, generator=None)
    assert (taken.outcome, taken.takeovers, taken.messages_drafted) == ("done", 1, 3)


def test_aicmo_doctor_lists_the_campaign_census_and_repairs_it(database_url: str) -> None:
    """The campaign checks are part of `aicmo doctor`: a QUEUED message whose publish was
    purged and a tick lease no live run holds are listed, and `--repair` clears both."""
    import json

    from click.testing import CliRunner

    from aicmo.cli import main

    cid, (gone, _live) = approved_and_queued(database_url, 2)
    with get_engine(database_url).begin() as conn:
        conn.execute(delete(AOLAction).where(AOLAction.id == gone))
    orphan = take_lease(get_engine(database_url), cid, utcnow() - timedelta(hours=1), 60)
    assert orphan is not None
    stranded_message = support.messages(database_url, cid)[0].id

    def doctor(*args: str) -> tuple[int, dict[str, Any]]:
        result = CliRunner().invoke(
            main, ["doctor", "-c", "stranded_message", "-c", "orphan_campaign_lease", *args]
        )
        return result.exit_code, json.loads(result.stdout)

    code, report = doctor("--json")
    assert code == 1, report
    assert {(f["check"], f["subject"]) for f in report["findings"]} == {
        ("stranded_message", f"message {stranded_message}"),
        ("orphan_campaign_lease", f"tick lease {orphan.run_id}"),
    }
    code, repaired = doctor("--repair", "--json")
    assert (code, repaired["stranded"]) == (0, 0), repaired
    assert len(repaired["repaired"]) == 2
    assert support.messages(database_url, cid)[0].publish_status == "QUEUED"  # queued again
