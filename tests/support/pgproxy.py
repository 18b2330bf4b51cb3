"""A TCP proxy in front of PostgreSQL that can lose the answer to one statement.

Armed with a marker, it forwards the client's statement containing it, lets the server run
it to the end (up to ReadyForQuery: an autocommit statement has committed by then), then
closes both sockets without forwarding a byte of the answer: "the UPDATE committed, the
connection died before the reply", for real, on the wire.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType


class _Link:
    def __init__(self, client: socket.socket, server: socket.socket) -> None:
        self.client = client
        self.server = server
        self.swallow = False

    def close(self) -> None:
        for sock in (self.client, self.server):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()


class DroppingProxy:
    def __init__(self, upstream: tuple[str, int] = ("127.0.0.1", 5432)) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.dropped = threading.Event()
        self._marker: bytes | None = None
        self._refuse = 0
        self._after_drop = 0
        self._lock = threading.Lock()
        self._links: list[_Link] = []
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def arm(self, marker: bytes, then_refuse: int = 0) -> None:
        """Lose the answer to the next statement whose text contains ``marker`` (once), and
        refuse the ``then_refuse`` connections that follow."""
        with self._lock:
            self._marker = marker
            self._after_drop = then_refuse

    def refuse(self, count: int) -> None:
        """Close the next ``count`` new connections at once (the database looks down)."""
        with self._lock:
            self._refuse = count

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with self._lock:
                refused = self._refuse > 0
                self._refuse -= 1 if refused else 0
            if refused:
                client.close()
                continue
            server = socket.create_connection(self.upstream)
            link = _Link(client, server)
            self._links.append(link)
            threading.Thread(target=self._upstream, args=(link,), daemon=True).start()
            threading.Thread(target=self._downstream, args=(link,), daemon=True).start()

    def _upstream(self, link: _Link) -> None:
        with contextlib.suppress(OSError):
            while chunk := link.client.recv(65536):
                with self._lock:
                    if self._marker is not None and self._marker in chunk:
                        self._marker = None
                        link.swallow = True  # before the server can answer
                link.server.sendall(chunk)
        link.close()

    def _downstream(self, link: _Link) -> None:
        held = b""
        with contextlib.suppress(OSError):
            while chunk := link.server.recv(65536):
                if not link.swallow:
                    link.client.sendall(chunk)
                    continue
                held += chunk
                # Backend messages: a type byte, then a 4-byte length that counts itself.
                while len(held) >= 5:
                    size = int.from_bytes(held[1:5], "big")
                    if len(held) < 1 + size:
                        break
                    kind, held = held[0:1], held[1 + size :]
                    if kind == b"Z":  # ReadyForQuery: the statement is over, committed
                        with self._lock:
                            self._refuse = self._after_drop
                        self.dropped.set()
                        link.close()
                        return
        link.close()

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self.listener.close()
        for link in self._links:
            link.close()

    def __enter__(self) -> DroppingProxy:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
