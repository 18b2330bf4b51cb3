"""Worker hosts as network namespaces: each has its own address on a veth pair to the root
namespace, where PostgreSQL and Redis listen, and runs real ``celery worker`` processes.

Layout of one run (names carry the pid, addresses one /24 of 10.0.0.0/8 no route uses yet)::

    root namespace                                  namespace aicmo<pid>h<i>
    127.0.0.1:5432 PostgreSQL  <- forwarder ->  10.A.B.(4i+1)  ==veth==  10.A.B.(4i+2) eth0
    127.0.0.1:6379 Redis       <- forwarder ->    :5432 :6379              celery worker -c 2
    effect receiver (HTTP)        on the same address, :8089

The shared services are not touched: each host reaches them through a TCP forwarder process
(tests/support/hostproxy.py) bound to its root-side veth address, so a fault on the link
is a fault between that host and the services: a partition is the link going down (packets
vanish both ways, no connection is closed); a slow, lossy link is made by the forwarder, as
this kernel has no ``sch_netem`` for ``tc netem`` (see hostproxy.Shape).
Everything is removed in :meth:`HostNet.close`, also registered with ``atexit``, so a failing
or interrupted test leaves no namespace, link or process behind.
"""

from __future__ import annotations

import atexit
import contextlib
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from tests.support.host_actions import ACTION_MODULES, EFFECT_URL_ENV, HOST_NAME_ENV
from tests.support.processes import ROOT, CeleryProcess, wait_for, worker

EFFECT_PORT = 8089
FAKETIME = shutil.which("faketime") or "/usr/bin/faketime"


class HostsUnavailable(RuntimeError):
    """``ip netns`` (or ``tc``) does not work here: the host tests cannot run."""


def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(args, capture_output=True, text=True, timeout=30)
    if check and done.returncode:
        raise HostsUnavailable(
            f"{' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}"
        )
    return done


def check_netns(prefix: str) -> None:
    """Make and remove one namespace with a veth pair: loud if any step fails."""
    if shutil.which("ip") is None:
        raise HostsUnavailable("`ip` not found (Debian package iproute2)")
    probe = f"{prefix}probe"
    try:
        _run("ip", "netns", "add", probe)
        _run("ip", "-n", probe, "link", "add", "p0", "type", "veth", "peer", "name", "p1")
        _run("ip", "-n", probe, "link", "set", "p0", "up")
    finally:
        _run("ip", "netns", "del", probe, check=False)


def free_subnet(pid: int) -> ipaddress.IPv4Network:
    """A /24 of 10.0.0.0/8 that no address or route here uses, picked from the pid."""
    used = _run("ip", "-4", "-o", "addr").stdout + _run("ip", "-4", "route").stdout
    for step in range(256 * 50):
        n = (pid + step * 7919) % (256 * 50)
        net = ipaddress.IPv4Network(f"10.{200 + n // 256}.{n % 256}.0/24")
        if f"10.{200 + n // 256}.{n % 256}." not in used:
            return net
    raise HostsUnavailable("no free /24 in 10.200.0.0-10.249.255.0")


class EffectReceiver:
    """The "external provider": counts every POST by idempotency key (and by host)."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.by_host: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.servers: list[ThreadingHTTPServer] = []

    def listen(self, address: str) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver.lock:
                    receiver.calls[self.headers.get("Idempotency-Key", "")] += 1
                    receiver.by_host[self.headers.get("X-Host", "")] += 1
                # No body: a body written after the headers waits for the client's delayed
                # ACK (Nagle), 40 ms a call.
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        server = ThreadingHTTPServer((address, EFFECT_PORT), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self.servers.append(server)

    def duplicated(self) -> int:
        """Calls beyond the first per key: at-least-once external effects, documented."""
        with self.lock:
            return sum(n - 1 for n in self.calls.values() if n > 1)

    def total(self) -> int:
        with self.lock:
            return sum(self.calls.values())

    def close(self) -> None:
        for server in self.servers:
            server.shutdown()
            server.server_close()


@dataclass
class Host:
    """One worker host: a namespace, its veth pair, its forwarder, its workers."""

    name: str
    netns: str
    root_if: str
    address: str
    gateway: str
    stats_path: Path
    env: dict[str, str]
    workers: list[CeleryProcess] = field(default_factory=list)

    def exec_prefix(self, faketime: str | None = None) -> list[str]:
        prefix = ["ip", "netns", "exec", self.netns]
        return [*prefix, FAKETIME, "-f", faketime] if faketime else prefix

    def worker(
        self,
        log_dir: Path,
        concurrency: int = 2,
        queues: str = "hosts",
        faketime: str | None = None,
        extra: Sequence[str] = (),
    ) -> CeleryProcess:
        """Start a real ``celery worker -c N`` inside this host (under faketime if given)."""
        process = worker(
            log_dir,
            concurrency=concurrency,
            env=self.env,
            extra=["-Q", queues, *extra],
            prefix=self.exec_prefix(faketime),
        )
        self.workers.append(process)
        process.start()
        return process

    # -- the link ------------------------------------------------------------------------

    def partition(self) -> None:
        """The link goes down (its root end): every packet either way vanishes, and no
        connection is closed; the host keeps its address and routes, and hears nothing."""
        _run("ip", "link", "set", self.root_if, "down")

    def heal(self) -> None:
        _run("ip", "link", "set", self.root_if, "up")

    def degrade(self, delay_ms: float, jitter_ms: float, loss_percent: float) -> None:
        """A slow, lossy link for what this host sends (netem's ``delay D J loss L`` on its
        interface). Made by its forwarder: this kernel has no netem (see hostproxy.Shape)."""
        shape = {"delay_ms": delay_ms, "jitter_ms": jitter_ms, "loss": loss_percent}
        path = Path(f"{self.stats_path}.shape")
        path.with_suffix(".tmp").write_text(json.dumps(shape))
        path.with_suffix(".tmp").replace(path)
        # The forwarder re-reads it within 0.1 s.
        time.sleep(0.3)

    def late_tokens(self, since: float) -> set[str]:
        """Fencing tokens this host sent to PostgreSQL at or after ``since`` (time.time())."""
        found: set[str] = set()
        with contextlib.suppress(FileNotFoundError), self.stats_path.open() as lines:
            for line in lines:
                seen = json.loads(line)
                if seen["t"] >= since:
                    found.add(seen["token"])
        return found


class HostNet:
    """The hosts of one test, made and torn down together."""

    def __init__(self, database_url: str, broker_url: str, run_dir: Path) -> None:
        self.pid = os.getpid()
        # Interface names have 15 characters at most: "ah" + 6 digits + "r" + index.
        self.tag = f"{self.pid % 1_000_000:06d}"
        self.prefix = f"aicmo{self.tag}h"
        self.database_url = database_url
        self.broker_url = broker_url
        self.run_dir = run_dir
        self.hosts: list[Host] = []
        self.receiver = EffectReceiver()
        self._forwarders: list[subprocess.Popen[bytes]] = []
        self._subnet: ipaddress.IPv4Network | None = None
        self._closed = False
        atexit.register(self.close)

    def _upstreams(self) -> tuple[tuple[str, int], tuple[str, int]]:
        db, broker = make_url(self.database_url), make_url(self.broker_url)
        return (db.host or "127.0.0.1", db.port or 5432), (
            broker.host or "127.0.0.1",
            broker.port or 6379,
        )

    def add(self, count: int = 1) -> list[Host]:
        if self._subnet is None:
            check_netns(self.prefix)
            self._subnet = free_subnet(self.pid)
        made = []
        for _ in range(count):
            made.append(self._add_one(len(self.hosts)))
        return made

    def _add_one(self, index: int) -> Host:
        assert self._subnet is not None
        base = int(self._subnet.network_address) + 4 * index
        gateway, address = (
            str(ipaddress.IPv4Address(base + 1)),
            str(ipaddress.IPv4Address(base + 2)),
        )
        netns, root_if, ns_if = (
            f"{self.prefix}{index}",
            f"ah{self.tag}r{index}",
            f"ah{self.tag}n{index}",
        )
        name = f"host{index}"
        stats = self.run_dir / f"{netns}-tokens.jsonl"
        host = Host(name, netns, root_if, address, gateway, stats, {})
        self.hosts.append(host)  # before any step: close() removes whatever was made
        _run("ip", "netns", "add", netns)
        _run("ip", "link", "add", root_if, "type", "veth", "peer", "name", ns_if)
        _run("ip", "link", "set", ns_if, "netns", netns)
        _run("ip", "addr", "add", f"{gateway}/30", "dev", root_if)
        _run("ip", "link", "set", root_if, "up")
        inside = ["ip", "-n", netns]
        _run(*inside, "link", "set", ns_if, "name", "eth0")
        _run(*inside, "addr", "add", f"{address}/30", "dev", "eth0")
        _run(*inside, "link", "set", "eth0", "up")
        _run(*inside, "link", "set", "lo", "up")
        (pg_host, pg_port), (redis_host, redis_port) = self._upstreams()
        forwarder = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.support.hostproxy",
                str(stats),
                gateway,
                f"5432={pg_host}:{pg_port}",
                f"6379={redis_host}:{redis_port}",
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=(self.run_dir / f"{netns}-forwarder.log").open("ab"),
            start_new_session=True,
        )
        self._forwarders.append(forwarder)
        assert forwarder.stdout is not None
        if forwarder.stdout.readline().strip() != b"forwarding":
            raise HostsUnavailable(f"the forwarder of {netns} did not start")
        self.receiver.listen(gateway)
        db = make_url(self.database_url).set(host=gateway, port=5432)
        broker = make_url(self.broker_url).set(host=gateway, port=6379)
        host.env.update(
            {
                "AICMO_DATABASE_URL": db.render_as_string(hide_password=False),
                "AICMO_BROKER_URL": broker.render_as_string(hide_password=False),
                "AICMO_ACTION_MODULES": ACTION_MODULES,
                EFFECT_URL_ENV: f"http://{gateway}:{EFFECT_PORT}",
                HOST_NAME_ENV: name,
            }
        )
        return host

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        keep = os.environ.get("AICMO_TEST_KEEP_HOST_LOGS")
        if keep:  # the run's tmp dir is removed at exit: copy what explains a failure
            Path(keep).mkdir(parents=True, exist_ok=True)
            for process in [p for h in self.hosts for p in h.workers]:
                with contextlib.suppress(OSError):
                    shutil.copy(process.log_path, keep)
            for path in self.run_dir.glob(f"{self.prefix}*"):
                with contextlib.suppress(OSError):
                    shutil.copy(path, keep)
        for host in self.hosts:
            for process in host.workers:
                with contextlib.suppress(Exception):
                    process.stop(timeout=5)
            # Whatever else still runs in the namespace (a faketime child, a stray sweeper).
            pids = _run("ip", "netns", "pids", host.netns, check=False).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            _run("ip", "netns", "del", host.netns, check=False)  # takes the veth pair with it
            _run("ip", "link", "del", host.root_if, check=False)
        for forwarder in self._forwarders:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(forwarder.pid, signal.SIGKILL)
            with contextlib.suppress(Exception):
                forwarder.wait(timeout=5)
        self.receiver.close()
        atexit.unregister(self.close)

    def leftovers(self) -> list[str]:
        """Namespaces or links of this run still present (a teardown check)."""
        names = (
            _run("ip", "netns", "list", check=False).stdout
            + _run("ip", "-o", "link", check=False).stdout
        )
        return [n for n in (h.netns for h in self.hosts) if n in names] + [
            i for i in (h.root_if for h in self.hosts) if f" {i}@" in names or f" {i}:" in names
        ]


def wait_workers_ready(hosts: Sequence[Host]) -> None:
    for host in hosts:
        for process in host.workers:
            wait_for(process.alive, 5, message=f"a worker of {host.name}")
