"""Social accounts: the ``social_accounts`` table and the store the native gateways use.

A row is one account on one platform, owned by a campaign or global (``campaign_id`` NULL).
Its secrets (tokens, app passwords, refresh tokens) live in ``credentials``, encrypted with
:mod:`aicmo.gateways.vault`; everything else (instance URL, author URN, user id) is plain.

The store opens its own short transactions, never the action's: an account flagged after an
auth failure stays flagged although the action's own writes roll back with its failure, and
no transaction is held while a gateway talks to a platform.

Token refresh takes a lease on the row (an atomic ``UPDATE .. WHERE version = :seen AND the
lease is free``), refreshes with no transaction open, and writes the new tokens guarded by the
lease's token. Two workers never refresh at once: the loser waits for the new version (a
platform that rotates refresh tokens, like Bluesky or X, would revoke the second use).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Engine,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.orm import Mapped, Session, mapped_column

from aicmo.db import Base, JSONType, UTCDateTime, utcnow
from aicmo.gateways.vault import Vault
from aicmo.orchestration.errors import PermanentError
from aicmo.orchestration.models import BigIntId
from aicmo.orchestration.redaction import redact

MAX_ERROR_CHARS = 1000


class AccountStatus(StrEnum):
    ACTIVE = "ACTIVE"
    AUTH_FAILED = "AUTH_FAILED"  # the platform refused the credentials: re-add them
    DISABLED = "DISABLED"


class SocialAccount(Base):
    __tablename__ = "social_accounts"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    platform: Mapped[str] = mapped_column(String(32))
    handle: Mapped[str] = mapped_column(String(320))
    campaign_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("cam_campaigns.id", ondelete="CASCADE")
    )
    base_url: Mapped[str] = mapped_column(String(500))
    # Not secret: author URN, user id, DID, OAuth client id, token URL.
    config: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    credentials: Mapped[str] = mapped_column(Text)  # Fernet token of a JSON object
    credentials_version: Mapped[int] = mapped_column(Integer, default=1)
    access_expires_at_utc: Mapped[datetime | None] = mapped_column(UTCDateTime())
    status: Mapped[str] = mapped_column(String(16), default=AccountStatus.ACTIVE)
    last_error: Mapped[str | None] = mapped_column(Text)
    refresh_holder: Mapped[str | None] = mapped_column(String(64))
    refresh_lease_until_utc: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_refreshed_at_utc: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at_utc: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at_utc: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    __table_args__ = (
        UniqueConstraint("platform", "handle", "campaign_id"),
        CheckConstraint("status IN ('ACTIVE', 'AUTH_FAILED', 'DISABLED')", name="status_valid"),
        Index("ix_social_accounts_platform_campaign_id", "platform", "campaign_id"),
    )

    def __repr__(self) -> str:  # never the credentials
        return f"<SocialAccount {self.id} {self.platform} {self.handle} {self.status}>"


class AccountUnusable(PermanentError):
    """The account exists but cannot post (flagged AUTH_FAILED, or disabled)."""


@dataclass(frozen=True)
class Account:
    """One account as a gateway sees it: decrypted, read in a short transaction."""

    id: int
    platform: str
    handle: str
    campaign_id: int | None
    base_url: str
    config: dict[str, Any]
    secrets: dict[str, Any]
    version: int
    access_expires_at: datetime | None
    status: str

    def __repr__(self) -> str:
        return f"Account({self.id}, {self.platform}, {self.handle})"


def db_now(session: Session) -> datetime:
    """The database's clock (PostgreSQL ``now()``); SQLite is one host, so its clock."""
    if session.get_bind().dialect.name == "postgresql":
        value: datetime = session.execute(text("SELECT now()")).scalar_one()
        return value
    return utcnow()


class AccountStore:
    def __init__(self, engine: Engine, vault: Vault) -> None:
        self.engine = engine
        self.vault = vault

    def _open(self, row: SocialAccount) -> Account:
        return Account(
            id=row.id,
            platform=row.platform,
            handle=row.handle,
            campaign_id=row.campaign_id,
            base_url=row.base_url,
            config=dict(row.config or {}),
            secrets=self.vault.decrypt(row.credentials),
            version=row.credentials_version,
            access_expires_at=row.access_expires_at_utc,
            status=row.status,
        )

    def find(self, platform: str, campaign_id: int | None) -> Account | None:
        """The campaign's own account for the platform, else the global one (oldest first).
        A flagged account is returned too: the caller refuses it with a clear message."""
        with Session(self.engine) as session, session.begin():
            query = select(SocialAccount).where(SocialAccount.platform == platform)
            if campaign_id is None:
                query = query.where(SocialAccount.campaign_id.is_(None))
            else:
                query = query.where(
                    or_(
                        SocialAccount.campaign_id == campaign_id,
                        SocialAccount.campaign_id.is_(None),
                    )
                )
            rows = list(session.scalars(query.order_by(SocialAccount.id)))
            if not rows:
                return None
            # The campaign's own account wins; ACTIVE before flagged.
            rows.sort(key=lambda r: (r.campaign_id is None, r.status != AccountStatus.ACTIVE))
            return self._open(rows[0])

    def load(self, account_id: int) -> Account:
        with Session(self.engine) as session, session.begin():
            row = session.get(SocialAccount, account_id)
            if row is None:
                raise AccountUnusable(f"social account {account_id} does not exist")
            return self._open(row)

    def flag_auth_failed(self, account_id: int, error: str) -> None:
        with Session(self.engine) as session, session.begin():
            session.execute(
                update(SocialAccount)
                .where(SocialAccount.id == account_id)
                .values(
                    status=AccountStatus.AUTH_FAILED,
                    last_error=redact(error)[:MAX_ERROR_CHARS],
                    updated_at_utc=db_now(session),
                )
            )

    def mark_ok(self, account_id: int) -> None:
        with Session(self.engine) as session, session.begin():
            session.execute(
                update(SocialAccount)
                .where(SocialAccount.id == account_id)
                .values(
                    status=AccountStatus.ACTIVE, last_error=None, updated_at_utc=db_now(session)
                )
            )

    # -- refresh under a lease -------------------------------------------------------------

    def claim_refresh(self, account_id: int, seen_version: int, lease_seconds: float) -> str | None:
        """The lease's token when this caller may refresh; None when another holds it or
        the credentials already moved past ``seen_version``."""
        token = uuid.uuid4().hex
        with Session(self.engine) as session, session.begin():
            now = db_now(session)
            claimed = session.execute(
                update(SocialAccount)
                .where(
                    SocialAccount.id == account_id,
                    SocialAccount.credentials_version == seen_version,
                    or_(
                        SocialAccount.refresh_lease_until_utc.is_(None),
                        SocialAccount.refresh_lease_until_utc < now,
                    ),
                )
                .values(
                    refresh_holder=token,
                    refresh_lease_until_utc=now + timedelta(seconds=lease_seconds),
                )
                .execution_options(synchronize_session=False)
            )
            return token if claimed.rowcount == 1 else None  # type: ignore[attr-defined]

    def finish_refresh(
        self,
        account_id: int,
        token: str,
        secrets: dict[str, Any],
        access_expires_at: datetime | None,
        config: dict[str, Any] | None = None,
    ) -> bool:
        """Store the new tokens (a new version) if this caller still holds the lease."""
        values: dict[str, Any] = {
            "credentials": self.vault.encrypt(secrets),
            "credentials_version": SocialAccount.credentials_version + 1,
            "access_expires_at_utc": access_expires_at,
            "refresh_holder": None,
            "refresh_lease_until_utc": None,
        }
        if config is not None:
            values["config"] = config
        with Session(self.engine) as session, session.begin():
            now = db_now(session)
            done = session.execute(
                update(SocialAccount)
                .where(SocialAccount.id == account_id, SocialAccount.refresh_holder == token)
                .values(**values, last_refreshed_at_utc=now, updated_at_utc=now)
                .execution_options(synchronize_session=False)
            )
            return done.rowcount == 1  # type: ignore[attr-defined]

    def release_refresh(self, account_id: int, token: str) -> None:
        with Session(self.engine) as session, session.begin():
            session.execute(
                update(SocialAccount)
                .where(SocialAccount.id == account_id, SocialAccount.refresh_holder == token)
                .values(refresh_holder=None, refresh_lease_until_utc=None)
                .execution_options(synchronize_session=False)
            )

    def wait_for_version(
        self, account_id: int, seen_version: int, timeout: float
    ) -> Account | None:
        """The account once its credentials moved past ``seen_version`` (another worker's
        refresh), or None after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            account = self.load(account_id)
            if account.version > seen_version or account.status != AccountStatus.ACTIVE:
                return account
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.1)
