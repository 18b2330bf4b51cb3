"""A real HTTP server on 127.0.0.1, in a thread, that a platform fake builds on.

It records every request, answers scripted replies first (a test queues e.g. a 429 with the
platform's rate-limit headers for the next request to a path), and can take a request, do
its work (the post is made) and then never answer: the client times out after the platform
accepted, the case an idempotent retry must survive.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass(frozen=True)
class Request:
    at: float
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def form(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(self.body.decode()).items()}

    @property
    def bearer(self) -> str | None:
        value = self.headers.get("authorization", "")
        return value[7:] if value.lower().startswith("bearer ") else None


@dataclass
class Reply:
    status: int
    document: Any = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Scripted:
    method: str
    path_prefix: str
    reply: Reply


class FakePlatform:
    """Subclasses implement :meth:`route` (method, path, request) -> Reply."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.lock = threading.RLock()
        self.stopping = threading.Event()
        self.script: deque[Scripted] = deque()
        self.hang_after: set[tuple[str, str]] = set()  # (method, path): accept, then hang
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FakePlatform:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()

    def queue(self, method: str, path_prefix: str, reply: Reply) -> None:
        with self.lock:
            self.script.append(Scripted(method, path_prefix, reply))

    def hang_once_after_accepting(self, method: str, path: str) -> None:
        with self.lock:
            self.hang_after.add((method, path))

    def seen(self, method: str = "", path_prefix: str = "") -> list[Request]:
        with self.lock:
            return [
                r
                for r in self.requests
                if (not method or r.method == method) and r.path.startswith(path_prefix)
            ]

    def route(self, request: Request) -> Reply:
        raise NotImplementedError

    def _answer(self, request: Request) -> Reply | None:
        with self.lock:
            self.requests.append(request)
            for item in list(self.script):
                if item.method == request.method and request.path.startswith(item.path_prefix):
                    self.script.remove(item)
                    return item.reply
            hang = (request.method, request.path) in self.hang_after
            self.hang_after.discard((request.method, request.path))
            reply = self.route(request)
        if hang:
            self.stopping.wait(60)
            return None
        return reply

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _handle(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                request = Request(
                    time.time(),
                    method,
                    parts.path,
                    parse_qs(parts.query),
                    {k.lower(): v for k, v in self.headers.items()},
                    body,
                )
                reply = fake._answer(request)
                if reply is None:
                    return
                data = b"" if reply.document is None else json.dumps(reply.document).encode()
                try:
                    self.send_response(reply.status)
                    if reply.document is not None:
                        self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def do_GET(self) -> None:
                self._handle("GET")

            def do_POST(self) -> None:
                self._handle("POST")

        return Handler
