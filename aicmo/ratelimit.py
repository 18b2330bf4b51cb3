"""Global rate limits and daily budgets, shared by every worker process.

Celery's ``rate_limit`` is per worker: four workers with ``60/m`` make 240 requests a minute.
Here the state lives outside the processes:

* **Redis** (production): a token bucket per provider/platform, refilled continuously, read
  and updated by one Lua script, so every worker on every host draws from the same bucket.
  The script takes the time from Redis (``TIME``), so hosts with skewed clocks agree.
* **A file under flock** (the embedded default, one host): the same two operations, with the
  JSON state in a file every local process locks while it updates it.

Two operations:

* :meth:`CounterStore.take` - take ``cost`` tokens from several buckets at once, or from none
  (a request and its tokens are allowed together or not at all), and say how long to wait.
* :meth:`CounterStore.reserve` - add amounts to several counters at once unless one would pass
  its limit (the daily LLM budgets): concurrent callers can never overspend together.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import redis

from aicmo.config import Settings, get_settings
from aicmo.orchestration.errors import Deferred, TransientError
from aicmo.redis_client import redis_from_url

log = logging.getLogger(__name__)

# One Redis Cluster hash slot for every key, so the multi-key scripts run on a cluster too.
KEY_PREFIX = "aicmo:{limits}:"


@dataclass(frozen=True)
class Bucket:
    """A token bucket: ``per_minute`` tokens a minute, at most ``burst`` at once."""

    name: str
    per_minute: float
    burst: float

    def __post_init__(self) -> None:
        if self.per_minute <= 0 or self.burst <= 0:
            raise ValueError(f"bucket {self.name}: per_minute and burst must be positive")

    @property
    def per_second(self) -> float:
        return self.per_minute / 60.0


@dataclass(frozen=True)
class Counter:
    """A counter that may not pass ``limit`` (None: counted, never refused)."""

    name: str
    limit: int | None
    amount: int


class RateLimited(Deferred):
    """No room in the bucket within the allowed wait: try again after ``retry_after``, without
    spending an attempt."""


class LimitStoreUnavailable(TransientError):
    """The shared store (Redis) cannot be reached: refuse rather than send unlimited."""


class CounterStore(Protocol):
    def take(self, wants: Sequence[tuple[Bucket, float]]) -> float:
        """Take each cost from its bucket, all or none. 0.0 if taken, else seconds to wait."""

    def reserve(self, counters: Sequence[Counter], ttl_seconds: int) -> str | None:
        """Add every amount unless a counter would pass its limit; None, or that one's name."""

    def add(self, counters: Sequence[Counter], ttl_seconds: int) -> None:
        """Add (or with a negative amount, give back) unconditionally."""

    def read(self, names: Sequence[str]) -> list[int]: ...


# -- Redis ---------------------------------------------------------------------------------

_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local wait = 0
local level = {}
for i = 1, #KEYS do
  local rate = tonumber(ARGV[3 * i - 2])
  local burst = tonumber(ARGV[3 * i - 1])
  local cost = math.min(tonumber(ARGV[3 * i]), burst)
  local state = redis.call('HMGET', KEYS[i], 'tokens', 'ts')
  local tokens = tonumber(state[1])
  local ts = tonumber(state[2])
  if tokens == nil or ts == nil then
    tokens = burst
    ts = now
  end
  tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
  level[i] = tokens
  if tokens < cost then
    wait = math.max(wait, (cost - tokens) / rate)
  end
end
if wait > 0 then
  return tostring(wait)
end
for i = 1, #KEYS do
  local rate = tonumber(ARGV[3 * i - 2])
  local burst = tonumber(ARGV[3 * i - 1])
  local cost = math.min(tonumber(ARGV[3 * i]), burst)
  redis.call('HSET', KEYS[i], 'tokens', tostring(level[i] - cost), 'ts', tostring(now))
  redis.call('PEXPIRE', KEYS[i], math.ceil(burst / rate * 1000) + 60000)
end
return '0'
"""

_RESERVE = """
local ttl = tonumber(ARGV[1])
for i = 1, #KEYS do
  local limit = tonumber(ARGV[2 * i])
  local amount = tonumber(ARGV[2 * i + 1])
  if limit >= 0 and amount > 0 then
    local used = tonumber(redis.call('GET', KEYS[i]) or '0')
    if used + amount > limit then
      return i
    end
  end
end
for i = 1, #KEYS do
  redis.call('INCRBY', KEYS[i], tonumber(ARGV[2 * i + 1]))
  redis.call('EXPIRE', KEYS[i], ttl)
end
return 0
"""


class RedisCounterStore:
    def __init__(
        self, url: str, master_name: str | None = None, sentinel_password: str | None = None
    ) -> None:
        # A sentinel:// URL gives a client of the current primary that follows a failover.
        self.client = redis_from_url(
            url,
            master_name=master_name,
            sentinel_password=sentinel_password,
            socket_timeout=3,
            socket_connect_timeout=3,
        )
        self._take = self.client.register_script(_TAKE)
        self._reserve = self.client.register_script(_RESERVE)

    def _call(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        with _unreachable_is_transient():
            return script(keys=keys, args=args)

    def take(self, wants: Sequence[tuple[Bucket, float]]) -> float:
        keys = [f"{KEY_PREFIX}bucket:{bucket.name}" for bucket, _ in wants]
        args: list[Any] = []
        for bucket, cost in wants:
            args += [repr(bucket.per_second), repr(float(bucket.burst)), repr(float(cost))]
        return float(self._call(self._take, keys, args))

    def reserve(self, counters: Sequence[Counter], ttl_seconds: int) -> str | None:
        keys = [f"{KEY_PREFIX}count:{c.name}" for c in counters]
        args: list[Any] = [int(ttl_seconds)]
        for c in counters:
            args += [-1 if c.limit is None else int(c.limit), int(c.amount)]
        index = int(self._call(self._reserve, keys, args))
        return counters[index - 1].name if index else None

    def add(self, counters: Sequence[Counter], ttl_seconds: int) -> None:
        with _unreachable_is_transient(), self.client.pipeline(transaction=True) as pipe:
            for c in counters:
                key = f"{KEY_PREFIX}count:{c.name}"
                pipe.incrby(key, int(c.amount))
                pipe.expire(key, int(ttl_seconds))
            pipe.execute()

    def read(self, names: Sequence[str]) -> list[int]:
        with _unreachable_is_transient():
            values = self.client.mget([f"{KEY_PREFIX}count:{name}" for name in names])
        return [int(v) if v is not None else 0 for v in values]


@contextmanager
def _unreachable_is_transient() -> Iterator[None]:
    """Every Redis operation of the store reports an unreachable Redis the same way."""
    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise LimitStoreUnavailable(f"rate-limit store unreachable: {exc}") from exc


# -- a file under flock (one host) ---------------------------------------------------------


class FileCounterStore:
    """The same semantics for processes of one host, for the embedded default (no Redis).

    The state is never rewritten in place: each change goes to a temporary file that is
    fsynced and then renamed over the state (``os.replace`` is atomic), so a process killed at
    any moment leaves the old state or the new one, never an empty or half-written file (which
    would reset every budget). The lock is a separate file, since a rename swaps the inode a
    lock on the state file itself would be held on.
    """

    def __init__(self, path: Path, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self.clock = clock
        self._thread_lock = threading.Lock()

    def _update(self, change: Callable[[dict[str, Any], float], Any]) -> Any:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._thread_lock, open(self.lock_path, "a", encoding="utf-8") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                try:
                    text = self.path.read_text(encoding="utf-8")
                except FileNotFoundError:
                    text = ""
                state: dict[str, Any] = json.loads(text) if text.strip() else {}
                now = self.clock()
                result = change(state, now)
                counters = state.get("counters", {})
                state["counters"] = {k: v for k, v in counters.items() if v[1] > now}
                new_text = json.dumps(state)
                if new_text != text:
                    self._replace(new_text)
                return result
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _replace(self, text: str) -> None:
        temporary = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        try:
            with open(temporary, "w", encoding="utf-8") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        # The rename itself survives a power cut only once the folder is synced.
        folder = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)

    def take(self, wants: Sequence[tuple[Bucket, float]]) -> float:
        def change(state: dict[str, Any], now: float) -> float:
            buckets = state.setdefault("buckets", {})
            levels = []
            wait = 0.0
            for bucket, cost in wants:
                tokens, ts = buckets.get(bucket.name, (bucket.burst, now))
                level = min(bucket.burst, tokens + max(0.0, now - ts) * bucket.per_second)
                levels.append(level)
                cost = min(cost, bucket.burst)
                if level < cost:
                    wait = max(wait, (cost - level) / bucket.per_second)
            if wait > 0:
                return wait
            for (bucket, cost), level in zip(wants, levels, strict=True):
                buckets[bucket.name] = (level - min(cost, bucket.burst), now)
            return 0.0

        result: float = self._update(change)
        return result

    def reserve(self, counters: Sequence[Counter], ttl_seconds: int) -> str | None:
        def change(state: dict[str, Any], now: float) -> str | None:
            values = state.setdefault("counters", {})
            for c in counters:
                used, expires = values.get(c.name, (0, 0))
                used = used if expires > now else 0
                if c.limit is not None and c.amount > 0 and used + c.amount > c.limit:
                    return c.name
            self._add(values, counters, ttl_seconds, now)
            return None

        result: str | None = self._update(change)
        return result

    def add(self, counters: Sequence[Counter], ttl_seconds: int) -> None:
        self._update(
            lambda state, now: self._add(
                state.setdefault("counters", {}), counters, ttl_seconds, now
            )
        )

    @staticmethod
    def _add(
        values: dict[str, Any], counters: Sequence[Counter], ttl_seconds: int, now: float
    ) -> None:
        for c in counters:
            used, expires = values.get(c.name, (0, 0))
            used = used if expires > now else 0
            values[c.name] = (used + c.amount, now + ttl_seconds)

    def read(self, names: Sequence[str]) -> list[int]:
        def change(state: dict[str, Any], now: float) -> list[int]:
            values = state.get("counters", {})
            return [int(values[n][0]) if n in values and values[n][1] > now else 0 for n in names]

        result: list[int] = self._update(change)
        return result


# -- the limiter ---------------------------------------------------------------------------


class RateLimiter:
    """Waits for room in shared buckets, up to a bound; past it, raises :class:`RateLimited`
    (a transient error: the action goes to RETRY, due when the bucket has room)."""

    def __init__(
        self,
        store: CounterStore,
        max_wait: float,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.max_wait = max_wait
        self.sleep = sleep
        self.clock = clock

    def acquire(
        self, wants: Sequence[tuple[Bucket, float]], *, max_wait: float | None = None
    ) -> float:
        """Take the costs; return the seconds waited. Raises :class:`RateLimited`."""
        wants = [(bucket, cost) for bucket, cost in wants if cost > 0]
        if not wants:
            return 0.0
        limit = self.max_wait if max_wait is None else max_wait
        started = self.clock()
        deadline = started + max(0.0, limit)
        while True:
            wait = self.store.take(wants)
            if wait <= 0:
                return self.clock() - started
            remaining = deadline - self.clock()
            if wait > remaining:
                names = ", ".join(bucket.name for bucket, _ in wants)
                raise RateLimited(
                    f"rate limit of {names}: no room for {wait:.1f}s", retry_after=wait
                )
            # A little jitter so waiters that woke together do not collide again.
            self.sleep(min(remaining, wait + random.uniform(0, min(0.05, wait))))


_stores: dict[tuple[int, str], CounterStore] = {}
_stores_lock = threading.Lock()


def store_url(settings: Settings) -> str:
    if settings.rate_limit_url:
        return settings.rate_limit_url
    if settings.is_redis_broker:  # Sentinel too: the buckets follow the broker's failover
        return settings.broker_url
    return "file://" + str(Path("var/ratelimits.json").resolve())


def get_store(settings: Settings | None = None) -> CounterStore:
    """The process's store (one per pid: a forked worker child never shares a socket)."""
    settings = settings or get_settings()
    url = store_url(settings)
    key = (os.getpid(), url)
    with _stores_lock:
        found = _stores.get(key)
        if found is None:
            if url.startswith("file://"):
                found = FileCounterStore(Path(url.removeprefix("file://")))
            else:
                password = settings.broker_sentinel_password
                found = RedisCounterStore(
                    url,
                    master_name=settings.broker_master_name,
                    sentinel_password=password.get_secret_value() if password else None,
                )
            _stores[key] = found
    return found


def get_rate_limiter(settings: Settings | None = None) -> RateLimiter:
    s = settings or get_settings()
    return RateLimiter(get_store(s), s.rate_limit_max_wait_seconds)
