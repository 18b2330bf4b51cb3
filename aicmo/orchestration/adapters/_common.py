"""Helpers the adapters share."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import model_validator

__all__ = ["original_keys"]

# The original's daemon added the action's key to every payload it handed a handler.
ALWAYS_IGNORED = frozenset({"idempotency_key"})


def original_keys(*, ignored: Iterable[str] = (), renamed: Mapping[str, str] | None = None) -> Any:
    """A pydantic "before" model validator accepting the keys the original AICMO put in this
    type's payloads: ``ignored`` ones (and ``idempotency_key``) are dropped, ``renamed`` ones
    are read under their new name. Any other unknown key is still refused (``extra="forbid"``),
    so a typo stays an error. Use as ``accept_original_keys = original_keys(...)`` in the
    payload model's body."""
    dropped = ALWAYS_IGNORED | frozenset(ignored)
    aliases = dict(renamed or {})
    known = dropped | aliases.keys()

    def accept(cls: Any, data: Any) -> Any:
        if not isinstance(data, dict) or known.isdisjoint(data):
            return data
        cleaned = {key: value for key, value in data.items() if key not in known}
        for old, new in aliases.items():
            if old not in data:
                continue
            if new in cleaned and cleaned[new] != data[old]:
                raise ValueError(f"{old} (the original's name for {new}) disagrees with {new}")
            cleaned[new] = data[old]
        return cleaned

    return model_validator(mode="before")(classmethod(accept))  # type: ignore[arg-type]
