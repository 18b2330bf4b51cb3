"""A Redis primary, one replica and three ``redis-sentinel`` processes (Debian's packages) on
free ports of 127.0.0.1, files under a temporary folder, torn down by :meth:`stop`.

The sentinels judge a primary down after ``down_after_ms`` without an answer (kept small so a
failover takes a couple of seconds, not the default 30) and need two of three to agree.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from tests.support.pgbouncer import free_port

MASTER_NAME = "aicmo-test"


def _wait(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if predicate():  # type: ignore[operator]
                return
        except redis.RedisError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


class SentinelGroup:
    def __init__(self, down_after_ms: int = 1000, failover_timeout_ms: int = 5000) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="aicmo-sentinel-"))
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.primary_port = free_port()
        self.replica_port = free_port()
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def broker_url(self) -> str:
        """The kombu form: every sentinel, ``;``-separated (db 0 of the primary)."""
        return ";".join(f"sentinel://127.0.0.1:{port}" for port in self.sentinel_ports)

    def _spawn(self, port: int, args: list[str]) -> None:
        log = (self.dir / f"{port}.log").open("ab")
        self.procs[port] = subprocess.Popen(
            args, cwd=self.dir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()

    def _redis(self, port: int) -> None:
        args = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        args += ["--appendonly", "no", "--dir", str(self.dir), "--dbfilename", f"{port}.rdb"]
        if port == self.replica_port:
            args += ["--replicaof", "127.0.0.1", str(self.primary_port)]
        self._spawn(port, args)

    @staticmethod
    def _myid(port: int) -> str:
        return f"{port:040x}"

    def _sentinel(self, port: int) -> None:
        conf = self.dir / f"sentinel-{port}.conf"  # sentinels rewrite their file: a copy each
        # Told of each other and of the replica up front: discovering them (hello messages
        # every 2 s, INFO every 10 s) would cost ten seconds per run.
        peers = [
            f"sentinel known-sentinel {MASTER_NAME} 127.0.0.1 {other} {self._myid(other)}"
            for other in self.sentinel_ports
            if other != port
        ]
        conf.write_text(
            "\n".join(
                [
                    f"port {port}",
                    f"sentinel myid {self._myid(port)}",
                    "bind 127.0.0.1",
                    f"dir {self.dir}",
                    f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.primary_port} 2",
                    f"sentinel down-after-milliseconds {MASTER_NAME} {self.down_after_ms}",
                    f"sentinel failover-timeout {MASTER_NAME} {self.failover_timeout_ms}",
                    f"sentinel parallel-syncs {MASTER_NAME} 1",
                    f"sentinel known-replica {MASTER_NAME} 127.0.0.1 {self.replica_port}",
                    *peers,
                    "",
                ]
            )
        )
        self._spawn(port, ["redis-sentinel", str(conf)])

    def client(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, socket_timeout=2, socket_connect_timeout=2)

    def start(self, timeout: float = 30.0) -> SentinelGroup:
        self._redis(self.primary_port)
        self._redis(self.replica_port)
        for port in self.sentinel_ports:
            self._sentinel(port)
        replica = self.client(self.replica_port)
        _wait(
            lambda: replica.info("replication").get("master_link_status") == "up",
            timeout,
            "the replica to sync",
        )
        # Every sentinel must know the replica and the two other sentinels (they find each
        # other through hello messages every 2 s), or a failover cannot be authorised.
        for port in self.sentinel_ports:
            sentinel = self.client(port)
            _wait(
                lambda s=sentinel: (
                    len(s.sentinel_sentinels(MASTER_NAME)) == 2
                    and len(s.sentinel_slaves(MASTER_NAME)) == 1
                ),
                timeout,
                f"sentinel {port} to see its peers and the replica",
            )
        return self

    def master_port(self) -> int:
        """Where the sentinels say the primary is now."""
        host_port = self.client(self.sentinel_ports[0]).sentinel_get_master_addr_by_name(
            MASTER_NAME
        )
        return int(host_port[1])

    def kill_primary(self) -> None:
        """SIGKILL the primary: what it had not yet sent to the replica is gone."""
        proc = self.procs[self.primary_port]
        proc.kill()
        proc.wait(timeout=10)

    def wait_promoted(self, timeout: float = 30.0) -> float:
        """Seconds until every sentinel names the replica as the primary and it says so."""
        started = time.monotonic()
        replica = self.client(self.replica_port)
        _wait(
            lambda: (
                all(
                    int(self.client(p).sentinel_get_master_addr_by_name(MASTER_NAME)[1])
                    == self.replica_port
                    for p in self.sentinel_ports
                )
                and replica.info("replication")["role"] == "master"
            ),
            timeout,
            "the sentinels to promote the replica",
        )
        return time.monotonic() - started

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)

    def logs(self) -> str:
        return "\n".join(
            f"--- {path.name}\n{path.read_text(errors='replace')[-2000:]}"
            for path in sorted(self.dir.glob("*.log"))
        )
