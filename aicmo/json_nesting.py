"""How deep a raw JSON body nests, measured before it is parsed.

``json.loads`` recurses once per level and raises RecursionError on a hostile body, so the
receivers of untrusted JSON (lead webhooks, email provider events) refuse a body nested too
deep before parsing it. Brackets inside strings do not count.
"""

from __future__ import annotations

import re

# A JSON string, escapes included, or an unterminated one up to the end (JSON refuses it there
# anyway). Possessive, and never failing once it starts: every byte is scanned once, so a body
# of many quotes and backslashes cannot make the scan quadratic.
_JSON_STRING = re.compile(rb'"[^"\\]*+(?:\\.[^"\\]*+)*+"?', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def nesting_depth(body: bytes, limit: int) -> int:
    """How deep the brackets of ``body`` go (those inside strings do not count), counted
    only up to ``limit`` + 1."""
    brackets = _JSON_STRING.sub(b"", body).translate(None, _NOT_BRACKETS)
    depth = deepest = 0
    for byte in brackets:
        if byte in b"[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    break
        else:
            depth -= 1
    return deepest
