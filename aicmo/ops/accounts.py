"""Social accounts, as every face (``aicmo accounts``, the console) manages them.

Secrets go in through :class:`AccountSpec` and come out nowhere: listings show the platform,
handle, owner, status and last error (already redacted), never a credential.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)
from sqlalchemy import select
from sqlalchemy.orm import Session

from aicmo.config import Settings, get_settings
from aicmo.db import get_engine, utcnow
from aicmo.gateways.accounts import AccountStatus, AccountStore, SocialAccount
from aicmo.gateways.bluesky import DEFAULT_PDS
from aicmo.gateways.linkedin import DEFAULT_API as LINKEDIN_API
from aicmo.gateways.platforms import BLUESKY, LINKEDIN, MASTODON, NATIVE, X, canonical
from aicmo.gateways.vault import Vault, get_vault
from aicmo.gateways.x import DEFAULT_API as X_API
from aicmo.orchestration.errors import AOLError
from aicmo.orchestration.queue import format_validation_error
from aicmo.orchestration.redaction import redact

# Which secrets each platform needs, and which it may have (OAuth refresh).
REQUIRED_SECRETS: dict[str, tuple[str, ...]] = {
    MASTODON: ("access_token",),
    BLUESKY: ("app_password",),
    LINKEDIN: ("access_token",),
    X: ("access_token",),
}
OPTIONAL_SECRETS: dict[str, tuple[str, ...]] = {
    MASTODON: (),
    BLUESKY: (),
    LINKEDIN: ("refresh_token", "client_secret"),
    X: ("refresh_token", "client_secret"),
}
REQUIRED_CONFIG: dict[str, tuple[str, ...]] = {
    MASTODON: (),
    BLUESKY: (),
    LINKEDIN: ("author",),
    X: (),
}
DEFAULT_BASE_URLS = {BLUESKY: DEFAULT_PDS, LINKEDIN: LINKEDIN_API, X: X_API}


class AccountError(AOLError, ValueError):
    """The account cannot be added, found or used as asked."""


class AccountSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    platform: str
    handle: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=320)]
    campaign_id: Annotated[int, Field(gt=0, lt=2**63)] | None = None
    base_url: (
        Annotated[str, StringConstraints(max_length=500, pattern=r"^https?://\S+$")] | None
    ) = None
    config: dict[str, str | int | bool] = Field(default_factory=dict)
    secrets: dict[str, Annotated[str, StringConstraints(min_length=1, max_length=8192)]]

    @field_validator("platform", mode="before")
    @classmethod
    def _native(cls, value: object) -> object:
        if isinstance(value, str):
            value = canonical(value)
            if value not in NATIVE:
                raise ValueError(f"must be one of {', '.join(NATIVE)}")
        return value

    @model_validator(mode="after")
    def _complete(self) -> AccountSpec:
        allowed = REQUIRED_SECRETS[self.platform] + OPTIONAL_SECRETS[self.platform]
        missing = [name for name in REQUIRED_SECRETS[self.platform] if name not in self.secrets]
        unknown = [name for name in self.secrets if name not in allowed]
        if missing:
            raise ValueError(f"{self.platform} needs the secret(s) {', '.join(missing)}")
        if unknown:
            raise ValueError(
                f"{self.platform} takes the secrets {', '.join(allowed)}; not {', '.join(unknown)}"
            )
        lacking = [name for name in REQUIRED_CONFIG[self.platform] if name not in self.config]
        if lacking:
            raise ValueError(f"{self.platform} needs the setting(s) {', '.join(lacking)}")
        if self.platform == MASTODON and not self.base_url:
            raise ValueError(
                "mastodon needs the server's address (base_url, e.g. https://mastodon.social)"
            )
        if "refresh_token" in self.secrets and "client_id" not in self.config:
            raise ValueError("a refresh token needs the OAuth app's client_id (a setting)")
        return self


def parse_spec(values: dict[str, Any]) -> AccountSpec:
    try:
        return AccountSpec.model_validate(values)
    except ValidationError as exc:
        # hide_input_in_errors: a refused value (perhaps a token) is never echoed.
        raise AccountError("invalid account: " + "; ".join(format_validation_error(exc))) from None


@dataclass(frozen=True)
class AccountView:
    """An account as it may be shown: no secret in it."""

    id: int
    platform: str
    handle: str
    campaign_id: int | None
    base_url: str
    config: dict[str, Any]
    secret_names: list[str]
    status: str
    last_error: str | None
    access_expires_at: datetime | None
    last_refreshed_at: datetime | None
    created_at: datetime

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.__dict__,
            "access_expires_at": self.access_expires_at.isoformat()
            if self.access_expires_at
            else None,
            "last_refreshed_at": self.last_refreshed_at.isoformat()
            if self.last_refreshed_at
            else None,
            "created_at": self.created_at.isoformat(),
        }


def _view(row: SocialAccount, vault: Vault | None) -> AccountView:
    names: list[str] = []
    if vault is not None:
        try:
            names = sorted(vault.decrypt(row.credentials))
        except AOLError:
            names = ["(cannot decrypt with the configured keys)"]
    return AccountView(
        id=row.id,
        platform=row.platform,
        handle=row.handle,
        campaign_id=row.campaign_id,
        base_url=row.base_url,
        config=dict(row.config or {}),
        secret_names=names,
        status=row.status,
        last_error=redact(row.last_error) if row.last_error else None,
        access_expires_at=row.access_expires_at_utc,
        last_refreshed_at=row.last_refreshed_at_utc,
        created_at=row.created_at_utc,
    )


def add_account(
    session: Session, values: dict[str, Any] | AccountSpec, settings: Settings | None = None
) -> AccountView:
    """Store a new account (its secrets encrypted), in the caller's transaction."""
    spec = values if isinstance(values, AccountSpec) else parse_spec(values)
    vault = get_vault(settings)
    if spec.campaign_id is not None:
        from aicmo.cam.models import Campaign

        if session.get(Campaign, spec.campaign_id) is None:
            raise AccountError(f"campaign {spec.campaign_id} does not exist")
    taken = session.scalars(
        select(SocialAccount.id).where(
            SocialAccount.platform == spec.platform,
            SocialAccount.handle == spec.handle,
            SocialAccount.campaign_id.is_(None)
            if spec.campaign_id is None
            else SocialAccount.campaign_id == spec.campaign_id,
        )
    ).first()
    if taken is not None:
        raise AccountError(
            f"{spec.platform} account {spec.handle} is already connected (account {taken}): "
            f"remove it first with `aicmo accounts rm {taken}`"
        )
    now = utcnow()
    row = SocialAccount(
        platform=spec.platform,
        handle=spec.handle,
        campaign_id=spec.campaign_id,
        base_url=(spec.base_url or DEFAULT_BASE_URLS.get(spec.platform, "")).rstrip("/"),
        config=dict(spec.config),
        credentials=vault.encrypt(dict(spec.secrets)),
        credentials_version=1,
        status=AccountStatus.ACTIVE,
        created_at_utc=now,
        updated_at_utc=now,
    )
    session.add(row)
    session.flush()
    return _view(row, vault)


def list_accounts(session: Session, settings: Settings | None = None) -> list[AccountView]:
    s = settings or get_settings()
    vault = get_vault(s) if s.social_encryption_keys else None
    rows = session.scalars(select(SocialAccount).order_by(SocialAccount.id))
    return [_view(row, vault) for row in rows]


def remove_account(session: Session, account_id: int) -> AccountView:
    row = session.get(SocialAccount, account_id)
    if row is None:
        raise AccountError(f"social account {account_id} does not exist")
    view = _view(row, None)
    session.delete(row)
    session.flush()
    return view


def check_account(account_id: int, settings: Settings | None = None) -> str:
    """Ask the platform who the account's credentials are (refreshing them if they expired).
    Success clears an AUTH_FAILED flag; a refusal sets it and raises. No transaction is open
    while the platform answers."""
    from aicmo.gateways.factory import gateway_for

    s = settings or get_settings()
    store = AccountStore(get_engine(s.database_url), get_vault(s))
    account = store.load(account_id)
    who = gateway_for(account, store, s).whoami()
    store.mark_ok(account_id)
    return who


def rotate_keys(session: Session, settings: Settings | None = None) -> int:
    """Re-encrypt every account's credentials with the newest key; the count rotated."""
    vault = get_vault(settings)
    rows = list(session.scalars(select(SocialAccount).with_for_update()))
    for row in rows:
        row.credentials = vault.rotate(row.credentials)
        row.updated_at_utc = utcnow()
    session.flush()
    return len(rows)
