"""People and scripts that may use the console and the JSON API.

Users have one role each; a role includes the ones below it:
viewer (read) < reviewer (approve/reject messages) < operator (replay, cancel, pause,
campaign state, kill switch) < admin (users and tokens). Passwords are argon2id hashes
(argon2-cffi); API tokens are random 256-bit strings stored as SHA-256 digests (a token is
high-entropy, so a fast hash is enough and lets a lookup use the unique index). Failed
logins lock a user out for a while, timed by the database clock.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import BigInteger, Boolean, ForeignKey, Integer, String, Text, func, select, text
from sqlalchemy.orm import Mapped, Session, mapped_column

from aicmo.config import get_settings
from aicmo.db import Base, UTCDateTime, session_scope, utcnow
from aicmo.orchestration.errors import AOLError

BigIntId = BigInteger().with_variant(Integer(), "sqlite")
TOKEN_PREFIX = "aicmo_"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
MIN_PASSWORD_LENGTH = 10
MAX_LOCKOUT_SECONDS = 3600.0


class Role(StrEnum):
    VIEWER = "viewer"
    REVIEWER = "reviewer"
    OPERATOR = "operator"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return ROLES.index(self)

    def allows(self, needed: Role) -> bool:
        return self.rank >= needed.rank


ROLES = [Role.VIEWER, Role.REVIEWER, Role.OPERATOR, Role.ADMIN]


class UserError(AOLError):
    """A user operation that cannot be done (bad name, weak password, unknown user)."""


class LoginRefused(UserError):
    """Wrong name or password, a disabled user, or a lockout (one message for all)."""


class WebUser(Base):
    __tablename__ = "web_users"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str] = mapped_column(Text)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    failed_logins: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    lockouts: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    locked_until_utc: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_login_at_utc: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_by: Mapped[str | None] = mapped_column(String(128))
    created_at_utc: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at_utc: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class WebApiToken(Base):
    __tablename__ = "web_api_tokens"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("web_users.id", ondelete="CASCADE"), index=True
    )
    label: Mapped[str] = mapped_column(String(128))
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at_utc: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_used_at_utc: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at_utc: Mapped[datetime | None] = mapped_column(UTCDateTime())


@dataclass(frozen=True)
class User:
    id: int
    name: str
    role: Role
    # Changes with the password: a session made before a password change stops counting.
    session_version: str = ""

    def allows(self, needed: Role) -> bool:
        return self.role.allows(needed)

    @property
    def actor(self) -> str:
        """How state changes record this user (execution log worker, message reviewer)."""
        return f"web:{self.name}"


_hasher = PasswordHasher()
# Verified when the name is unknown, so a wrong name costs as long as a wrong password.
_DUMMY_HASH = _hasher.hash(secrets.token_hex(16))


def _user(row: WebUser) -> User:
    version = hashlib.sha256(row.password_hash.encode()).hexdigest()[:16]
    return User(row.id, row.name, Role(row.role), version)


def user_dict(row: WebUser) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "role": row.role,
        "disabled": row.disabled,
        "locked_until_utc": row.locked_until_utc.isoformat() if row.locked_until_utc else None,
        "last_login_at_utc": row.last_login_at_utc.isoformat() if row.last_login_at_utc else None,
        "created_by": row.created_by,
        "created_at_utc": row.created_at_utc.isoformat(),
    }


def _check_name(name: str) -> str:
    name = (name or "").strip()
    if not NAME_PATTERN.match(name):
        raise UserError(f"user name {name!r} must be 1-64 letters, digits or _ . @ -")
    return name


def _check_password(password: str) -> str:
    if len(password or "") < MIN_PASSWORD_LENGTH:
        raise UserError(f"the password must be at least {MIN_PASSWORD_LENGTH} characters")
    return password


def parse_role(role: str) -> Role:
    try:
        return Role(role.strip().lower())
    except ValueError:
        raise UserError(f"role {role!r} is not one of {', '.join(ROLES)}") from None


def _get(session: Session, name: str, lock: bool = False) -> WebUser:
    query = select(WebUser).where(WebUser.name == name)
    if lock:
        query = query.with_for_update()
    row = session.scalars(query.execution_options(populate_existing=True)).first()
    if row is None:
        raise UserError(f"no user named {name!r}")
    return row


def add_user(name: str, role: str, password: str, by: str) -> dict[str, Any]:
    name, wanted = _check_name(name), parse_role(role)
    digest = _hasher.hash(_check_password(password))
    with session_scope() as session:
        if session.scalar(select(WebUser.id).where(WebUser.name == name)) is not None:
            raise UserError(f"user {name!r} already exists")
        row = WebUser(name=name, role=wanted.value, password_hash=digest, created_by=by)
        session.add(row)
        session.flush()
        return user_dict(row)


def list_users() -> list[dict[str, Any]]:
    with session_scope() as session:
        return [user_dict(r) for r in session.scalars(select(WebUser).order_by(WebUser.name))]


def update_user(
    name: str,
    *,
    role: str | None = None,
    password: str | None = None,
    disabled: bool | None = None,
) -> dict[str, Any]:
    digest = _hasher.hash(_check_password(password)) if password is not None else None
    with session_scope() as session:
        row = _get(session, _check_name(name), lock=True)
        if role is not None:
            row.role = parse_role(role).value
        if digest is not None:
            row.password_hash = digest
            row.failed_logins, row.locked_until_utc = 0, None
        if disabled is not None:
            row.disabled = disabled
        row.updated_at_utc = utcnow()
        session.flush()
        return user_dict(row)


def _db_now(session: Session) -> datetime:
    """The database's clock: lockouts are compared across web processes on several hosts."""
    if session.get_bind().dialect.name == "postgresql":
        value = session.scalar(select(func.now()))
        if isinstance(value, datetime):
            return value
    return utcnow()


def authenticate(name: str, password: str) -> User:
    """The user, or :class:`LoginRefused` (the same message whatever went wrong)."""
    settings = get_settings()
    refused = LoginRefused("wrong user name or password, or the account is locked")
    if not NAME_PATTERN.match(name or "") or not password or len(password) > 1024:
        _verify(_DUMMY_HASH, password or "x")
        raise refused
    with session_scope() as session:
        row = session.scalars(select(WebUser).where(WebUser.name == name).with_for_update()).first()
        now = _db_now(session)
        if row is None:
            _verify(_DUMMY_HASH, password)
            raise refused
        if row.locked_until_utc is not None and row.locked_until_utc > now:
            raise refused
        ok = _verify(row.password_hash, password)
        if not ok or row.disabled:
            row.failed_logins += 1
            if row.failed_logins >= settings.web_login_max_failures:
                seconds = min(
                    settings.web_login_lockout_seconds * 2**row.lockouts, MAX_LOCKOUT_SECONDS
                )
                row.locked_until_utc = now + timedelta(seconds=seconds)
                row.lockouts += 1
                row.failed_logins = 0
            row.updated_at_utc = now
    if not ok or row.disabled:
        raise refused
    with session_scope() as session:
        found = _get(session, name, lock=True)
        found.failed_logins, found.lockouts, found.locked_until_utc = 0, 0, None
        found.last_login_at_utc = now
        if _hasher.check_needs_rehash(found.password_hash):
            found.password_hash = _hasher.hash(password)
        return _user(found)


def _verify(digest: str, password: str) -> bool:
    try:
        return _hasher.verify(digest, password)
    except (VerificationError, InvalidHashError):
        return False


def active_user(user_id: int) -> User | None:
    """The user behind a session, or None when it was removed or disabled since."""
    with session_scope() as session:
        row = session.get(WebUser, user_id)
        if row is None or row.disabled:
            return None
        return _user(row)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(name: str, label: str) -> str:
    """A new API token for the user; only its digest is stored, so it is shown once."""
    label = (label or "").strip()[:128] or "token"
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with session_scope() as session:
        row = _get(session, _check_name(name))
        session.add(WebApiToken(user_id=row.id, label=label, token_sha256=_digest(token)))
    return token


def revoke_tokens(name: str) -> int:
    with session_scope() as session:
        row = _get(session, _check_name(name))
        tokens = list(
            session.scalars(
                select(WebApiToken).where(
                    WebApiToken.user_id == row.id, WebApiToken.revoked_at_utc.is_(None)
                )
            )
        )
        for token in tokens:
            token.revoked_at_utc = utcnow()
        return len(tokens)


def user_for_token(token: str) -> User | None:
    if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    with session_scope() as session:
        found = session.execute(
            select(WebApiToken, WebUser)
            .join(WebUser, WebUser.id == WebApiToken.user_id)
            .where(WebApiToken.token_sha256 == _digest(token))
        ).first()
        if found is None:
            return None
        row, user = found
        if row.revoked_at_utc is not None or user.disabled:
            return None
        now = utcnow()
        # At most one write a minute per token, not one per request.
        if row.last_used_at_utc is None or now - row.last_used_at_utc > timedelta(minutes=1):
            row.last_used_at_utc = now
        return _user(user)
