"""The action registry: each action type is declared once, here, by the module that owns it.

An entry names the type, its pydantic payload model, its handler, its retry policy, its
time limits and its queue. The Celery layer (``tasks/``) turns every entry into one task
``aol.<TYPE>``; the queue validates enqueues against it. The registry never imports the
modules that fill it: it imports the modules named by ``AICMO_ACTION_MODULES`` on first use,
as Celery does with ``imports``.

A module may also *declare* a type (:meth:`ActionRegistry.declare`): its name, queue, limits
and retry policy, and the module that holds its handler and payload model. A worker builds
its tasks from declarations alone (:meth:`ActionRegistry.specs`) and imports a handler's
module, with everything that module needs (campaign code, gateways, the ORM), only when an
action of that type first runs or is enqueued: a worker that never runs a campaign action
never pays the memory for campaign code, in its main process or in any pool child.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from aicmo.config import get_settings
from aicmo.orchestration.errors import UnknownActionType
from aicmo.orchestration.retry import RetryPolicy

if TYPE_CHECKING:
    from aicmo.orchestration.context import ActionContext

Handler = Callable[["ActionContext", Any], dict[str, Any] | None]

DEFAULT_QUEUE = "aol"
TASK_NAME_PREFIX = "aol."
BATCH_SUFFIX = ".batch"


@dataclass(frozen=True)
class Concurrency:
    """At most ``limit`` actions of the type RUNNING per value of payload field ``field``
    (e.g. the sending account), on all workers together. Enforced in the claim (see
    aicmo.orchestration.concurrency)."""

    field: str
    limit: int

    def __post_init__(self) -> None:
        if not self.field.replace("_", "").isalnum():
            raise ValueError(f"concurrency field must be a payload field name, got {self.field!r}")
        if not 1 <= self.limit <= 1000:
            raise ValueError(f"concurrency limit must be 1..1000, got {self.limit}")


@dataclass(frozen=True)
class ActionType:
    name: str
    payload_model: type[BaseModel]
    handler: Handler
    retry: RetryPolicy = field(default_factory=RetryPolicy.from_settings)
    soft_time_limit: float = 240.0
    time_limit: float = 300.0
    queue: str = DEFAULT_QUEUE
    description: str = ""
    concurrency: Concurrency | None = None
    # Most action ids one Celery message may carry (None: AICMO_BATCH_SIZE); see batching().
    batch_size: int | None = None

    def __post_init__(self) -> None:
        _check_name_and_limits(self.name, self.soft_time_limit, self.time_limit)
        if self.batch_size is not None and not 1 <= self.batch_size <= 1000:
            raise ValueError(f"{self.name}: batch_size must be 1..1000, got {self.batch_size}")

    def batching(self) -> int:
        """How many ids one message of this type may carry (1: one message per action).

        A type with a concurrency key is never batched: its claim takes a slot per action
        and may park it (aicmo.orchestration.concurrency), which a batch claim would bypass.
        ``AICMO_BATCH_SIZE=1`` is the switch that turns batching off for every type.
        """
        default = get_settings().batch_size
        if self.concurrency is not None or default <= 1:
            return 1
        return self.batch_size or default

    @property
    def task_name(self) -> str:
        return TASK_NAME_PREFIX + self.name

    @property
    def batch_task_name(self) -> str:
        """The task whose one message carries many ids of this type (``aol.<TYPE>.batch``)."""
        return TASK_NAME_PREFIX + self.name + BATCH_SUFFIX

    def lease_seconds(self) -> float:
        # Celery's hard time limit kills the run before the lease ends, so an expired lease
        # means the run is over (the process died or was killed), never still writing.
        return self.time_limit + get_settings().lease_margin_seconds


@dataclass(frozen=True)
class Declared:
    """A type's metadata without its handler: what a worker needs to make the type's task
    (and the sweeper to route it). ``module`` registers the handler when imported."""

    name: str
    module: str
    retry: RetryPolicy = field(default_factory=RetryPolicy.from_settings)
    soft_time_limit: float = 240.0
    time_limit: float = 300.0
    queue: str = DEFAULT_QUEUE
    concurrency: Concurrency | None = None
    batch_size: int | None = None

    def __post_init__(self) -> None:
        _check_name_and_limits(self.name, self.soft_time_limit, self.time_limit)

    @property
    def task_name(self) -> str:
        return TASK_NAME_PREFIX + self.name

    @property
    def batch_task_name(self) -> str:
        return TASK_NAME_PREFIX + self.name + BATCH_SUFFIX


def _check_name_and_limits(name: str, soft_time_limit: float, time_limit: float) -> None:
    if not name or not name.replace("_", "").isalnum() or not name.isupper():
        raise ValueError(f"action type names are UPPER_SNAKE_CASE, got {name!r}")
    if soft_time_limit >= time_limit:
        raise ValueError(f"{name}: soft_time_limit must be below time_limit")


ActionSpec = ActionType | Declared


class ActionRegistry:
    def __init__(self) -> None:
        self._types: dict[str, ActionType] = {}
        self._declared: dict[str, Declared] = {}
        self._autoloaded = False
        self._lock = threading.Lock()

    def register(self, action_type: ActionType, *, replace: bool = False) -> ActionType:
        existing = self._types.get(action_type.name)
        if existing is not None and not replace and existing.handler is not action_type.handler:
            raise ValueError(f"action type {action_type.name} is already registered")
        self._types[action_type.name] = action_type
        return action_type

    def declare(
        self,
        name: str,
        module: str,
        *,
        retry: RetryPolicy | None = None,
        soft_time_limit: float = 240.0,
        time_limit: float = 300.0,
        queue: str = DEFAULT_QUEUE,
        concurrency: Concurrency | None = None,
        batch_size: int | None = None,
    ) -> Declared:
        """Declare a type whose handler ``module`` registers (with ``@registry.action(name,
        payload=...)``, which takes these values) when the type is first needed."""
        declared = Declared(
            name=name,
            module=module,
            retry=retry or RetryPolicy.from_settings(),
            soft_time_limit=soft_time_limit,
            time_limit=time_limit,
            queue=queue,
            concurrency=concurrency,
            batch_size=batch_size,
        )
        existing = self._declared.get(name)
        if existing is not None and existing != declared:
            raise ValueError(f"action type {name} is already declared differently")
        self._declared[name] = declared
        return declared

    def _load(self, name: str) -> ActionType | None:
        declared = self._declared.get(name)
        if declared is None:
            return None
        importlib.import_module(declared.module)
        found = self._types.get(name)
        if found is None:
            raise ValueError(f"module {declared.module} declares {name} but registers no handler")
        return found

    def action(
        self,
        name: str,
        *,
        payload: type[BaseModel],
        retry: RetryPolicy | None = None,
        soft_time_limit: float | None = None,
        time_limit: float | None = None,
        queue: str | None = None,
        concurrency: Concurrency | None = None,
        batch_size: int | None = None,
    ) -> Callable[[Handler], Handler]:
        """Decorator form: ``@registry.action("POST_SOCIAL", payload=PostSocialPayload)``.

        A declared type (:meth:`declare`) takes its retry policy, limits, queue and
        concurrency from the declaration; giving them here as well is an error."""
        declared = self._declared.get(name)
        if declared is not None:
            given = [retry, soft_time_limit, time_limit, queue, concurrency, batch_size]
            if any(value is not None for value in given):
                raise ValueError(f"{name} is declared: its limits and policy live there only")
            retry, concurrency = declared.retry, declared.concurrency
            soft_time_limit, time_limit = declared.soft_time_limit, declared.time_limit
            queue, batch_size = declared.queue, declared.batch_size

        def decorate(handler: Handler) -> Handler:
            self.register(
                ActionType(
                    name=name,
                    payload_model=payload,
                    handler=handler,
                    retry=retry or RetryPolicy.from_settings(),
                    soft_time_limit=240.0 if soft_time_limit is None else soft_time_limit,
                    time_limit=300.0 if time_limit is None else time_limit,
                    queue=queue or DEFAULT_QUEUE,
                    description=(handler.__doc__ or "").strip().split("\n")[0],
                    concurrency=concurrency,
                    batch_size=batch_size,
                )
            )
            return handler

        return decorate

    def autoload(self) -> None:
        """Import the modules that declare action types (once per process)."""
        with self._lock:
            if self._autoloaded:
                return
            self._autoloaded = True
        for module in get_settings().action_modules:
            importlib.import_module(module)

    def get(self, name: str) -> ActionType:
        """The type with its handler and payload model (importing its module if declared)."""
        found = self._types.get(name)
        if found is None:
            self.autoload()
            found = self._types.get(name) or self._load(name)
        if found is None:
            raise UnknownActionType(name, self.names())
        return found

    def names(self) -> list[str]:
        self.autoload()
        return sorted({*self._types, *self._declared})

    def specs(self) -> list[ActionSpec]:
        """Every type's metadata (name, queue, limits), importing no handler module."""
        self.autoload()
        return [self._types.get(name) or self._declared[name] for name in self.names()]

    def __iter__(self) -> Iterator[ActionType]:
        """Every type with its handler: imports every declared module."""
        return iter([self.get(name) for name in self.names()])

    def __contains__(self, name: object) -> bool:
        self.autoload()
        return name in self._types or name in self._declared


registry = ActionRegistry()
