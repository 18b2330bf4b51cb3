"""TCP forwarders for the worker hosts (tests/support/hosts.py), run as a process of their own
in the root namespace: ``python -m tests.support.hostproxy STATS LISTEN_IP PORT=HOST:PORT ..``
(the link's shape in ``STATS.shape``, see :class:`Shape`).

The shared PostgreSQL and Redis listen on 127.0.0.1 only, and must not be reconfigured; a host
(a network namespace) reaches them through these forwarders, bound to its root-side veth
address. When the host's link drops packets, the forwarder's side of each connection simply
hears nothing (no close is faked), exactly as a server behind a real partition would.

It also notes the fencing tokens that cross it (``host/pid/nonceN`` in a claim's or outcome's
parameters), with the time they were seen: a test can then tell which statements of a
partitioned host arrived only after its link came back. Written to STATS as JSON lines.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import socket
import sys
import threading
import time

PG_PORT = 5432
# A single action's token, or a batched action's (the batch's token, "#", the action id);
# a batch claim carries the batch's token alone (aicmo.orchestration.batch_store).
TOKEN = re.compile(rb"[A-Za-z0-9._-]+/\d+/[0-9a-f]{6}\d+(?:#\d+)?")


class Stats:
    def __init__(self, path: str) -> None:
        self.path = path
        self.lock = threading.Lock()
        self.file = open(path, "a", buffering=1)  # noqa: SIM115 - lives as long as the process

    def tokens(self, port: int, chunk: bytes) -> None:
        found = TOKEN.findall(chunk)
        if not found:
            return
        now = time.time()
        with self.lock:
            for token in found:
                self.file.write(
                    json.dumps({"t": now, "port": port, "token": token.decode()}) + "\n"
                )


class Shape:
    """Delay (ms), jitter (ms) and a stall probability for what the host sends, re-read from
    SHAPE_FILE (written by the test) whenever it changes.

    This kernel has no ``sch_netem`` (a Firecracker guest: no modules, ``tc qdisc add ..
    netem`` answers "qdisc kind is unknown"), so the slow, lossy link is made here instead:
    each chunk the host sends waits ``delay +- jitter`` ms, in order (TCP would reorder
    netem's jittered packets back); a "lost" chunk waits 200 ms more, Linux's minimum
    retransmission timeout: what a lost segment costs a TCP stream.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.delay = self.jitter = self.loss = 0.0
        self.mtime = 0.0
        threading.Thread(target=self._watch, daemon=True).start()

    def _watch(self) -> None:
        while True:
            with contextlib.suppress(OSError, ValueError):
                mtime = os.stat(self.path).st_mtime
                if mtime != self.mtime:
                    self.mtime = mtime
                    with open(self.path) as f:
                        found = json.load(f)
                    self.delay = found.get("delay_ms", 0) / 1000
                    self.jitter = found.get("jitter_ms", 0) / 1000
                    self.loss = found.get("loss", 0) / 100
            time.sleep(0.1)

    def wait(self, last: float) -> float:
        """Sleep until this chunk may go; returns its release time."""
        if not (self.delay or self.loss):
            return 0.0
        hold = self.delay + random.uniform(-self.jitter, self.jitter)
        if random.random() < self.loss:
            hold += LOST_SEGMENT_SECONDS
        release = max(last, time.monotonic() + max(0.0, hold))
        time.sleep(max(0.0, release - time.monotonic()))
        return release


LOST_SEGMENT_SECONDS = 0.2
SHAPE: Shape | None = None


def _pump(
    src: socket.socket, dst: socket.socket, port: int, stats: Stats | None, shaped: bool
) -> None:
    last = 0.0
    with contextlib.suppress(OSError):
        while chunk := src.recv(65536):
            if stats is not None:
                stats.tokens(port, chunk)
            if shaped and SHAPE is not None:
                last = SHAPE.wait(last)
            dst.sendall(chunk)
    for sock in (src, dst):
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            sock.close()


def _serve(listen: socket.socket, upstream: tuple[str, int], port: int, stats: Stats) -> None:
    while True:
        client, _ = listen.accept()
        try:
            server = socket.create_connection(upstream, timeout=5)
        except OSError:
            client.close()
            continue
        server.settimeout(None)
        for sock in (client, server):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # Only PostgreSQL's client side carries tokens worth noting.
        scan = stats if port == PG_PORT else None
        # Shaped like netem on the host's interface: only what the host sends waits.
        threading.Thread(target=_pump, args=(client, server, port, scan, True), daemon=True).start()
        threading.Thread(
            target=_pump, args=(server, client, port, None, False), daemon=True
        ).start()


def main(argv: list[str]) -> None:
    global SHAPE
    stats = Stats(argv[0])
    SHAPE = Shape(argv[0] + ".shape")
    listen_ip = argv[1]
    for spec in argv[2:]:
        port, upstream = spec.split("=")
        up_host, up_port = upstream.rsplit(":", 1)
        listen = socket.create_server((listen_ip, int(port)), backlog=128)
        threading.Thread(
            target=_serve, args=(listen, (up_host, int(up_port)), int(port), stats), daemon=True
        ).start()
    print("forwarding", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main(sys.argv[1:])
