"""Redis clients built from aicmo's URLs, plain or found through Redis Sentinel.

Celery reads the broker through kombu, which understands ``sentinel://`` itself; everything
else in aicmo that talks to Redis (the rate-limit buckets) builds its client here, so it
follows a failover the same way the workers do. A Sentinel URL lists the sentinels, separated
by ``;``, as kombu takes it: ``sentinel://[:password@]host:port[/db];sentinel://host:port``.
The password and db number of the first part are the primary's; the sentinels' own password
is AICMO_BROKER_SENTINEL_PASSWORD.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

import redis
from redis.sentinel import Sentinel

DEFAULT_SENTINEL_PORT = 26379


class SentinelURL:
    """The parts of a ``sentinel://`` URL list."""

    def __init__(self, url: str) -> None:
        self.sentinels: list[tuple[str, int]] = []
        self.db = 0
        self.username: str | None = None
        self.password: str | None = None
        for index, part in enumerate(p.strip() for p in url.split(";") if p.strip()):
            parsed = urlsplit(part)
            if parsed.scheme != "sentinel" or not parsed.hostname:
                # The part may hold a password: name the rule, never the value.
                raise ValueError("every part of a Sentinel URL must be sentinel://host:port")
            self.sentinels.append((parsed.hostname, parsed.port or DEFAULT_SENTINEL_PORT))
            if index == 0:
                path = parsed.path.strip("/")
                self.db = int(path) if path else 0
                self.username = unquote(parsed.username) if parsed.username else None
                self.password = unquote(parsed.password) if parsed.password else None
        if not self.sentinels:
            raise ValueError("a Sentinel URL names no sentinel")


def redis_from_url(
    url: str,
    *,
    master_name: str | None = None,
    sentinel_password: str | None = None,
    **options: Any,
) -> redis.Redis:
    """A client of ``url``; for ``sentinel://`` one of the current primary of ``master_name``,
    which asks the sentinels again after a connection error (so it follows a failover)."""
    if not url.startswith("sentinel://"):
        return redis.Redis.from_url(url, **options)
    if not master_name:
        raise ValueError("a sentinel:// URL needs a master name (AICMO_BROKER_MASTER_NAME)")
    parsed = SentinelURL(url)
    sentinel_kwargs: dict[str, Any] = {
        key: options[key] for key in ("socket_timeout", "socket_connect_timeout") if key in options
    }
    if sentinel_password:
        sentinel_kwargs["password"] = sentinel_password
    sentinel = Sentinel(parsed.sentinels, sentinel_kwargs=sentinel_kwargs)
    return sentinel.master_for(
        master_name,
        redis_class=redis.Redis,
        db=parsed.db,
        username=parsed.username,
        password=parsed.password,
        **options,
    )
