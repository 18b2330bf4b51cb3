"""Helpers for the campaign tests: build campaigns and leads, run and read actions."""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from aicmo.cam import campaigns, leads
from aicmo.cam.models import Lead, OutreachMessage
from aicmo.cam.schedule import enqueue_ticks
from aicmo.db import get_engine, session_factory
from aicmo.orchestration.dispatch import get_dispatcher, install_dispatcher
from aicmo.orchestration.models import AOLAction
from tests.support.recording import RecordingDispatcher

_slots = itertools.count(1)


def spec(**overrides: Any) -> dict[str, Any]:
    """An email campaign: 3 steps, no wait between them, approval required."""
    base: dict[str, Any] = {
        "name": "Launch",
        "timezone": "Europe/Paris",
        "tick_every_minutes": 15,
        "batch_size": 50,
        "daily_send_limit": 100,
        "channels": ["email"],
        "requires_approval": True,
        "steps": [
            {
                "subject": "Hello {first_name|there}",
                "body": "Hi {first_name}, step 1 from {campaign}.",
                "wait_minutes": 0,
            },
            {
                "subject": "Following up",
                "body": "Step 2 for {company|your team}.",
                "wait_minutes": 0,
            },
            {"subject": "Last note", "body": "Step 3, {first_name}.", "wait_minutes": 0},
        ],
    }
    base.update(overrides)
    return base


def lead_dicts(n: int, prefix: str = "lead", **extra: Any) -> list[dict[str, Any]]:
    return [
        {
            "email": f"{prefix}{i}@example{i % 3}.com",
            "first_name": f"Ada{i}",
            "company": f"Co{i}",
            **extra,
        }
        for i in range(n)
    ]


def create(url: str, n_leads: int = 20, activate: bool = True, **overrides: Any) -> int:
    """A campaign with ``n_leads`` leads (lead i: lead{i}@example{i%3}.com), committed."""
    with session_factory(url)() as s, s.begin():
        campaign = campaigns.create_campaign(s, spec(**overrides))
        if n_leads:
            leads.capture(s, campaign.id, "test", lead_dicts(n_leads))
        if activate:
            campaigns.activate(s, campaign.id)
        return campaign.id


def lead_ids(url: str, campaign_id: int) -> list[int]:
    with session_factory(url)() as s:
        return list(
            s.scalars(select(Lead.id).where(Lead.campaign_id == campaign_id).order_by(Lead.id))
        )


def messages(url: str, campaign_id: int) -> list[OutreachMessage]:
    with session_factory(url)() as s:
        return list(
            s.scalars(
                select(OutreachMessage)
                .where(OutreachMessage.campaign_id == campaign_id)
                .order_by(OutreachMessage.id)
            )
        )


def statuses(url: str, campaign_id: int) -> Counter[str]:
    return Counter(m.publish_status for m in messages(url, campaign_id))


def actions(url: str, action_type: str, prefix: str = "") -> list[AOLAction]:
    with session_factory(url)() as s:
        query = select(AOLAction).where(AOLAction.action_type == action_type)
        if prefix:
            query = query.where(AOLAction.idempotency_key.startswith(prefix))
        return list(s.scalars(query.order_by(AOLAction.id)))


def count(url: str, model: Any, **where: Any) -> int:
    with session_factory(url)() as s:
        query = select(func.count()).select_from(model)
        for name, value in where.items():
            query = query.where(getattr(model, name) == value)
        return int(s.scalar(query) or 0)


def unique_slot() -> datetime:
    """A distinct slot per call (a tick key per call), in the past so it is due now."""
    return datetime(2020, 1, 1, tzinfo=UTC) + timedelta(minutes=next(_slots) + os.getpid())


def enqueue_tick(url: str, campaign_id: int) -> int:
    with session_factory(url)() as s, s.begin():
        return enqueue_ticks(s, [campaign_id], unique_slot())[0].action_id


@contextmanager
def recording_dispatcher() -> Iterator[RecordingDispatcher]:
    """Nothing reaches the broker (so the shared worker never runs these actions)."""
    previous = get_dispatcher()
    recorder = RecordingDispatcher()
    install_dispatcher(recorder)
    try:
        yield recorder
    finally:
        install_dispatcher(previous)


@contextmanager
def lead_row_locked(url: str, lead_id: int) -> Iterator[Session]:
    """Hold ``SELECT .. FOR UPDATE`` on a lead: a tick claiming it waits until release."""
    with session_factory(url)() as s:
        s.begin()
        s.execute(text("SELECT id FROM cam_leads WHERE id = :id FOR UPDATE"), {"id": lead_id})
        try:
            yield s
        finally:
            s.rollback()


def wait_for_lock_waiter(url: str, timeout: float = 20.0, waiters: int = 1) -> None:
    """Until ``waiters`` other connections of this database wait on a row lock."""
    deadline = time.monotonic() + timeout
    with get_engine(url).connect() as conn:
        while time.monotonic() < deadline:
            waiting = conn.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
                )
            ).scalar()
            conn.rollback()
            if waiting and waiting >= waiters:
                return
            time.sleep(0.02)
    raise AssertionError("no connection started waiting on the lock")


class Thread(threading.Thread):
    """A thread that keeps its target's result or exception."""

    def __init__(self, target: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(daemon=True)
        self._call = (target, args, kwargs)
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        target, args, kwargs = self._call
        try:
            self.result = target(*args, **kwargs)
        except BaseException as exc:  # reported by join_result
            self.error = exc

    def join_result(self, timeout: float = 30.0) -> Any:
        self.join(timeout)
        assert not self.is_alive(), "thread did not finish"
        if self.error is not None:
            raise self.error
        return self.result
