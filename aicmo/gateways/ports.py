"""The ports: what the adapters need from the outside world, as typed protocols.

Every method receives the action's idempotency key and hands it to the provider
(Idempotency-Key header, Message-ID), so a retried action is recognisable on the other side.
Errors are raised, not returned: :class:`~aicmo.orchestration.errors.TransientError` (the AOL
retries, honouring ``retry_after``) or :class:`~aicmo.orchestration.errors.PermanentError`
(FAILED) - see :mod:`aicmo.gateways.errors`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Protocol

from aicmo.orchestration.artifacts import Artifact


@dataclass(frozen=True)
class OutgoingEmail:
    to: str
    subject: str
    body: str
    from_address: str
    reply_to: str | None = None
    html: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SocialPost:
    platform: str
    content: str
    audience: str | None = None
    # The action's creation time and attempt: stable across retries, so a gateway can derive
    # a record key from them, or know that an earlier attempt may already have posted.
    created_at: datetime | None = None
    attempt: int = 1


@dataclass(frozen=True)
class SendResult:
    """What a provider said when it took the message. A refusal is raised, not returned;
    ``accepted=False`` is for a provider that answers 2xx but reports it did not take it."""

    external_id: str | None
    accepted: bool = True
    detail: str = ""
    artifact: Artifact | None = None
    retryable: bool = False
    provider: str = ""
    # The provider's own id of the message when it differs from external_id (e.g. an API
    # sender's id next to the Message-ID): its events are linked to the message by either.
    provider_message_id: str | None = None


@dataclass(frozen=True)
class MetricsReport:
    """A provider's numbers for one campaign and one date (e.g. opens, clicks)."""

    campaign_id: int
    day: date
    metrics: dict[str, float]
    source: str
    artifact: Artifact | None = None
    # Per item (a social post's external id) when the source counts per item.
    per_item: dict[str, dict[str, float]] = field(default_factory=dict)


@dataclass(frozen=True)
class LeadBatch:
    """Raw lead records (the campaign layer validates and deduplicates them)."""

    source: str
    leads: list[dict[str, Any]]
    next_cursor: str | None = None  # pass it back for the next batch; None: no more
    artifact: Artifact | None = None


class EmailSender(Protocol):
    def send(self, email: OutgoingEmail, idempotency_key: str) -> SendResult: ...


class SocialPoster(Protocol):
    def post(self, post: SocialPost, idempotency_key: str) -> SendResult: ...


class MetricsSource(Protocol):
    def fetch(self, campaign_id: int, day: date, idempotency_key: str) -> MetricsReport: ...


class LeadSource(Protocol):
    def fetch(
        self, idempotency_key: str, *, cursor: str | None = None, limit: int = 500
    ) -> LeadBatch: ...
