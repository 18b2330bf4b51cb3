"""Encryption at rest of social account credentials: Fernet keys from the settings.

``AICMO_SOCIAL_ENCRYPTION_KEYS`` is a list, newest first. The first key encrypts; every key
decrypts (cryptography's MultiFernet), so rotating is: prepend a new key, run
``aicmo accounts rotate-key`` (re-encrypts every row with the new key), then drop the old one.
"""

from __future__ import annotations

import json
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from aicmo.config import Settings, get_settings
from aicmo.orchestration.errors import PermanentError, RealRunUnconfigured
from aicmo.orchestration.redaction import register_secret


class NoEncryptionKey(RealRunUnconfigured):
    """Social accounts need AICMO_SOCIAL_ENCRYPTION_KEYS."""


class UndecryptableCredentials(PermanentError):
    """None of the configured keys opens this row (a key was dropped before rotating)."""


def new_key() -> str:
    return Fernet.generate_key().decode("ascii")


class Vault:
    def __init__(self, keys: list[str]) -> None:
        if not keys:
            raise NoEncryptionKey(
                "social accounts need an encryption key: set AICMO_SOCIAL_ENCRYPTION_KEYS "
                "(make one with `aicmo accounts new-key`)"
            )
        for key in keys:
            register_secret(key)
        try:
            self._fernet = MultiFernet([Fernet(key.encode("ascii")) for key in keys])
        except (ValueError, UnicodeEncodeError):
            # Never echo the value: it is a key.
            raise NoEncryptionKey(
                "AICMO_SOCIAL_ENCRYPTION_KEYS holds a value that is not a Fernet key "
                "(32 url-safe base64-encoded bytes)"
            ) from None

    def encrypt(self, secrets: dict[str, Any]) -> str:
        data = json.dumps(secrets, separators=(",", ":"), sort_keys=True).encode("utf-8")
        return self._fernet.encrypt(data).decode("ascii")

    def decrypt(self, token: str) -> dict[str, Any]:
        try:
            data = self._fernet.decrypt(token.encode("ascii"))
        except InvalidToken:
            raise UndecryptableCredentials(
                "the account's credentials cannot be decrypted with the configured keys "
                "(was a key removed before `aicmo accounts rotate-key`?)"
            ) from None
        secrets: dict[str, Any] = json.loads(data)
        for value in secrets.values():
            if isinstance(value, str):
                register_secret(value)
        return secrets

    def rotate(self, token: str) -> str:
        """The same secrets, encrypted with the newest key."""
        try:
            return self._fernet.rotate(token.encode("ascii")).decode("ascii")
        except InvalidToken:
            raise UndecryptableCredentials(
                "an account's credentials cannot be decrypted with the configured keys"
            ) from None


def get_vault(settings: Settings | None = None) -> Vault:
    s = settings or get_settings()
    return Vault([key.get_secret_value() for key in s.social_encryption_keys])
