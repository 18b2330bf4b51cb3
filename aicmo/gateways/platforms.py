"""The native social platforms: their names and how long a post may be on each.

Lengths are counted the way each platform counts them, so a post that passes here is not
refused for its length there:

* Mastodon: 500 characters (a server may allow more; URLs count 23);
* Bluesky: 300 graphemes (a user-perceived character: an emoji with modifiers is one);
* LinkedIn: 3000 characters of commentary;
* X: 280 weighted characters (twitter-text: most CJK and emoji weigh 2, a URL 23).
"""

from __future__ import annotations

import re
import unicodedata

MASTODON = "mastodon"
BLUESKY = "bluesky"
LINKEDIN = "linkedin"
X = "x"
NATIVE = (MASTODON, BLUESKY, LINKEDIN, X)
# Names as people write them, after the POST_SOCIAL payload's normalisation ("LinkedIn Page"
# -> "linkedin_page", "X (Twitter)" -> "x_twitter").
ALIASES = {
    "twitter": X,
    "x_twitter": X,
    "twitter_x": X,
    "bsky": BLUESKY,
    "linkedin_page": LINKEDIN,
    "linkedin_company": LINKEDIN,
    "linkedin_company_page": LINKEDIN,
    "linkedin_profile": LINKEDIN,
}

LIMITS = {MASTODON: 500, BLUESKY: 300, LINKEDIN: 3000, X: 280}
UNITS = {
    MASTODON: "characters",
    BLUESKY: "graphemes",
    LINKEDIN: "characters",
    X: "weighted characters",
}

URL = re.compile(r"https?://\S+")
URL_WEIGHT = 23
# twitter-text v3: these code point ranges weigh 1, everything else 2.
_LIGHT = ((0, 4351), (8192, 8205), (8208, 8223), (8242, 8247))
_ZWJ = "\u200d"


def canonical(platform: str) -> str:
    name = platform.strip().lower()
    return ALIASES.get(name, name)


def is_native(platform: str) -> bool:
    return canonical(platform) in NATIVE


def graphemes(text: str) -> int:
    """User-perceived characters, near enough to Unicode's extended grapheme clusters for a
    length limit: combining marks, variation selectors, skin tones and ZWJ-joined parts
    count with the character before them."""
    count = 0
    joined = False
    for char in unicodedata.normalize("NFC", text):
        if char == _ZWJ:
            joined = True
            continue
        code = ord(char)
        extends = (
            unicodedata.combining(char)
            or unicodedata.category(char) in ("Mn", "Me")
            or 0xFE00 <= code <= 0xFE0F  # variation selectors
            or 0x1F3FB <= code <= 0x1F3FF  # skin tone modifiers
            or 0xE0020 <= code <= 0xE007F  # tag characters (flag sequences)
        )
        if not (extends or joined):
            count += 1
        joined = False
    return count


def weighted(text: str) -> int:
    """X's weighted length: URLs count 23, light code points 1, others 2."""
    total = 0
    for part in URL.split(text):
        for char in unicodedata.normalize("NFC", part):
            code = ord(char)
            total += 1 if any(lo <= code <= hi for lo, hi in _LIGHT) else 2
    return total + URL_WEIGHT * len(URL.findall(text))


def length(platform: str, text: str) -> int:
    name = canonical(platform)
    if name == BLUESKY:
        return graphemes(text)
    if name == X:
        return weighted(text)
    if name == MASTODON:
        return len(URL.sub("x" * URL_WEIGHT, text))
    return len(text)


def length_problem(platform: str, text: str, limit: int | None = None) -> str | None:
    """Why ``text`` is too long for ``platform`` (None when it fits, or the platform is not
    a native one)."""
    name = canonical(platform)
    if name not in LIMITS:
        return None
    allowed = limit or LIMITS[name]
    used = length(name, text)
    if used > allowed:
        return f"{used} {UNITS[name]}, over {name}'s limit of {allowed}"
    return None
