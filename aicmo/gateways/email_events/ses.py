"""Amazon SES events through an SNS HTTPS subscription.

The SNS message is verified as AWS documents it: the ``SigningCertURL`` must be https and
match ``AICMO_EMAIL_SNS_CERT_URL_PATTERN`` (an ``sns.<region>.amazonaws.com`` host) before it
is fetched (over TLS, cached); the canonical string is ``Key\\nValue\\n`` for Message,
MessageId, Subject (if present), Timestamp, TopicArn, Type (a notification) or Message,
MessageId, SubscribeURL, Timestamp, Token, TopicArn, Type (a subscription confirmation), and
the ``Signature`` is RSA PKCS#1 v1.5 over it with SHA1 (``SignatureVersion`` 1) or SHA256 (2).
SNS retries keep their ``Timestamp``, so a message is accepted for a day
(:data:`MAX_AGE_SECONDS`); its ``MessageId`` is the event id, so a replay is a no-op.

A SubscriptionConfirmation is confirmed by fetching its SubscribeURL, only when that URL is on
the same host as the verified signing certificate.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import ssl
import threading
import urllib.request
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from aicmo.config import get_settings
from aicmo.gateways.email_events.base import (
    BadEventPayload,
    BadEventSignature,
    ProviderEvent,
    from_iso,
    parse_json,
    require_dict,
    sub,
    text,
)

MAX_AGE_SECONDS = 86_400.0
FETCH_TIMEOUT = 5.0
MAX_CERT_BYTES = 64 * 1024
NOTIFICATION_KEYS = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
CONFIRMATION_KEYS = (
    "Message",
    "MessageId",
    "SubscribeURL",
    "Timestamp",
    "Token",
    "TopicArn",
    "Type",
)
_cache: dict[str, x509.Certificate] = {}
_cache_lock = threading.Lock()


def canonical(message: Mapping[str, Any]) -> bytes:
    kind = message.get("Type")
    keys = NOTIFICATION_KEYS if kind == "Notification" else CONFIRMATION_KEYS
    out = []
    for key in keys:
        value = message.get(key)
        if value is None and key == "Subject":
            continue
        if not isinstance(value, str):
            raise BadEventSignature(f"the SNS message lacks {key}")
        out.append(f"{key}\n{value}\n")
    return "".join(out).encode()


def _context() -> ssl.SSLContext:
    ca = get_settings().email_sns_ca_file
    return ssl.create_default_context(cafile=str(ca) if ca else None)


def _fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=FETCH_TIMEOUT, context=_context()) as response:
        return bytes(response.read(MAX_CERT_BYTES + 1))


def certificate(url: str) -> x509.Certificate:
    if not isinstance(url, str) or not re.fullmatch(get_settings().email_sns_cert_url_pattern, url):
        raise BadEventSignature("SigningCertURL is not a trusted SNS certificate URL")
    if urlsplit(url).scheme != "https":
        raise BadEventSignature("SigningCertURL must be https")
    with _cache_lock:
        cached = _cache.get(url)
    if cached is not None:
        return cached
    try:
        pem = _fetch(url)
    except OSError as exc:
        raise BadEventSignature(f"could not fetch the signing certificate: {exc}") from None
    if len(pem) > MAX_CERT_BYTES:
        raise BadEventSignature("signing certificate too large")
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError:
        raise BadEventSignature("the signing certificate is not a PEM certificate") from None
    with _cache_lock:
        if len(_cache) > 64:
            _cache.clear()
        _cache[url] = cert
    return cert


def verify_message(message: Mapping[str, Any], now: float) -> None:
    version = message.get("SignatureVersion")
    algorithm: hashes.HashAlgorithm
    if version == "1":
        algorithm = hashes.SHA1()
    elif version == "2":
        algorithm = hashes.SHA256()
    else:
        raise BadEventSignature("SignatureVersion must be 1 or 2")
    stamp = from_iso(message.get("Timestamp"))
    if abs(now - stamp.timestamp()) > MAX_AGE_SECONDS:
        raise BadEventSignature("the SNS message is more than a day old: refused as a replay")
    signature = message.get("Signature")
    if not isinstance(signature, str) or len(signature) > 2048:
        raise BadEventSignature("missing Signature")
    try:
        raw = base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError):
        raise BadEventSignature("Signature is not base64") from None
    material = canonical(message)
    cert = certificate(message.get("SigningCertURL"))  # type: ignore[arg-type]
    moment = datetime.fromtimestamp(now, UTC)
    if not cert.not_valid_before_utc <= moment <= cert.not_valid_after_utc:
        raise BadEventSignature("the signing certificate is not valid now")
    key = cert.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise BadEventSignature("the signing certificate has no RSA key")
    try:
        key.verify(raw, material, padding.PKCS1v15(), algorithm)
    except InvalidSignature:
        raise BadEventSignature("SNS signature does not verify") from None


def verify(body: bytes, headers: Mapping[str, str], now: float) -> list[ProviderEvent]:
    message = require_dict(parse_json(body), "the SNS message")
    verify_message(message, now)
    topics = get_settings().email_sns_topic_arns
    if topics and message.get("TopicArn") not in topics:
        raise BadEventSignature("the SNS topic is not one of AICMO_EMAIL_SNS_TOPIC_ARNS")
    kind = message.get("Type")
    if kind == "SubscriptionConfirmation":
        _confirm(message)
        return []
    if kind != "Notification":
        return []
    try:
        inner = json.loads(message["Message"])
    except (ValueError, RecursionError):
        raise BadEventPayload("the SNS Message is not SES JSON") from None
    return _events(str(message.get("MessageId")), require_dict(inner, "the SES event"))


def _confirm(message: Mapping[str, Any]) -> None:
    url = message.get("SubscribeURL")
    cert_host = urlsplit(str(message.get("SigningCertURL"))).netloc
    if (
        not isinstance(url, str)
        or urlsplit(url).scheme != "https"
        or urlsplit(url).netloc != cert_host
    ):
        raise BadEventPayload("SubscribeURL is not on the SNS host")
    try:
        _fetch(url)
    except OSError as exc:
        raise BadEventPayload(f"could not confirm the subscription: {exc}") from None


def _events(sns_id: str, event: dict[str, Any]) -> list[ProviderEvent]:
    name = event.get("eventType") or event.get("notificationType")
    if not isinstance(name, str):
        raise BadEventPayload("the SES event has no eventType")
    mail = sub(event, "mail")
    common = sub(mail, "commonHeaders")
    message_ref = text(common.get("messageId"))
    if message_ref is None and isinstance(mail.get("headers"), list):
        for item in mail["headers"]:
            if isinstance(item, dict) and str(item.get("name", "")).lower() == "message-id":
                message_ref = text(item.get("value"))
    detail = require_dict(event.get(name[:1].lower() + name[1:], {}), name)
    recipients: list[str | None] = []
    kind = {
        "Delivery": "delivered",
        "Open": "open",
        "Click": "click",
        "Complaint": "complaint",
    }.get(name, "other")
    if name == "Bounce":
        kind = "bounce_hard" if detail.get("bounceType") == "Permanent" else "bounce_soft"
        recipients = [
            text(r.get("emailAddress"), 320)
            for r in detail.get("bouncedRecipients", [])
            if isinstance(r, dict)
        ]
    elif name == "Complaint":
        recipients = [
            text(r.get("emailAddress"), 320)
            for r in detail.get("complainedRecipients", [])
            if isinstance(r, dict)
        ]
    else:
        destination = mail.get("destination")
        if isinstance(destination, list):
            recipients = [text(d, 320) for d in destination]
    occurred = detail.get("timestamp") or mail.get("timestamp")
    when = from_iso(occurred) if occurred else from_iso(event.get("timestamp", ""))
    base = ProviderEvent(
        provider="ses",
        event_id=sns_id,
        kind=kind,
        occurred_at=when,
        message_ref=message_ref,
        provider_message_id=text(mail.get("messageId")),
        url=text(detail.get("link"), 4000),
        detail={"event": name[:40], "type": text(detail.get("bounceType"), 40)},
    )
    found: list[str | None] = []
    found.extend(r for r in recipients if r is not None)
    found = found[:50]
    if not found:
        found = [None]
    return [
        ProviderEvent(
            **{**base.__dict__, "recipient": r, "event_id": sns_id if i == 0 else f"{sns_id}:{i}"}
        )
        for i, r in enumerate(found)
    ]
