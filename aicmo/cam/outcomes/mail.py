"""What every outreach email carries: RFC 8058 one-click unsubscribe headers, a visible
unsubscribe link, and (when the campaign tracks clicks) links rewritten through ``/c/TOKEN``.

Built at send time from plain values (no session): the tokens are signed, so nothing is
stored per link; a click token binds the one URL it may redirect to.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from aicmo.cam.outcomes import tokens
from aicmo.config import get_settings

# A URL in a plain-text body: up to whitespace or a closing bracket/quote; trailing
# punctuation of the sentence is not part of it.
_URL = re.compile(r"https?://[^\s<>\"'()\[\]]+")
_TRAILING = ".,;:!?"
MAX_TRACKED_LINKS = 50


@dataclass(frozen=True)
class Decorated:
    body: str
    headers: dict[str, str]
    unsubscribe_url: str


def base_url() -> str:
    return get_settings().public_base_url.rstrip("/")


def unsubscribe_url(message_id: int, lead_id: int, campaign_id: int) -> str:
    return f"{base_url()}/u/{tokens.make('u', message_id, lead_id, campaign_id)}"


def with_utm(url: str, campaign: str) -> str:
    """``url`` with utm_source/medium/campaign added (never overriding the sender's own)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    present = {name for name, _ in query}
    for name, value in (
        ("utm_source", "aicmo"),
        ("utm_medium", "email"),
        ("utm_campaign", campaign),
    ):
        if name not in present:
            query.append((name, value))
    return urlunsplit(parts._replace(query=urlencode(query)))


def track_links(body: str, message_id: int, lead_id: int, campaign_id: int, campaign: str) -> str:
    count = 0

    def rewrite(match: re.Match[str]) -> str:
        nonlocal count
        found = match.group(0)
        url = found.rstrip(_TRAILING)
        tail = found[len(url) :]
        if url.startswith(base_url() + "/") or count >= MAX_TRACKED_LINKS:
            return found
        count += 1
        target = with_utm(url, campaign)
        token = tokens.make("c", message_id, lead_id, campaign_id, url=target)
        return f"{base_url()}/c/{token}{tail}"

    return _URL.sub(rewrite, body)


def decorate(
    *,
    body: str,
    message_id: int,
    lead_id: int,
    campaign_id: int,
    campaign_name: str,
    from_address: str,
    click_tracking: bool,
) -> Decorated:
    link = unsubscribe_url(message_id, lead_id, campaign_id)
    if click_tracking:
        body = track_links(body, message_id, lead_id, campaign_id, campaign_name)
    domain = from_address.rpartition("@")[2] or "localhost"
    mailto = get_settings().email_unsubscribe_mailto or f"unsubscribe@{domain}"
    footer = f"\n\n--\nTo stop receiving these emails, unsubscribe: {link}\n"
    return Decorated(
        body=body.rstrip("\n") + footer,
        headers={
            "List-Unsubscribe": f"<{link}>, <mailto:{mailto}?subject=unsubscribe>",
            # RFC 8058: a POST of this body to the https URI unsubscribes, no page needed.
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        },
        unsubscribe_url=link,
    )
