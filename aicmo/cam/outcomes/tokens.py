"""Signed capability tokens for unsubscribe (``/u/TOKEN``) and click (``/c/TOKEN``) links.

A token is ``<kind>1.<payload>.<mac>``: the payload is base64url JSON naming the message, its
lead and campaign (and, for a click, the one URL it may lead to); the MAC is HMAC-SHA256 of
``<kind>1.<payload>`` under ``AICMO_EMAIL_TOKEN_KEYS``, truncated to 128 bits. The ids are
inside the MAC'd payload: readable by whoever holds the token (the recipient, who knows whom
it was sent to anyway) but useless to enumerate, since changing one breaks the MAC and no
token can be made without the key. Keys rotate: the first signs, any verifies.

With no key configured the web service's session key is used; with neither, a fixed
development key is used in proof mode only (a live send, or a live service verifying, refuses:
a known key would let anyone unsubscribe anyone).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any, Literal

from aicmo.config import get_settings
from aicmo.orchestration.errors import PermanentError

Kind = Literal["u", "c"]
VERSION = "1"
MAC_BYTES = 16
MAX_TOKEN_CHARS = 4096
_DEV_KEY = b"aicmo-proof-mode-only-token-key"


class TokenKeysMissing(PermanentError):
    """Live mode and no AICMO_EMAIL_TOKEN_KEYS (nor AICMO_WEB_SECRET_KEY) to sign links with."""


class BadToken(ValueError):
    """Malformed, tampered with, signed by an unknown key, or of another kind."""


@dataclass(frozen=True)
class TokenClaims:
    kind: str
    message_id: int
    lead_id: int
    campaign_id: int
    url: str | None = None


def signing_keys() -> list[bytes]:
    settings = get_settings()
    keys = [key.get_secret_value().encode() for key in settings.email_token_keys]
    if not keys and settings.web_secret_key is not None:
        keys = [b"email-token:" + settings.web_secret_key.get_secret_value().encode()]
    if not keys:
        if not settings.proof_mode:
            raise TokenKeysMissing(
                "set AICMO_EMAIL_TOKEN_KEYS: unsubscribe and click links must be signed"
            )
        keys = [_DEV_KEY]
    return keys


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: bytes, signed: str) -> bytes:
    return hmac.new(key, signed.encode("ascii"), hashlib.sha256).digest()[:MAC_BYTES]


def make(
    kind: Kind, message_id: int, lead_id: int, campaign_id: int, url: str | None = None
) -> str:
    body: dict[str, Any] = {"m": message_id, "l": lead_id, "c": campaign_id}
    if url is not None:
        body["u"] = url
    payload = _b64(json.dumps(body, separators=(",", ":")).encode())
    signed = f"{kind}{VERSION}.{payload}"
    return f"{signed}.{_b64(_mac(signing_keys()[0], signed))}"


def read(token: str, kind: Kind) -> TokenClaims:
    """The claims of a genuine token of ``kind``, or :class:`BadToken`."""
    if not token or len(token) > MAX_TOKEN_CHARS or not token.isascii():
        raise BadToken("not a token")
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != f"{kind}{VERSION}":
        raise BadToken("not a token of this kind")
    signed = f"{parts[0]}.{parts[1]}"
    try:
        given = _unb64(parts[2])
    except (binascii.Error, ValueError):
        raise BadToken("malformed signature") from None
    # Every key is tried (no early exit on a match), each comparison in constant time.
    matched = False
    for key in signing_keys():
        matched |= hmac.compare_digest(_mac(key, signed), given)
    if not matched:
        raise BadToken("bad signature")
    try:
        body = json.loads(_unb64(parts[1]))
        claims = TokenClaims(
            kind=kind,
            message_id=_positive(body["m"]),
            lead_id=_positive(body["l"]),
            campaign_id=_positive(body["c"]),
            url=body.get("u") if kind == "c" else None,
        )
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise BadToken("malformed payload") from None
    if kind == "c" and not isinstance(claims.url, str):
        raise BadToken("a click token names its URL")
    return claims


def _positive(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value < 2**63:
        raise ValueError("not an id")
    return value
