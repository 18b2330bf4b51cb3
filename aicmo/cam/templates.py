"""Step templates: ``{first_name}`` placeholders filled from the lead, with defaults.

``{first_name|there}`` falls back to "there" when the lead has no first name. Only the names
below exist, and substitution is plain text replacement: a template cannot reach attributes
or run code (``str.format`` could, with ``{x.__class__}``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

PLACEHOLDERS = frozenset(
    {"first_name", "last_name", "full_name", "company", "title", "email", "campaign"}
)
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?:\|([^{}]*))?\}")
_BRACED = re.compile(r"\{[^{}]*\}")


def check_template(template: str) -> None:
    """Raise ValueError naming any placeholder that does not exist or is malformed."""
    names = set()
    for braced in _BRACED.finditer(template):
        found = _PLACEHOLDER.fullmatch(braced.group(0))
        names.add(found.group(1) if found else braced.group(0)[1:-1])
    unknown = sorted(names - PLACEHOLDERS)
    if unknown:
        raise ValueError(
            f"unknown placeholder(s) {', '.join('{' + n + '}' for n in unknown)}; "
            f"known: {', '.join(sorted(PLACEHOLDERS))}"
        )


def render(template: str, fields: Mapping[str, str | None]) -> str:
    def fill(match: re.Match[str]) -> str:
        if match.group(1) not in PLACEHOLDERS:
            return match.group(0)
        value = fields.get(match.group(1))
        if value:
            return value
        return match.group(2) if match.group(2) is not None else ""

    return _PLACEHOLDER.sub(fill, template)
