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

    def _countdown(self, item: Dispatch) -> float | None:
        countdown = min(item.countdown, get_settings().dispatch_horizon_seconds)
        return countdown if countdown > 0 else None

    def _publish_each(self, items: Sequence[Dispatch]) -> None:
        with self.app.producer_or_acquire() as producer:
            for item in items:
                spec = registry.get(item.action_type)
                self.app.send_task(
                    spec.task_name,
                    args=[item.action_id],
                    queue=spec.queue,
                    countdown=self._countdown(item),
                    priority=item.priority,
                    producer=producer,
                    ignore_result=True,
                    time_limit=spec.time_limit,
                    soft_time_limit=spec.soft_time_limit,
                )

    def build_envelope(self, channel: Any, item: Dispatch) -> tuple[str, str]:
        """The Redis list and the JSON envelope kombu would push for this task message."""
        queue_name, envelope = self.envelope(channel, item)
        priority = item.priority or 0
        # The list kombu's own publish would use for this priority (its priority_steps).
        return channel._q_for_pri(queue_name, priority), json.dumps(envelope)

    def envelope(self, channel: Any, item: Dispatch) -> tuple[str, dict[str, Any]]:
        """The queue and the envelope kombu's virtual channel would store for this message."""
        spec = registry.get(item.action_type)
        task_id = uuid()
        message = self.app.amqp.as_task_v2(
            task_id,
            spec.task_name,
            args=[item.action_id],
            kwargs={},
            countdown=self._countdown(item),
            ignore_result=True,
            reply_to=self.app.thread_oid,
            # What saferepr would make of them, without its cost on every message.
            argsrepr=f"[{item.action_id}]",
            kwargsrepr="{}",
            time_limit=spec.time_limit,
            soft_time_limit=spec.soft_time_limit,
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
            for item in items:
                channel._put(*self.envelope(channel, item))

    def _publish_pipelined(self, items: Sequence[Dispatch]) -> None:
        # The app's producer pool keeps connections and their channels warm; opening a
        # channel per publish would cost more than the publish.
        with self.app.producer_or_acquire() as producer:
            channel = producer.channel
            pipe = channel.client.pipeline(transaction=False)
            for item in items:
                key, envelope = self.build_envelope(channel, item)
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
