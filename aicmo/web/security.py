"""Who is asking, and may they: signed session cookies, API tokens, CSRF and roles.

* A session is a cookie signed with itsdangerous (HttpOnly, SameSite=Lax, Secure when the
  request came over https or AICMO_WEB_SECURE_COOKIES=always) holding the user id and the
  session's CSRF token; the user is re-read from the database on every request, so a
  disabled user is out at once.
* An API token (``Authorization: Bearer aicmo_...``) stands for its user; it is never sent
  by a browser on its own, so token requests need no CSRF token.
* Every state-changing request made with a session must carry the session's CSRF token
  (form field ``csrf_token`` or header ``X-CSRF-Token``), compared in constant time.
* Roles are checked here, on the server, by the route's dependency (``require(Role.X)``).
"""

from __future__ import annotations

import hmac
import os
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import Depends, Request
from itsdangerous import BadSignature, URLSafeTimedSerializer

from aicmo.config import get_settings
from aicmo.ops.users import Role, User, active_user, user_for_token

SESSION_COOKIE = "aicmo_session"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class NotAuthenticated(Exception):
    """No valid session or token: pages redirect to the login, the API answers 401."""


class Forbidden(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class CsrfRefused(Exception):
    """A state-changing request with a session but without its CSRF token."""


_key_lock = threading.Lock()


def secret_key() -> str:
    settings = get_settings()
    if settings.web_secret_key is not None:
        return settings.web_secret_key.get_secret_value()
    path: Path = settings.web_secret_file
    with _key_lock:
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            # O_EXCL: two processes starting together cannot write two different keys.
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                pass
            else:
                with os.fdopen(fd, "w") as handle:
                    handle.write(secrets.token_urlsafe(48))
        for _ in range(50):  # another process may be between O_EXCL and its write
            key = path.read_text().strip()
            if key:
                return key
            time.sleep(0.02)
        raise RuntimeError(f"{path} holds no session key")


def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(secret_key(), salt="aicmo-session")


@dataclass
class WebSession:
    csrf: str
    user_id: int | None = None
    version: str = ""  # the user's session_version at login
    changed: bool = False


def read_session(request: Request) -> WebSession:
    cached = getattr(request.state, "web_session", None)
    if isinstance(cached, WebSession):
        return cached
    found: WebSession | None = None
    raw = request.cookies.get(SESSION_COOKIE)
    if raw:
        try:
            data = _serializer().loads(raw, max_age=get_settings().web_session_max_age_seconds)
            if isinstance(data, dict) and isinstance(data.get("csrf"), str):
                uid, version = data.get("uid"), data.get("v")
                found = WebSession(
                    csrf=data["csrf"],
                    user_id=uid if isinstance(uid, int) else None,
                    version=version if isinstance(version, str) else "",
                )
        except (BadSignature, ValueError, TypeError):
            found = None
    if found is None:
        found = WebSession(csrf=secrets.token_urlsafe(32), changed=True)
    request.state.web_session = found
    return found


def start_session(request: Request, user: User) -> WebSession:
    """A fresh session (new CSRF token) for a user who just logged in: never reuse the
    anonymous one (session fixation)."""
    session = WebSession(
        csrf=secrets.token_urlsafe(32),
        user_id=user.id,
        version=user.session_version,
        changed=True,
    )
    request.state.web_session = session
    return session


def end_session(request: Request) -> None:
    request.state.web_session = WebSession(csrf=secrets.token_urlsafe(32), changed=True)


def cookie_secure(request: Request) -> bool:
    mode = get_settings().web_secure_cookies
    return mode == "always" or (mode == "auto" and request.url.scheme == "https")


def write_session_cookie(request: Request, response: Any) -> None:
    session = getattr(request.state, "web_session", None)
    if not isinstance(session, WebSession) or not session.changed:
        return
    value = _serializer().dumps(
        {"uid": session.user_id, "v": session.version, "csrf": session.csrf}
    )
    response.set_cookie(
        SESSION_COOKIE,
        value,
        max_age=get_settings().web_session_max_age_seconds,
        httponly=True,
        samesite="lax",
        secure=cookie_secure(request),
        path="/",
    )


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


async def check_csrf(request: Request, session: WebSession) -> None:
    supplied = request.headers.get(CSRF_HEADER)
    if supplied is None and request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        form = await request.form()
        value = form.get(CSRF_FIELD)
        supplied = value if isinstance(value, str) else None
    if not supplied or not hmac.compare_digest(supplied.encode(), session.csrf.encode()):
        raise CsrfRefused()


async def current_user(request: Request) -> User:
    """The caller, or NotAuthenticated; CSRF is checked here for session-made changes."""
    cached = getattr(request.state, "user", None)
    if isinstance(cached, User):
        return cached
    token = _bearer(request)
    if token is not None:
        user = user_for_token(token)
        if user is None:
            raise NotAuthenticated()
        request.state.user = user
        return user
    session = read_session(request)
    if session.user_id is None:
        raise NotAuthenticated()
    found = active_user(session.user_id)
    if found is None or not hmac.compare_digest(found.session_version, session.version):
        end_session(request)
        raise NotAuthenticated()
    if request.method not in SAFE_METHODS:
        await check_csrf(request, session)
    request.state.user = found
    return found


def require(role: Role) -> Callable[..., Coroutine[Any, Any, User]]:
    async def dependency(user: User = Depends(current_user)) -> User:  # noqa: B008
        if not user.allows(role):
            raise Forbidden(f"{user.name} is a {user.role.value}; this needs {role.value} or above")
        return user

    return dependency


class SlidingWindow:
    """At most ``limit`` events per ``window`` seconds per key, in this process (the
    per-user lockout in the database is what holds across processes)."""

    def __init__(self, limit: int, window: float = 60.0, max_keys: int = 10_000) -> None:
        self.limit, self.window, self.max_keys = limit, window, max_keys
        self._events: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def allow(self, key: str) -> bool:
        now = time.monotonic()
        with self._lock:
            if len(self._events) > self.max_keys:
                cutoff = now - self.window
                self._events = {k: v for k, v in self._events.items() if v and v[-1] > cutoff}
            events = self._events.setdefault(key, deque())
            while events and events[0] <= now - self.window:
                events.popleft()
            if len(events) >= self.limit:
                return False
            events.append(now)
            return True
