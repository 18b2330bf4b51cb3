"""What task messages wait in a Redis queue, read the way a worker would read them."""

from __future__ import annotations

import base64
import json

import redis


def message_ids(client: redis.Redis, queue: str) -> list[int]:
    """The action ids of the task messages in ``queue``: one per ``aol.<TYPE>`` message, all
    of a batch message's (``aol.<TYPE>.batch``, whose one argument is the list of ids)."""
    ids: list[int] = []
    for raw in client.lrange(queue, 0, -1):
        envelope = json.loads(raw)
        body = envelope["body"]
        if envelope["properties"].get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args = json.loads(body)[0]
        ids.extend(args[0] if isinstance(args[0], list) else [args[0]])
    return ids
