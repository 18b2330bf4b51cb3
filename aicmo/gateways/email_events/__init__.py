"""Verifiers of email providers' event webhooks, one module per provider.

Each ``verify(body, headers, now)`` checks the provider's own signature scheme (in constant
time, with its replay tolerance) and returns the events normalised as :class:`ProviderEvent`,
or raises a :class:`EventRejected` (always a 4xx). Nothing here touches the database.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from aicmo.gateways.email_events.base import (
    KINDS,
    BadEventPayload,
    BadEventSignature,
    EventRejected,
    ProviderEvent,
    ProviderUnconfigured,
)

PROVIDERS = ("ses", "sendgrid", "postmark", "svix", "resend", "mailgun", "generic")

__all__ = [
    "KINDS",
    "PROVIDERS",
    "BadEventPayload",
    "BadEventSignature",
    "EventRejected",
    "ProviderEvent",
    "ProviderUnconfigured",
    "verifier",
]


def verifier(
    provider: str,
) -> Callable[[bytes, Mapping[str, str], float], list[ProviderEvent]] | None:
    """The ``verify`` function of ``provider`` (imported on demand), or None."""
    from aicmo.gateways.email_events import generic, mailgun, postmark, sendgrid, ses, svix

    return {
        "ses": ses.verify,
        "sendgrid": sendgrid.verify,
        "postmark": postmark.verify,
        "svix": svix.verify,
        "resend": svix.verify,  # Resend signs with Svix
        "mailgun": mailgun.verify,
        "generic": generic.verify,
    }.get(provider)
