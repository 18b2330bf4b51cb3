"""Lead capture: validate each lead on its own, normalise its identifiers, merge duplicates.

A lead's identity is its normalised email, else its LinkedIn profile URL, else its phone
number; the identity hash is unique per campaign. A lead with none of them is rejected (it
could never be deduplicated). Capture also merges a lead found by any one identifier, so
"ada@x.io" captured again with a phone number updates the same row. DNC consent is sticky.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)
from sqlalchemy import Insert, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from aicmo.cam import keys
from aicmo.cam.campaigns import get_campaign
from aicmo.cam.errors import LeadNotFound
from aicmo.cam.models import Consent, Lead, LeadStatus
from aicmo.db import utcnow
from aicmo.orchestration.queue import ActionQueue, Enqueued, format_validation_error

log = logging.getLogger(__name__)

SOURCE_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,63}$"
MAX_LEADS_PER_CAPTURE = 1000
MAX_ATTRIBUTES_CHARS = 8000

_EMAIL = re.compile(r"^[^@\s<>,;]+@([^@\s<>,;]+\.[^@\s<>,;]+)$")
_PHONE_JUNK = re.compile(r"[\s().\-/]")
_PHONE = re.compile(r"^\+?\d{7,15}$")


# Control characters (newlines, tabs, NUL, the Unicode line separators) in a name would end
# up in a Subject header, where they are a header injection that no message can be built
# with: a run of them becomes one space at capture.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


# -- normalisation (pure functions) -------------------------------------------------------


def normalise_email(value: str) -> str:
    email = value.strip().lower()
    if email.startswith("mailto:"):
        email = email[len("mailto:") :]
    if len(email) > 320 or not _EMAIL.match(email) or _CONTROL.search(email):
        raise ValueError(f"not an email address: {value!r}")
    return email


def email_domain(email: str) -> str:
    return email.rpartition("@")[2]


def normalise_phone(value: str) -> str:
    """Digits with an optional leading +; ``00`` becomes ``+``. Give E.164 to merge reliably."""
    phone = _PHONE_JUNK.sub("", value.strip())
    if phone.startswith("00"):
        phone = "+" + phone[2:]
    if not _PHONE.match(phone):
        raise ValueError(f"not a phone number (7 to 15 digits): {value!r}")
    return phone


def normalise_linkedin(value: str) -> str:
    """``https://www.LinkedIn.com/in/Ada/?utm=x`` -> ``linkedin.com/in/ada``."""
    raw = value.strip()
    if _CONTROL.search(raw):
        raise ValueError(f"not a LinkedIn URL (control characters): {value!r}")
    parts = urlsplit(raw if "://" in raw else "https://" + raw)
    host = (parts.hostname or "").lower()
    if not (host == "linkedin.com" or host.endswith(".linkedin.com")):
        raise ValueError(f"not a LinkedIn URL: {value!r}")
    path = parts.path.lower().rstrip("/")
    if not path or path == "/":
        raise ValueError(f"LinkedIn URL has no profile path: {value!r}")
    normalised = f"linkedin.com{path}"
    if len(normalised) > 500:
        raise ValueError("LinkedIn URL is longer than 500 characters")
    return normalised


def identity_hash(
    email: str | None, linkedin_url: str | None = None, phone: str | None = None
) -> str:
    """sha256 of the strongest normalised identifier (email, then LinkedIn, then phone)."""
    for kind, value in (("email", email), ("linkedin", linkedin_url), ("phone", phone)):
        if value:
            return hashlib.sha256(f"{kind}:{value}".encode()).hexdigest()
    raise ValueError("a lead needs an email, a phone number or a LinkedIn URL")


# -- one lead, validated -------------------------------------------------------------------


def clean_text(value: str) -> str:
    """``value`` with every run of control characters replaced by one space, stripped."""
    return _CONTROL.sub(" ", value).strip()


def _blank_to_none(value: object) -> object:
    if isinstance(value, str):
        value = value.strip()
        return value or None
    return value


def _clean_to_none(value: object) -> object:
    if isinstance(value, str):
        return clean_text(value) or None
    return value


def _upper(value: object) -> object:
    return value.strip().upper() if isinstance(value, str) else value


Text100 = Annotated[
    Annotated[str, StringConstraints(max_length=100)] | None, BeforeValidator(_clean_to_none)
]
Text200 = Annotated[
    Annotated[str, StringConstraints(max_length=200)] | None, BeforeValidator(_clean_to_none)
]


class LeadIn(BaseModel):
    """A lead as a source gives it. Unknown fields are kept in ``attributes``."""

    model_config = ConfigDict(extra="allow", str_strip_whitespace=True)

    email: Annotated[str | None, BeforeValidator(_blank_to_none)] = None
    phone: Annotated[str | None, BeforeValidator(_blank_to_none)] = None
    linkedin_url: Annotated[str | None, BeforeValidator(_blank_to_none)] = None
    first_name: Text100 = None
    last_name: Text100 = None
    company: Text200 = None
    title: Text200 = None
    consent: Annotated[Consent, BeforeValidator(_upper)] = Consent.UNKNOWN
    requires_human_review: bool = False
    attributes: dict[str, Any] = {}

    @field_validator("email")
    @classmethod
    def _email(cls, value: str | None) -> str | None:
        return normalise_email(value) if value else None

    @field_validator("phone", mode="before")
    @classmethod
    def _phone(cls, value: object) -> object:
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        return normalise_phone(value) if isinstance(value, str) and value.strip() else value

    @field_validator("linkedin_url")
    @classmethod
    def _linkedin(cls, value: str | None) -> str | None:
        return normalise_linkedin(value) if value else None

    @model_validator(mode="after")
    def _identity(self) -> LeadIn:
        if not (self.email or self.phone or self.linkedin_url):
            raise ValueError("a lead needs an email, a phone number or a LinkedIn URL")
        extra = dict(self.model_extra or {})
        if extra:
            self.attributes = {**extra, **self.attributes}
            for name in extra:
                delattr(self, name)
        if len(repr(self.attributes)) > MAX_ATTRIBUTES_CHARS:
            raise ValueError(f"attributes are larger than {MAX_ATTRIBUTES_CHARS} characters")
        return self

    @property
    def identity_hash(self) -> str:
        return identity_hash(self.email, self.linkedin_url, self.phone)


def validate_lead(raw: object) -> LeadIn:
    """The lead, or ValueError with every problem in one line."""
    if not isinstance(raw, Mapping):
        raise ValueError(f"a lead is a JSON object, got {type(raw).__name__}")
    try:
        return LeadIn.model_validate(dict(raw))
    except ValidationError as exc:
        raise ValueError("; ".join(format_validation_error(exc))) from None


# -- capture -------------------------------------------------------------------------------


@dataclass
class CaptureReport:
    created: list[int] = field(default_factory=list)
    merged: list[int] = field(default_factory=list)
    invalid: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "created": len(self.created),
            "merged": len(self.merged),
            "invalid": self.invalid,
            "lead_ids": sorted({*self.created, *self.merged}),
        }


def _insert(session: Session) -> Insert:
    dialect = session.get_bind().dialect.name
    module = postgresql if dialect == "postgresql" else sqlite
    stmt: Insert = module.insert(Lead).on_conflict_do_nothing(
        index_elements=["campaign_id", "identity_hash"]
    )
    return stmt


def merge_consent(current: str, incoming: str) -> str:
    """DNC never goes back; a new DNC always wins; UNKNOWN never downgrades CONSENTED."""
    if Consent.DNC in (current, incoming):
        return Consent.DNC
    if incoming == Consent.CONSENTED:
        return Consent.CONSENTED
    return current


def _merge(lead: Lead, incoming: LeadIn, now: datetime) -> None:
    # Identifiers only fill gaps: the identity hash was computed from what the row has.
    lead.email = lead.email or incoming.email
    lead.email_domain = email_domain(lead.email) if lead.email else None
    lead.phone = lead.phone or incoming.phone
    lead.linkedin_url = lead.linkedin_url or incoming.linkedin_url
    for name in ("first_name", "last_name", "company", "title"):
        value = getattr(incoming, name)
        if value:
            setattr(lead, name, value)
    if incoming.attributes:
        lead.attributes = {**(lead.attributes or {}), **incoming.attributes}
    lead.consent = merge_consent(lead.consent, incoming.consent)
    lead.requires_human_review = lead.requires_human_review or incoming.requires_human_review
    lead.updated_at_utc = now


def _find_existing(session: Session, campaign_id: int, lead: LeadIn) -> Lead | None:
    same = [Lead.identity_hash == lead.identity_hash]
    if lead.email:
        same.append(Lead.email == lead.email)
    if lead.linkedin_url:
        same.append(Lead.linkedin_url == lead.linkedin_url)
    if lead.phone:
        same.append(Lead.phone == lead.phone)
    return session.scalars(
        select(Lead)
        .where(Lead.campaign_id == campaign_id, or_(*same))
        .order_by(Lead.id)
        .limit(1)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).first()


def capture(
    session: Session,
    campaign_id: int,
    source: str,
    leads: Sequence[object],
    now: datetime | None = None,
) -> CaptureReport:
    """Upsert ``leads`` into the campaign in the caller's transaction.

    Invalid leads are reported (index and reason), never written; valid ones are created
    or merged into the lead with the same identity.
    """
    now = now or utcnow()
    get_campaign(session, campaign_id)
    report = CaptureReport()
    for index, raw in enumerate(leads):
        try:
            lead = validate_lead(raw)
        except ValueError as exc:
            report.invalid.append({"index": index, "reason": str(exc)})
            continue
        existing = _find_existing(session, campaign_id, lead)
        if existing is None:
            new_id = session.scalar(
                _insert(session)
                .values(
                    campaign_id=campaign_id,
                    identity_hash=lead.identity_hash,
                    email=lead.email,
                    email_domain=email_domain(lead.email) if lead.email else None,
                    phone=lead.phone,
                    linkedin_url=lead.linkedin_url,
                    first_name=lead.first_name,
                    last_name=lead.last_name,
                    company=lead.company,
                    title=lead.title,
                    attributes=lead.attributes,
                    source=source,
                    status=LeadStatus.NEW,
                    consent=lead.consent,
                    requires_human_review=lead.requires_human_review,
                    step=0,
                    next_action_at_utc=now,
                    created_at_utc=now,
                    updated_at_utc=now,
                )
                .returning(Lead.id)
            )
            if new_id is not None:
                report.created.append(new_id)
                continue
            # A concurrent capture inserted it between our look-up and our insert.
            existing = _find_existing(session, campaign_id, lead)
            if existing is None:  # pragma: no cover - the conflicting row is committed
                raise RuntimeError(f"lead {lead.identity_hash} conflicted but is not found")
        _merge(existing, lead, now)
        report.merged.append(existing.id)
    session.flush()
    log.info(
        "campaign %s: captured %d new, %d merged, %d invalid lead(s) from %s",
        campaign_id,
        len(report.created),
        len(report.merged),
        len(report.invalid),
        source,
        extra={"campaign_id": campaign_id},
    )
    return report


def set_review_flag(session: Session, lead_id: int, flagged: bool) -> Lead:
    """Take a lead out of the automated flow (or give it back, due at once)."""
    lead = session.get(Lead, lead_id, with_for_update=True, populate_existing=True)
    if lead is None:
        raise LeadNotFound(lead_id)
    lead.requires_human_review = flagged
    now = utcnow()
    if not flagged and lead.next_action_at_utc is None:
        lead.next_action_at_utc = now
    lead.updated_at_utc = now
    session.flush()
    return lead


# -- enqueueing captures -------------------------------------------------------------------


def capture_payload(
    campaign_id: int, source: str, leads: Sequence[Mapping[str, Any]], event_id: str
) -> dict[str, Any]:
    return {
        "campaign_id": campaign_id,
        "source": source,
        "event_id": event_id,
        "leads": [dict(lead) for lead in leads],
    }


def enqueue_capture(
    session: Session,
    campaign_id: int,
    source: str,
    event_id: str,
    leads: Sequence[Mapping[str, Any]],
) -> Enqueued:
    """CAMPAIGN_CAPTURE_LEADS keyed ``cam_leads:{source}:{event_id}``, in the caller's
    transaction: the same event enqueued twice is one action (``created`` False)."""
    return enqueue_capture_batches(session, campaign_id, source, [(event_id, leads)])[0]


def enqueue_capture_batches(
    session: Session,
    campaign_id: int,
    source: str,
    batches: Sequence[tuple[str, Sequence[Mapping[str, Any]]]],
) -> list[Enqueued]:
    """One CAMPAIGN_CAPTURE_LEADS per ``(event_id, leads)`` batch, all or nothing."""
    return ActionQueue.enqueue_many(
        session,
        [
            (
                keys.CAPTURE_LEADS,
                capture_payload(campaign_id, source, leads, event_id),
                keys.leads_key(source, event_id),
            )
            for event_id, leads in batches
        ],
    )
