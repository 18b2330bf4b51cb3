"""The suppression list: addresses and whole domains no campaign may contact."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, Insert, and_, delete, exists, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from aicmo.cam.errors import InvalidCampaign
from aicmo.cam.leads import email_domain, normalise_email
from aicmo.cam.models import Lead, Suppression, SuppressionKind
from aicmo.db import utcnow


def normalise(kind: SuppressionKind | str, value: str) -> tuple[SuppressionKind, str]:
    try:
        checked = SuppressionKind(kind)
    except ValueError:
        raise InvalidCampaign(
            f"suppression kind must be 'email' or 'domain', got {kind!r}"
        ) from None
    try:
        if checked is SuppressionKind.EMAIL:
            return checked, normalise_email(value)
        domain = value.strip().lower().lstrip("@")
        if not domain or "@" in domain or "." not in domain or " " in domain:
            raise ValueError(f"not a domain: {value!r}")
        return checked, domain
    except ValueError as exc:
        raise InvalidCampaign(str(exc)) from None


def suppress(
    session: Session, kind: SuppressionKind | str, value: str, reason: str | None = None
) -> None:
    """Add an address or domain (idempotent)."""
    checked, normalised = normalise(kind, value)
    dialect = session.get_bind().dialect.name
    module: Any = postgresql if dialect == "postgresql" else sqlite
    stmt: Insert = module.insert(Suppression).on_conflict_do_nothing(
        index_elements=["kind", "value"]
    )
    session.execute(
        stmt.values(kind=checked, value=normalised, reason=reason, created_at_utc=utcnow())
    )


def unsuppress(session: Session, kind: SuppressionKind | str, value: str) -> bool:
    checked, normalised = normalise(kind, value)
    result = session.execute(
        delete(Suppression).where(Suppression.kind == checked, Suppression.value == normalised)
    )
    return bool(getattr(result, "rowcount", 0))


def is_suppressed(session: Session, email: str) -> bool:
    address = normalise_email(email)
    found = session.scalar(
        select(Suppression.id)
        .where(
            ((Suppression.kind == SuppressionKind.EMAIL) & (Suppression.value == address))
            | (
                (Suppression.kind == SuppressionKind.DOMAIN)
                & (Suppression.value == email_domain(address))
            )
        )
        .limit(1)
    )
    return found is not None


def lead_not_suppressed() -> ColumnElement[bool]:
    """SQL condition on ``Lead``: neither its address nor its domain is suppressed."""
    return and_(
        ~exists().where(Suppression.kind == SuppressionKind.EMAIL, Suppression.value == Lead.email),
        ~exists().where(
            Suppression.kind == SuppressionKind.DOMAIN, Suppression.value == Lead.email_domain
        ),
    )
