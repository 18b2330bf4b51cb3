"""Celery settings derived from aicmo's Settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kombu import Exchange, Queue

from aicmo.config import Settings
from aicmo.orchestration.registry import DEFAULT_QUEUE, registry

CANARY_QUEUE = "aicmo.canary"


def broker_options(settings: Settings) -> dict[str, Any]:
    if settings.is_filesystem_broker:
        root = Path(settings.broker_dir).resolve()
        folders = {name: root / name for name in ("queue", "processed", "control")}
        for folder in folders.values():
            folder.mkdir(parents=True, exist_ok=True)
        return {
            "data_folder_in": str(folders["queue"]),
            "data_folder_out": str(folders["queue"]),
            "processed_folder": str(folders["processed"]),
            "control_folder": str(folders["control"]),
            "store_processed": False,
            "polling_interval": settings.broker_polling_interval,
        }
    options: dict[str, Any] = {
        "visibility_timeout": settings.broker_visibility_timeout_seconds,
        # kombu's default, stated: one Redis list per step, popped in this order (0 first);
        # a message of priority p goes to the list of the largest step <= p.
        "priority_steps": [0, 3, 6, 9],
    }
    if settings.is_sentinel_broker:
        options["master_name"] = settings.broker_master_name
        # Bounded waits on the sentinels themselves: a sentinel host that vanished without
        # a reset must not hang a reconnect; the next sentinel is asked instead.
        sentinel_kwargs: dict[str, Any] = {"socket_timeout": 2, "socket_connect_timeout": 2}
        if settings.broker_sentinel_password:
            sentinel_kwargs["password"] = settings.broker_sentinel_password.get_secret_value()
        options["sentinel_kwargs"] = sentinel_kwargs
    return options


def queue(name: str) -> Queue:
    # Bound to the default (nameless) exchange: a publish goes straight to the list named
    # after the queue. Routing through a named exchange would need kombu's binding table in
    # Redis, and after a FLUSHALL that table is gone and messages would be dropped silently.
    return Queue(name, Exchange(""), routing_key=name)


def celery_config(settings: Settings) -> dict[str, Any]:
    # Beat's queue is among them, so a worker started without -Q consumes it too.
    queues = sorted(
        {DEFAULT_QUEUE, settings.beat_queue, *(spec.queue for spec in registry.specs())}
    )
    return {
        "broker_url": settings.broker_url,
        "broker_transport_options": broker_options(settings),
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        # The aol_actions row is the record; a result backend would cost ~20% for nothing.
        "result_backend": None,
        "task_ignore_result": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        "worker_send_task_events": settings.task_events,
        # "task-sent" events would double the Redis writes of every publish; Flower sees a
        # task from the worker's "received" event on.
        "task_send_sent_event": False,
        "task_default_queue": DEFAULT_QUEUE,
        "task_default_exchange": "",
        "task_default_routing_key": DEFAULT_QUEUE,
        "task_queues": [queue(name) for name in queues],
        "task_create_missing_queues": True,
        "enable_utc": True,
        "timezone": "UTC",
        "worker_hijack_root_logger": False,
    }
