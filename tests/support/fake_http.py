"""A real HTTP server on 127.0.0.1, in a thread, standing in for a webhook receiver and an
OpenAI-compatible API. It records every request (time of arrival, path, headers, body).

What it answers is decided by a directive anywhere in the request body, so a test (or an
action run by a worker) picks the behaviour per request:

``@@429:S@@``  429 with ``Retry-After: S``          ``@@500@@``  500
``@@hang@@``   accept, then never answer             ``@@401@@``  401 echoing the credentials
``@@400@@``    400 with a provider message           ``@@flaky:N@@``  500 on the first N tries of
``@@empty@@``  200 with an empty completion                           an idempotency key, then OK
``@@limited:N@@``  429 with ``Retry-After: 1`` on the first N tries of a key, then OK
``@@usage:N@@``    a completion whose usage is N prompt tokens and 0 completion tokens
``@@slow:S@@``     the normal answer, after S seconds
no directive: 200 (``/chat/completions``: a completion with usage; else ``{"id": "post-N"}``).
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

DIRECTIVE = re.compile(rb"@@([a-z0-9]+)(?::([0-9.]+))?@@")
COMPLETION_PREFIX = "Draft: "


@dataclass(frozen=True)
class Seen:
    at: float  # time.time() on arrival
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class FakeHTTPServer:
    def __init__(self) -> None:
        self.requests: list[Seen] = []
        self.tries: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FakeHTTPServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()  # releases every hanging handler
        self.server.shutdown()
        self.server.server_close()

    def clear(self) -> None:
        with self.lock:
            self.requests.clear()
            self.tries.clear()

    def seen(self, path_prefix: str = "") -> list[Seen]:
        with self.lock:
            return [r for r in self.requests if r.path.startswith(path_prefix)]

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                seen = Seen(
                    time.time(),
                    "POST",
                    self.path,
                    {k.lower(): v for k, v in self.headers.items()},
                    body,
                )
                with fake.lock:
                    fake.requests.append(seen)
                fake._answer(self, seen)

        return Handler

    def _answer(self, handler: BaseHTTPRequestHandler, seen: Seen) -> None:
        found = DIRECTIVE.search(seen.body)
        verb, arg = (found.group(1).decode(), found.group(2)) if found else ("", None)
        key = seen.headers.get("idempotency-key", "")
        with self.lock:
            self.tries[key] += 1
            tries = self.tries[key]
        if verb == "hang":
            self.stopping.wait(120)
            return
        if verb == "slow":  # answer normally, after this many seconds
            self.stopping.wait(float(arg or b"1"))
        if verb == "429":
            seconds = arg.decode() if arg else "1"
            return _send(
                handler, 429, {"error": {"message": "slow down"}}, {"Retry-After": seconds}
            )
        if verb == "limited" and tries <= int(arg or b"1"):
            return _send(handler, 429, {"error": {"message": "slow down"}}, {"Retry-After": "1"})
        if verb == "500" or (verb == "flaky" and tries <= int(arg or b"1")):
            return _send(handler, 500, {"error": {"message": "internal error, try again"}})
        if verb == "401":
            # The worst kind of provider: it echoes what it was given.
            echoed = f"{seen.headers.get('authorization', '')} at {seen.path}"
            return _send(handler, 401, {"error": {"message": f"Incorrect API key: {echoed}"}})
        if verb == "400":
            return _send(
                handler, 400, {"error": {"message": "content is too long for this channel"}}
            )
        if seen.path.endswith("/chat/completions"):
            if verb == "empty":
                choice = {"message": {"content": ""}, "finish_reason": "content_filter"}
                return _send(handler, 200, {"choices": [choice]})
            prompt = json.loads(seen.body)["messages"][-1]["content"]
            prompt_tokens, completion = (int(arg), 0) if verb == "usage" and arg else (11, 7)
            return _send(
                handler,
                200,
                {
                    "id": f"chatcmpl-{len(self.requests)}",
                    "choices": [
                        {
                            "message": {"role": "assistant", "content": COMPLETION_PREFIX + prompt},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion},
                },
            )
        with self.lock:
            number = len(self.requests)
        return _send(handler, 200, {"id": f"post-{number}", "status": "scheduled"})


def _send(
    handler: BaseHTTPRequestHandler,
    status: int,
    document: dict[str, Any],
    headers: dict[str, str] | None = None,
) -> None:
    data = json.dumps(document).encode()
    try:
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(data)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the client gave up (its timeout): nothing to answer
