"""The dispatcher's pipelined Redis path must push exactly what ``send_task`` would."""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis

from aicmo.orchestration.dispatch import Dispatch, get_dispatcher
from tests.conftest import Book

pytestmark = pytest.mark.usefixtures("clean")

VOLATILE_HEADERS = {"id", "root_id", "origin", "eta"}
VOLATILE_PROPERTIES = {"correlation_id", "delivery_tag"}


def pop(client: redis.Redis, queue: str) -> dict[str, Any]:
    raw = client.rpop(queue)
    assert raw is not None
    envelope: dict[str, Any] = json.loads(raw)
    return envelope


@pytest.mark.parametrize("countdown", [0.0, 5.0])
def test_pipelined_envelope_equals_send_task_envelope(
    celery_app: Any, redis_client: redis.Redis, countdown: float
) -> None:
    dispatcher = get_dispatcher()
    item = Dispatch(4242, "T_ISOLATED_EFFECT", countdown)
    dispatcher._publish_each([item])  # type: ignore[attr-defined]
    slow = pop(redis_client, "isolated")
    dispatcher.publish([item])
    fast = pop(redis_client, "isolated")
    assert dispatcher.fast_path  # type: ignore[attr-defined]
    assert set(fast) == set(slow)
    assert fast["body"] == slow["body"]
    for name in ("content-type", "content-encoding"):
        assert fast[name] == slow[name]
    strip = lambda d, keys: {k: v for k, v in d.items() if k not in keys}  # noqa: E731
    assert strip(fast["headers"], VOLATILE_HEADERS) == strip(slow["headers"], VOLATILE_HEADERS)
    assert strip(fast["properties"], VOLATILE_PROPERTIES) == strip(
        slow["properties"], VOLATILE_PROPERTIES
    )
    assert (fast["headers"]["eta"] is None) == (slow["headers"]["eta"] is None) == (not countdown)


def test_pipelined_messages_run_on_a_real_worker(
    book: Book, shared_worker: Any, celery_app: Any
) -> None:
    handles = [celery_app.tasks["aol.T_EFFECT"].delay(tag=f"fast{n}") for n in range(20)]
    book.wait_all([h.action_id for h in handles], "SUCCESS", timeout=30)
    assert len(book.effects("fast")) == 20
