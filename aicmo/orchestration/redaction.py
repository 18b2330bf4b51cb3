"""Keep secrets out of last_error, the execution log and log lines.

Secrets are known two ways: values registered by the code that holds them (a gateway
registers its password and API key when built), and patterns that look like credentials
(``Authorization: Bearer ...``, ``password=...``, URLs with a password).

A database error quotes data: SQLAlchemy appends the bound parameters (``[parameters: ...]``,
also hidden at the engine with ``hide_parameters``), and PostgreSQL's ``DETAIL`` line repeats
the failing row or key ("Failing row contains (.., alice@example.com, ..)"): a lead's
personal data. Both are cut; the error's class, message and SQL text stay.
"""

from __future__ import annotations

import re
import threading

MASK = "***"
_MIN_SECRET_LENGTH = 4

_lock = threading.Lock()
_secrets: set[str] = set()

_PATTERNS = [
    # scheme://user:password@host
    (
        re.compile(r"(?P<pre>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)[^@\s]+(?P<post>@)"),
        r"\g<pre>***\g<post>",
    ),
    # Authorization: Bearer xyz / Basic xyz
    (re.compile(r"(?i)(?P<pre>\b(?:bearer|basic)\s+)[A-Za-z0-9._~+/=-]+"), r"\g<pre>***"),
    # api_key=..., password: ..., "token": "..."
    (
        re.compile(
            r"""(?ix)(?P<pre>\b(?:api[_-]?key|apikey|password|passwd|secret|token|
            access[_-]?token|client[_-]?secret)\b["']?\s*[:=]\s*["']?)[^\s"',;&]+"""
        ),
        r"\g<pre>***",
    ),
    # OpenAI-style keys
    (re.compile(r"\bsk-[A-Za-z0-9_-]{8,}"), "sk-***"),
    # SQLAlchemy's bound parameters, up to the "(Background on this error" line or the end
    (
        re.compile(r"\[parameters: .*?\](?=\s*(?:\(Background on this error|$))", re.DOTALL),
        "[parameters: hidden]",
    ),
    # PostgreSQL's DETAIL line quotes the row or the key that failed
    (re.compile(r"(?m)^(?P<pre>\s*DETAIL:\s*).*$"), r"\g<pre>(hidden: it quotes row values)"),
    (re.compile(r"(?i)(?P<pre>failing row contains )\(.*?\)(?=\.?\s*$)", re.M), r"\g<pre>(...)"),
]


# Every pattern above needs one of these (lower-cased) in the text: a line with none of them,
# the usual log line ("action 12 T_NOOP succeeded ..."), skips the seven regular expressions.
_TRIGGERS = (
    "://",
    "bearer",
    "basic",
    "key",
    "pass",
    "secret",
    "token",
    "sk-",
    "[parameters: ",
    "detail:",
    "failing row contains",
)


def register_secret(value: str | None) -> None:
    if value and len(value) >= _MIN_SECRET_LENGTH:
        with _lock:
            _secrets.add(value)


def redact(text: str) -> str:
    if not text:
        return text
    with _lock:
        known = sorted(_secrets, key=len, reverse=True)
    for secret in known:
        if secret in text:
            text = text.replace(secret, MASK)
    lowered = text.lower()
    if not any(trigger in lowered for trigger in _TRIGGERS):
        return text
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text
