"""The embedded default's file transport: the fast publish writes exactly the message
``send_task`` would, and taking messages keeps kombu's order across consumers."""

from __future__ import annotations

import json
import time
from pathlib import Path
from queue import Empty
from typing import Any

import pytest
from celery import Celery

import tasks  # noqa: F401 - installs the atomic filesystem transport
from aicmo.config import Settings
from aicmo.orchestration.dispatch import Dispatch
from tasks.config import celery_config
from tasks.dispatcher import CeleryDispatcher

VOLATILE_HEADERS = {"id", "root_id", "origin", "eta"}
VOLATILE_PROPERTIES = {"correlation_id", "delivery_tag"}


def take(folder: Path) -> dict[str, Any]:
    (found,) = [p for p in folder.iterdir() if p.name.endswith(".aol.msg")]
    envelope: dict[str, Any] = json.loads(found.read_bytes())
    found.unlink()
    return envelope


@pytest.mark.parametrize("countdown", [0.0, 5.0])
def test_file_envelope_equals_send_task_envelope(tmp_path: Path, countdown: float) -> None:
    settings = Settings(broker_url="filesystem://", broker_dir=tmp_path / "broker")
    app = Celery("file-dispatch-test")
    app.config_from_object(celery_config(settings))
    dispatcher = CeleryDispatcher(app)
    queue = tmp_path / "broker" / "queue"
    item = Dispatch(4242, "T_NOOP", countdown)

    dispatcher._publish_each([item])
    slow = take(queue)
    dispatcher.publish([item])
    fast = take(queue)

    assert dispatcher.fast_path
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


def test_file_transport_takes_oldest_first_and_skips_what_another_consumer_took(
    tmp_path: Path,
) -> None:
    settings = Settings(broker_url="filesystem://", broker_dir=tmp_path / "broker")
    app = Celery("file-take-test")
    app.config_from_object(celery_config(settings))
    with app.connection_for_write() as connection:
        first, second = connection.channel(), connection.channel()
        for n in range(4):
            first._put("aol", {"n": n})
            time.sleep(0.003)  # names order by millisecond, then at random
        first._put("other", {"n": "other"})
        assert first._get("aol") == {"n": 0}  # lists the folder, keeps the rest
        assert second._get("aol") == {"n": 1}  # its own listing: 1, 2, 3
        assert first._get("aol") == {"n": 2}  # 1 is gone: skipped
        time.sleep(0.003)
        first._put("aol", {"n": 4})
        assert first._get("aol") == {"n": 3}
        assert first._get("aol") == {"n": 4}  # listed again once used up
        with pytest.raises(Empty):
            second._get("aol")  # 2, 3 taken by the first: nothing left
        assert second._get("other") == {"n": "other"}
    assert sorted(p.name for p in (tmp_path / "broker" / "queue").iterdir()) == []
