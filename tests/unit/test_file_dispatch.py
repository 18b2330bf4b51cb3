"""The embedded default's fast publish must write exactly the message ``send_task`` would."""

from __future__ import annotations

import json
from pathlib import Path
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
