"""The core's Dispatcher, implemented with the Celery app.

Publishing is the producer's hot path (every enqueue, every sweep), and ``send_task`` costs
about 0.5 ms of CPU per message, mostly in layers a batch does not need. On Redis the
dispatcher builds each message with Celery's own protocol code (``amqp.as_task_v2``) and
kombu's own envelope code, and pushes the batch through one pipeline: about 0.05 ms per
message. Anything unexpected falls back to plain ``send_task``, so a kombu upgrade can make it
slower, never wrong (tests compare the two envelopes field by field).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from celery import Celery
from kombu.exceptions import ChannelError
from kombu.serialization import dumps
from kombu.utils.uuid import uuid

from aicmo.config import get_settings
from aicmo.orchestration.batch_plan import Batch, batch_time_limit, plan
from aicmo.orchestration.dispatch import Dispatch
from aicmo.orchestration.registry import registry
from tasks.config import CANARY_QUEUE, queue

log = logging.getLogger(__name__)


class CeleryDispatcher:
    def __init__(self, app: Celery) -> None:
        self.app = app
        self.fast_path = True

    def publish(self, items: Sequence[Dispatch]) -> None:
        if not items:
            return
        broker = self.app.conf.broker_url
        # Sentinel too: its channel's client is a plain Redis client of the current primary.
        fast = ("redis://", "rediss://", "sentinel://", "filesystem://")
        if self.fast_path and broker.startswith(fast):
            try:
                if broker.startswith("filesystem://"):
                    self._publish_files(items)
                else:
                    self._publish_pipelined(items)
                return
            except (AttributeError, TypeError, KeyError) as exc:
                # kombu changed shape: stay correct on the slow path from now on.
                log.warning("fast publish unavailable (%r); using send_task", exc)
                self.fast_path = False
        self._publish_each(items)

    def _countdown(self, item: Dispatch | Batch) -> float | None:
        countdown = min(item.countdown, get_settings().dispatch_horizon_seconds)
        return countdown if countdown > 0 else None

    def _publish_each(self, items: Sequence[Dispatch]) -> None:
        with self.app.producer_or_acquire() as producer:
            for message in plan(items):
                name, args, options = self._task(message)
                self.app.send_task(
                    name,
                    args=args,
                    queue=registry.get(message.action_type).queue,
                    countdown=self._countdown(message),
                    priority=message.priority,
                    producer=producer,
                    ignore_result=True,
                    **options,
                )

    @staticmethod
    def _task(message: Batch | Dispatch) -> tuple[str, list[Any], dict[str, Any]]:
        """Task name, args and time limits: ``aol.<TYPE>`` for one id, else its batch task."""
        spec = registry.get(message.action_type)
        if isinstance(message, Dispatch) or len(message.ids) == 1:
            action_id = message.action_id if isinstance(message, Dispatch) else message.ids[0]
            limits: dict[str, float | None] = {
                "time_limit": spec.time_limit,
                "soft_time_limit": spec.soft_time_limit,
            }
            return spec.task_name, [action_id], limits
        limits = {"time_limit": batch_time_limit(spec, len(message.ids)), "soft_time_limit": None}
        return spec.batch_task_name, [list(message.ids)], limits

    @staticmethod
    def _argsrepr(message: Batch | Dispatch) -> str:
        if isinstance(message, Dispatch):
            return f"[{message.action_id}]"
        if len(message.ids) == 1:
            return f"[{message.ids[0]}]"
        # Flower shows this: the count and the range of ids, never a payload.
        return f"[{len(message.ids)} ids: {message.ids[0]}..{message.ids[-1]}]"

    def build_envelope(self, channel: Any, item: Dispatch | Batch) -> tuple[str, str]:
        """The Redis list and the JSON envelope kombu would push for this task message."""
        queue_name, envelope = self.envelope(channel, item)
        priority = item.priority or 0
        # The list kombu's own publish would use for this priority (its priority_steps).
        return channel._q_for_pri(queue_name, priority), json.dumps(envelope)

    def envelope(self, channel: Any, item: Dispatch | Batch) -> tuple[str, dict[str, Any]]:
        """The queue and the envelope kombu's virtual channel would store for this message."""
        spec = registry.get(item.action_type)
        name, args, limits = self._task(item)
        task_id = uuid()
        message = self.app.amqp.as_task_v2(
            task_id,
            name,
            args=args,
            kwargs={},
            countdown=self._countdown(item),
            ignore_result=True,
            reply_to=self.app.thread_oid,
            # What saferepr would make of them, without its cost on every message.
            argsrepr=self._argsrepr(item),
            kwargsrepr="{}",
            **limits,
        )
        content_type, content_encoding, body = dumps(message.body, serializer="json")
        properties = {**message.properties, "delivery_mode": 2}
        priority = item.priority or 0
        if priority:
            properties["priority"] = priority
        envelope = channel.prepare_message(
            body, 0, content_type, content_encoding, message.headers, properties
        )
        channel._inplace_augment_message(envelope, "", spec.queue)
        return spec.queue, envelope

    def _publish_files(self, items: Sequence[Dispatch]) -> None:
        # The embedded default: the envelope kombu would write, written by the transport's
        # own _put (tasks.filesystem_transport), without send_task's layers (~1 ms each).
        with self.app.producer_or_acquire() as producer:
            channel = producer.channel
            for message in plan(items):
                channel._put(*self.envelope(channel, message))

    def _publish_pipelined(self, items: Sequence[Dispatch]) -> None:
        # The app's producer pool keeps connections and their channels warm; opening a
        # channel per publish would cost more than the publish.
        with self.app.producer_or_acquire() as producer:
            channel = producer.channel
            pipe = channel.client.pipeline(transaction=False)
            for message in plan(items):
                key, envelope = self.build_envelope(channel, message)
                pipe.lpush(key, envelope)
            pipe.execute()

    def queue_depth(self, name: str) -> int | None:
        with self.app.producer_or_acquire() as producer:
            try:
                declared = producer.channel.queue_declare(queue=name, passive=True)
            except ChannelError:
                return 0  # Redis drops an empty list: no queue means no message
            return int(declared.message_count)

    def broker_was_reset(self) -> bool:
        """A canary message lives in a queue no worker reads; if it is gone, so is the rest."""
        if self.queue_depth(CANARY_QUEUE):
            return False
        with self.app.producer_or_acquire() as producer:
            producer.publish(
                {"canary": True},
                exchange="",
                routing_key=CANARY_QUEUE,
                declare=[queue(CANARY_QUEUE)],
                serializer="json",
            )
        return True
