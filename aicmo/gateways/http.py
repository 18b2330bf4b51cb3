"""HTTP with a hard deadline on the whole call.

httpx's timeouts bound each operation (connect, each read), not the call: a server that
trickles one byte a second keeps a read alive forever. So the request runs in a helper thread
and the caller waits at most the deadline. The abandoned request ends on its own at its read
timeout (set to the same deadline); the caller - the worker - is free at once.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field

import httpx

# httpx logs every request URL at INFO through its own logger, outside aicmo's redacting
# formatter, and hook URLs carry tokens (Zapier, Make): keep that logger to warnings.
logging.getLogger("httpx").setLevel(logging.WARNING)

USER_AGENT = "aicmo/0.1"


class DeadlineExceeded(httpx.TimeoutException):
    """The whole call took longer than its deadline."""


@dataclass
class _Call:
    response: httpx.Response | None = None
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)


def send_with_deadline(
    client: httpx.Client, request: httpx.Request, deadline: float
) -> httpx.Response:
    """Send ``request`` and read its whole body within ``deadline`` seconds, or raise
    :class:`DeadlineExceeded` (a transport error: classify it as transient)."""
    call = _Call()

    def run() -> None:
        try:
            response = client.send(request)
            response.read()
            call.response = response
        except BaseException as exc:  # handed over to the caller's thread
            call.error = exc
        finally:
            call.done.set()

    threading.Thread(target=run, name="aicmo-http", daemon=True).start()
    if not call.done.wait(max(0.0, deadline)):
        raise DeadlineExceeded(f"no complete answer within {deadline:g}s", request=request)
    if call.error is not None:
        raise call.error
    assert call.response is not None
    return call.response


_clients: dict[tuple[int, str], httpx.Client] = {}
_lock = threading.Lock()


def shared_client(name: str, connect_timeout: float, total_timeout: float) -> httpx.Client:
    """One pooled client per (process, purpose): a forked worker child never reuses its
    parent's sockets. Redirects are not followed: a hook that moved is a configuration error,
    and following it would resend the body (and its signature) somewhere unchecked."""
    key = (os.getpid(), f"{name}:{connect_timeout}:{total_timeout}")
    with _lock:
        client = _clients.get(key)
        if client is None:
            client = httpx.Client(
                timeout=httpx.Timeout(total_timeout, connect=connect_timeout),
                follow_redirects=False,
                headers={"User-Agent": USER_AGENT},
            )
            _clients[key] = client
    return client
