"""The embedded path (a SQLite file made by the migrations) under the two things SQLite punishes:
a transaction left open across a network call (it locks the whole database), and a tick
lease left behind by a failed attempt (SQLite cannot free it while the attempt's transaction
holds the write lock).

Providers are local servers speaking their protocol: SMTP (aiosmtpd) that answers DATA slowly,
and an OpenAI-style HTTP endpoint that answers slowly. The busy timeout is a setting, set far
below the providers' delays here: the same proof as a 40 s handler beside a 30 s timeout.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text, update

from aicmo.cam import campaigns, keys, leads, orchestrator
from aicmo.cam.models import OrchestratorRun
from aicmo.cam.schedule import enqueue_ticks
from aicmo.config import reload_settings
from aicmo.db import get_engine, session_factory, utcnow
from aicmo.migrate import upgrade
from aicmo.orchestration.executor import Executor, OutcomeKind
from aicmo.orchestration.models import AOLAction
from aicmo.orchestration.queue import ActionQueue
from tests.support import campaigns as support
from tests.support.actions import EFFECTS_DDL
from tests.support.fake_http import FakeHTTPServer
from tests.support.fake_smtp import FakeSMTPServer
from tests.support.processes import wait_for

pytestmark = pytest.mark.usefixtures("celery_app")

BUSY_TIMEOUT = 2.0
PROVIDER_DELAY = 6.0  # far beyond the busy timeout


@pytest.fixture
def smtp() -> Iterator[FakeSMTPServer]:
    server = FakeSMTPServer("unused", data_delay_seconds=PROVIDER_DELAY).start()
    yield server
    server.stop()


@pytest.fixture
def llm() -> Iterator[FakeHTTPServer]:
    server = FakeHTTPServer().start()
    yield server
    server.stop()


@pytest.fixture
def embedded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, smtp: FakeSMTPServer, llm: FakeHTTPServer
) -> Iterator[Engine]:
    """A fresh SQLite file, live mode towards the local providers, a short busy timeout."""
    for name, value in {
        "AICMO_SQLITE_BUSY_TIMEOUT_SECONDS": str(BUSY_TIMEOUT),
        "AICMO_PROOF_MODE": "false",
        "AICMO_SMTP_HOST": "127.0.0.1",
        "AICMO_SMTP_PORT": str(smtp.port),
        "AICMO_SMTP_SECURITY": "none",
        # Live campaign mail carries signed unsubscribe links (aicmo.cam.outcomes.tokens).
        "AICMO_EMAIL_TOKEN_KEYS": "test-token-key",
        "AICMO_LLM_BASE_URL": f"{llm.url}/v1",
        "AICMO_LLM_API_KEY": "sk-test-embedded",
        "AICMO_LLM_REQUESTS_PER_MINUTE": "6000",
    }.items():
        monkeypatch.setenv(name, value)
    reload_settings()
    url = f"sqlite:///{tmp_path / 'embedded.db'}"
    upgrade(url)
    engine = get_engine(url)
    with engine.begin() as conn:
        conn.execute(text(EFFECTS_DDL.format(id_type="INTEGER PRIMARY KEY")))
    with support.recording_dispatcher():
        yield engine
    engine.dispose()
    monkeypatch.undo()
    reload_settings()


def live_campaign(url: str, n_leads: int = 1, **overrides: Any) -> int:
    with session_factory(url)() as s, s.begin():
        cid = campaigns.create_campaign(
            s, support.spec(mode="live", requires_approval=False, **overrides)
        ).id
        leads.capture(s, cid, "test", support.lead_dicts(n_leads))
        campaigns.activate(s, cid)
    return cid


def enqueue_tick(url: str, campaign_id: int) -> int:
    with session_factory(url)() as s, s.begin():
        return enqueue_ticks(s, [campaign_id], support.unique_slot())[0].action_id


# -- item 10: no transaction open across I/O ------------------------------------------------


def test_slow_smtp_and_llm_calls_never_lock_out_other_writers_on_sqlite(
    embedded: Engine, smtp: FakeSMTPServer, llm: FakeHTTPServer
) -> None:
    url = str(embedded.url)
    executor = Executor(engine=embedded)
    mailing = live_campaign(url, steps=[{"subject": "Hi", "body": "Hello", "wait_minutes": 0}])
    tick_id = enqueue_tick(url, mailing)
    assert executor.run(tick_id, keys.TICK).kind is OutcomeKind.SUCCEEDED
    [publish] = support.actions(url, keys.PUBLISH)
    drafting = live_campaign(
        url,
        steps=[{"subject": "Hi", "body": f"@@slow:{PROVIDER_DELAY:g}@@ Hello", "wait_minutes": 0}],
    )
    slow_tick = enqueue_tick(url, drafting)

    sending = support.Thread(executor.run, publish.id, keys.PUBLISH)
    thinking = support.Thread(Executor(engine=embedded).run, slow_tick, keys.TICK)
    sending.start()
    thinking.start()
    wait_for(smtp.recorder.data_started.is_set, 20, message="the SMTP send to start")
    wait_for(lambda: llm.seen("/v1/chat/completions"), 20, message="the LLM call to start")

    # Meanwhile other writers enqueue and claim, on their own connections, and run to SUCCESS.
    others = Executor(engine=embedded)
    outcomes = []
    while sending.is_alive() or thinking.is_alive():
        with session_factory(url)() as s, s.begin():
            action_id = ActionQueue.enqueue_action(s, "T_EFFECT", {"tag": "beside"}).id
        outcomes.append(others.run(action_id, "T_EFFECT").kind)
    assert len(outcomes) >= 3 and set(outcomes) == {OutcomeKind.SUCCEEDED}

    sent = sending.join_result()
    assert sent.kind is OutcomeKind.SUCCEEDED, sent.error
    drafted = thinking.join_result()
    assert drafted.kind is OutcomeKind.SUCCEEDED, drafted.error
    assert drafted.result is not None and drafted.result["llm_drafts"] == 1
    assert len(smtp.received) == 1
    assert [m.publish_status for m in support.messages(url, mailing)] == ["PUBLISHED"]


# -- item 6: a failed tick's retry takes over its own lease ----------------------------------


def test_a_failed_ticks_retry_on_sqlite_takes_over_its_own_lease_and_does_the_slots_work(
    embedded: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = str(embedded.url)
    executor = Executor(engine=embedded)
    cid = live_campaign(url, n_leads=5, steps=[{"subject": "Hi", "body": "Hey", "wait_minutes": 0}])
    tick_id = enqueue_tick(url, cid)

    real_work = orchestrator._work

    def fails_once(*args: Any, **kwargs: Any) -> Any:
        monkeypatch.setattr(orchestrator, "_work", real_work)
        raise RuntimeError("the database went away mid-tick")

    monkeypatch.setattr(orchestrator, "_work", fails_once)
    first = executor.run(tick_id, keys.TICK)
    assert first.kind is OutcomeKind.RETRY
    # SQLite could not free the lease while the failed attempt's transaction was open.
    assert support.count(url, OrchestratorRun, status="RUNNING") == 1

    with embedded.begin() as conn:  # the retry is due now rather than after its backoff
        conn.execute(
            update(AOLAction).where(AOLAction.id == tick_id).values(not_before_utc=utcnow())
        )
    retry = executor.run(tick_id, keys.TICK)
    assert retry.kind is OutcomeKind.SUCCEEDED, retry.error
    assert retry.result is not None
    assert (retry.result["outcome"], retry.result["takeovers"]) == ("done", 1)
    assert retry.result["messages_drafted"] == retry.result["messages_queued"] == 5
    assert support.count(url, OrchestratorRun, status="RUNNING") == 0
