"""A real `aicmo serve` process for the web tests, and clients that log in to it."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx

from tests.support.processes import ROOT, wait_for

WEBHOOK_SECRET = "whsec-test-0123456789"
PASSWORD = "correct horse battery"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class WebServer:
    """``aicmo serve`` in its own process group, logging to a file."""

    def __init__(self, log_dir: Path, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_dir / f"web-{uuid.uuid4().hex[:8]}.log"
        self.env = {
            **os.environ,
            "AICMO_CAM_WEBHOOK_SECRETS": f'{{"form": "{WEBHOOK_SECRET}"}}',
            "AICMO_WEB_SECRET_KEY": "test-session-key-" + uuid.uuid4().hex,
            **(env or {}),
        }
        self.env["PYTHONPATH"] = os.pathsep.join(
            [str(ROOT), *filter(None, [self.env.get("PYTHONPATH")])]
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> WebServer:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log_file:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "aicmo.cli", "serve", "--port", str(self.port)],
                cwd=ROOT,
                env=self.env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_for(self._up, timeout, interval=0.1, message=f"aicmo serve ({self.log_path})")
        return self

    def _up(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"aicmo serve exited {self.proc.returncode}:\n{self.log()}")
        try:
            return httpx.get(self.url + "/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


def make_user(role: str, prefix: str = "u") -> str:
    from aicmo.ops.users import add_user

    name = f"{prefix}-{role}-{uuid.uuid4().hex[:6]}"
    add_user(name, role, PASSWORD, by="test")
    return name


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, "no CSRF token on the page"
    return found.group(1)


class Browser:
    """An httpx client with the console's cookies, as a person's browser would hold them."""

    def __init__(self, server: WebServer) -> None:
        self.client = httpx.Client(base_url=server.url, follow_redirects=False, timeout=30)

    def login(self, name: str, password: str = PASSWORD) -> httpx.Response:
        token = csrf_of(self.client.get("/login").text)
        return self.client.post(
            "/login", data={"csrf_token": token, "name": name, "password": password, "next": "/"}
        )

    def csrf(self, path: str = "/") -> str:
        return csrf_of(self.client.get(path).text)

    def post(self, path: str, data: dict[str, Any] | None = None, **kwargs: Any) -> httpx.Response:
        return self.client.post(path, data={"csrf_token": self.csrf(), **(data or {})}, **kwargs)

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.client.get(path, **kwargs)
