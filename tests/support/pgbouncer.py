"""A real PgBouncer (Debian's ``pgbouncer``) in transaction pooling, in front of the test
PostgreSQL, on a free port of 127.0.0.1, with its files under a temporary folder.

``server_round_robin`` makes PgBouncer hand each transaction the next server connection
instead of the last used one, and ``min_pool_size`` keeps several of them open: consecutive
transactions of one client land on different PostgreSQL sessions, so any reliance on session
state (a prepared statement, a SET, an advisory lock) breaks at once instead of by luck.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

# PgBouncer refuses to run as root; it drops to this user (the files must be its).
RUN_AS = "postgres"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PgBouncer:
    def __init__(
        self,
        upstream: tuple[str, int] = ("127.0.0.1", 5432),
        pool_size: int = 20,
        min_pool_size: int = 4,
    ) -> None:
        self.upstream = upstream
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="aicmo-pgbouncer-"))
        self.ini = self.dir / "pgbouncer.ini"
        self.log_path = self.dir / "pgbouncer.log"
        self.proc: subprocess.Popen[bytes] | None = None
        users = self.dir / "users.txt"
        # auth_type trust still needs the user listed (auth_file); no password is checked.
        users.write_text('"postgres" ""\n')
        self.ini.write_text(
            "\n".join(
                [
                    "[databases]",
                    f"* = host={upstream[0]} port={upstream[1]}",
                    "[pgbouncer]",
                    "listen_addr = 127.0.0.1",
                    f"listen_port = {self.port}",
                    "unix_socket_dir =",
                    "auth_type = trust",
                    f"auth_file = {users}",
                    "pool_mode = transaction",
                    "max_client_conn = 1000",
                    f"default_pool_size = {pool_size}",
                    f"min_pool_size = {min_pool_size}",
                    "server_round_robin = 1",
                    # psycopg and SQLAlchemy send these at connect; PgBouncer would refuse
                    # an unknown startup parameter.
                    "ignore_startup_parameters = extra_float_digits,options",
                    f"logfile = {self.log_path}",
                    f"pidfile = {self.dir / 'pgbouncer.pid'}",
                    "admin_users = postgres",
                    "",
                ]
            )
        )
        self._chown()

    def _chown(self) -> None:
        if os.geteuid() != 0:
            return
        user = pwd.getpwnam(RUN_AS)
        for path in (self.dir, *self.dir.iterdir()):
            os.chown(path, user.pw_uid, user.pw_gid)

    def url(self, database: str, driver: str = "postgresql+psycopg") -> str:
        return f"{driver}://postgres@127.0.0.1:{self.port}/{database}"

    def start(self, timeout: float = 15.0) -> PgBouncer:
        command = ["pgbouncer", str(self.ini)]
        if os.geteuid() == 0:
            command[1:1] = ["-u", RUN_AS]
        self.proc = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"pgbouncer exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with psycopg.connect(self.url("postgres", "postgresql"), connect_timeout=2) as c:
                    c.execute("SELECT 1")
                return self
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"pgbouncer did not answer:\n{self.log()}") from None
                time.sleep(0.05)

    def warm(self, database: str, sessions: int = 3) -> None:
        """Make PgBouncer open ``sessions`` server connections to ``database`` now (three
        clients in a transaction at once), so round robin has sessions to rotate over."""
        url = self.url(database, "postgresql")
        clients = [psycopg.connect(url) for _ in range(sessions)]
        try:
            for client in clients:
                client.execute("SELECT 1")  # each holds its server session: a transaction
            for client in clients:
                client.commit()  # a session left in a transaction would be closed, not pooled
        finally:
            for client in clients:
                client.close()

    def kill(self) -> None:
        """SIGKILL: every client and server connection is cut mid-whatever."""
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def restart(self) -> None:
        """Kill it and start it again on the same port (a crash and a supervisor's restart)."""
        self.kill()
        self.start()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except FileNotFoundError:
            return ""
