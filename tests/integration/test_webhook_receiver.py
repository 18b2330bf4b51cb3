"""The lead webhook receiver against the real PostgreSQL: a source bound to its campaigns, and
10,000 random and mutated deliveries that may only ever be accepted or refused with a 4xx and
a reason (never an unexpected exception, which the web layer would answer with a 500)."""

from __future__ import annotations

import json
import random
import string
import time
from collections import Counter
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import func, select

from aicmo.cam import webhooks
from aicmo.cam.leads import MAX_LEADS_PER_CAPTURE
from aicmo.config import WebhookSource, get_settings
from aicmo.db import session_factory
from aicmo.orchestration.models import AOLAction
from tests.support import campaigns as support

pytestmark = pytest.mark.usefixtures("clean", "celery_app")

FORM_SECRET = "form-secret-3b1f0c"
CRM_SECRET = "crm-secret-99d2e4"


@pytest.fixture
def campaigns(database_url: str, monkeypatch: pytest.MonkeyPatch) -> tuple[int, int]:
    """Two campaigns; "form" may post into the first only, "crm" into any."""
    mine = support.create(database_url, n_leads=0)
    other = support.create(database_url, n_leads=0)
    monkeypatch.setattr(
        get_settings(),
        "cam_webhook_secrets",
        {
            "form": WebhookSource(secret=SecretStr(FORM_SECRET), campaigns=[mine]),
            "crm": WebhookSource(secret=SecretStr(CRM_SECRET), campaigns="*"),
        },
    )
    return mine, other


def event(campaign_id: int, event_id: str = "e1", email: str = "a@b.io") -> bytes:
    document = {"event_id": event_id, "campaign_id": campaign_id, "leads": [{"email": email}]}
    return json.dumps(document).encode()


def signed(secret: str, source: str, body: bytes, at: float | None = None) -> dict[str, str]:
    stamp = int(time.time() if at is None else at)
    return {"X-Aicmo-Signature": webhooks.sign(secret, body, stamp, source=source)}


def actions(database_url: str) -> int:
    with session_factory(database_url)() as s:
        return int(s.scalar(select(func.count()).select_from(AOLAction)) or 0)


def test_a_source_restricted_to_campaigns_cannot_post_into_another(
    database_url: str, campaigns: tuple[int, int]
) -> None:
    mine, other = campaigns
    with support.recording_dispatcher():
        into_mine = event(mine, "ok-1")
        assert webhooks.receive("form", into_mine, signed(FORM_SECRET, "form", into_mine)).created
        into_other = event(other, "steal-1")
        with pytest.raises(webhooks.SourceNotAllowed) as raised:
            webhooks.receive("form", into_other, signed(FORM_SECRET, "form", into_other))
        assert raised.value.status_code == 403
        assert f"may not post leads into campaign {other}" in str(raised.value)
        # The unrestricted source may; and one source's signature is worthless for another.
        assert webhooks.receive("crm", into_other, signed(CRM_SECRET, "crm", into_other)).created
        replayed = event(other, "steal-2")
        with pytest.raises(webhooks.BadSignature, match="does not match"):
            webhooks.receive("crm", replayed, signed(FORM_SECRET, "form", replayed))
    assert actions(database_url) == 2


def test_a_source_with_an_empty_secret_is_never_accepted(
    database_url: str, campaigns: tuple[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Settings refuse it at start-up; even when set around the validation, it verifies nothing.
    monkeypatch.setattr(get_settings(), "cam_webhook_secrets", {"form": SecretStr("")})
    body = event(campaigns[0])
    with pytest.raises(webhooks.UnknownSource, match="no secret"):
        webhooks.receive("form", body, signed("", "form", body))
    assert actions(database_url) == 0


# -- the fuzzer ----------------------------------------------------------------------------

REQUESTS = 10_000
TIME_BUDGET_SECONDS = 120.0  # the whole run (5 to 10 s here); a hang or a slow path blows it
SLOWEST_SECONDS = 2.0  # one delivery (at most about 0.2 s here, even the hostile ones)


class Fuzzer:
    """Deliveries built from valid ones by mutation, or from nothing at random."""

    def __init__(self, rng: random.Random, campaigns: tuple[int, int]) -> None:
        self.rng = rng
        self.campaigns = campaigns
        self.event_ids = [f"ev-{n}" for n in range(20)]  # reused: repeats and conflicts
        self.fresh = 0
        self.accepted: tuple[Any, bytes, dict[str, str]] | None = None

    # bodies

    def valid_document(self) -> dict[str, Any]:
        r = self.rng
        leads = [
            {"email": f"u{r.randrange(10**6)}@example.com", "first_name": r.choice(["Ada", "Bo"])}
            for _ in range(r.randint(1, 3))
        ]
        self.fresh += 1
        return {
            "event_id": r.choice(self.event_ids) if r.random() < 0.3 else f"new-{self.fresh}",
            "campaign_id": r.choice([*self.campaigns, 999_999_999]),
            "leads": leads,
        }

    def odd_value(self) -> Any:
        r = self.rng
        return r.choice(
            [
                None,
                True,
                -1,
                0,
                2**63,
                10**30,
                1e308,
                -0.0,
                "",
                "x" * r.randint(1, 5000),
                "\u0000",
                "\ud800",
                "\u202e\u200b",
                "é" * 50,
                [],
                {},
                [[[[]]]],
                {"email": 5},
                ["a@b.io"],
                r.random(),
            ]
        )

    def mutated_document(self) -> Any:
        r = self.rng
        document: Any = self.valid_document()
        for _ in range(r.randint(1, 3)):
            choice = r.randrange(9)
            if choice == 0:
                document[r.choice(["event_id", "campaign_id", "leads"])] = self.odd_value()
            elif choice == 1:
                document.pop(r.choice(["event_id", "campaign_id", "leads"]), None)
            elif choice == 2:
                document[r.choice(["extra", "EVENT_ID", ""])] = self.odd_value()
            elif choice == 3 and isinstance(document.get("leads"), list):
                document["leads"].append(
                    {r.choice(["email", "phone", "x", "", "\u0000"]): self.odd_value()}
                )
            elif choice == 4:
                document["leads"] = [
                    {"email": f"m{n}@x.io"} for n in range(MAX_LEADS_PER_CAPTURE + 1)
                ]
            elif choice == 5:
                document["event_id"] = "".join(
                    r.choice(string.printable + "é\u0000") for _ in range(r.randint(0, 200))
                )
            elif choice == 6:
                document = r.choice([[document], "text", 42, None, [], self.odd_value()])
                break
            elif choice == 7 and isinstance(document.get("leads"), list):
                depth = r.choice([5, 20, 33, 64, 500])
                nested: Any = {"email": "deep@x.io"}
                for _ in range(depth):
                    nested = {"n": nested}
                document["leads"].append(nested)
            else:
                document["campaign_id"] = r.choice(self.campaigns)
        return document

    def encode(self, document: Any) -> bytes:
        r = self.rng
        try:
            text = json.dumps(document, ensure_ascii=r.random() < 0.5)
        except (TypeError, ValueError):
            text = "{}"
        return text.encode("utf-8", "surrogatepass")

    def mutated_bytes(self, body: bytes) -> bytes:
        r = self.rng
        data = bytearray(body)
        for _ in range(r.randint(1, 4)):
            choice = r.randrange(8)
            position = r.randrange(len(data) + 1)
            if choice == 0 and data:
                data[min(position, len(data) - 1)] = r.randrange(256)
            elif choice == 1:
                data[position:position] = r.randbytes(r.randint(1, 8))
            elif choice == 2:
                del data[position : position + r.randint(1, 16)]
            elif choice == 3:
                data[position:position] = r.choice(
                    [b"[" * 5000, b"{" * 2000, b'{"a":' * 3000, b"9" * 6000, b"NaN", b"-Infinity"]
                )
            elif choice == 4:
                data[position:position] = r.choice(
                    [b"\\ud800", b"\\u0000", b'"', b"\\", b"\xed\xa0\x80", b"\xc3", b"\x00"]
                )
            elif choice == 5:
                data = data[: r.randrange(len(data) + 1)]
            elif choice == 6:
                data[position:position] = r.choice([b"1e999", b"1" * 400, b"-0", b"true"])
            else:
                data += data[: r.randint(0, len(data))]
        return bytes(data)

    def body(self) -> bytes:
        r = self.rng
        kind = r.random()
        if kind < 0.25:
            return self.encode(self.valid_document())
        if kind < 0.6:
            return self.encode(self.mutated_document())
        if kind < 0.9:
            return self.mutated_bytes(self.encode(self.valid_document()))
        if kind < 0.98:
            return r.randbytes(r.randint(0, 300))
        return r.choice(
            [
                b"",
                b"[" * 300_000,
                b" " * 300_000,
                b"{" + b'"a":1,' * 40_000 + b"}",
                b'"\\' * 120_000,
                b'"' * 250_000,
                b"[]" * 120_000,
                b'{"a":' * 50_000,
            ]
        )

    # sources and headers

    def source(self) -> Any:
        r = self.rng
        if r.random() < 0.85:
            return r.choice(["form", "crm"])
        return r.choice(
            ["", "unknown", "FORM", "form ", "form\n", "é", "a" * 300, "../form", "\u0000", None, 7]
        )

    def header(self, source: Any, body: bytes) -> str:
        r = self.rng
        secret = {"form": FORM_SECRET, "crm": CRM_SECRET}.get(source, "nope")
        now = time.time()
        name = source if isinstance(source, str) else "form"
        good = webhooks.sign(secret, body, int(now), source=name)
        kind = r.random()
        if kind < 0.6:
            return good
        if kind < 0.65:
            return webhooks.sign(secret, body, int(now - r.choice([301, 3600, -400])), source=name)
        if kind < 0.7:
            return webhooks.sign(r.choice([FORM_SECRET, CRM_SECRET]), body, int(now), source=name)
        if kind < 0.75:
            return good.replace("v2=", "v1=")
        if kind < 0.9:
            chars = list(good)
            for _ in range(r.randint(1, 4)):
                chars.insert(
                    r.randrange(len(chars) + 1),
                    r.choice(["é", ",", "=", "\u0663", "\udcff", " ", "\x00", "t=", "v2="]),
                )
            return "".join(chars)
        alphabet = string.printable + "éü\u0663\u202e,="
        return "".join(r.choice(alphabet) for _ in range(r.randint(0, 200)))

    def headers(self, source: Any, body: bytes) -> dict[str, str]:
        r = self.rng
        value = self.header(source, body)
        kind = r.random()
        if kind < 0.8:
            return {
                r.choice(["X-Aicmo-Signature", "x-aicmo-signature", "X-AICMO-SIGNATURE"]): value
            }
        if kind < 0.9:
            return {"Content-Type": "application/json", "x-aicmo-signature": value, "X": "y"}
        if kind < 0.95:
            return {}
        return {"X-Aicmo-Signatur": value}

    def request(self) -> tuple[Any, bytes, dict[str, str]]:
        if self.accepted is not None and self.rng.random() < 0.03:
            return self.accepted  # the sender retries a delivery: the same action again
        source = self.source()
        body = self.body()
        return source, body, self.headers(source, body)


def test_fuzzing_the_receiver_gives_only_receipts_or_4xx_refusals_with_a_reason(
    database_url: str, campaigns: tuple[int, int]
) -> None:
    seed = random.randrange(2**32)
    fuzzer = Fuzzer(random.Random(seed), campaigns)
    outcomes: Counter[str] = Counter()
    unexpected: list[str] = []
    crashes: Counter[str] = Counter()
    slowest = 0.0
    started = time.monotonic()
    with support.recording_dispatcher():
        for n in range(REQUESTS):
            source, body, headers = fuzzer.request()
            began = time.monotonic()
            try:
                receipt = webhooks.receive(source, body, headers)
                outcomes["created" if receipt.created else "repeated"] += 1
                fuzzer.accepted = (source, body, headers)
            except webhooks.WebhookError as exc:
                reason = str(exc)
                status = getattr(exc, "status_code", None)
                outcomes[f"{status} {type(exc).__name__}"] += 1
                if not (isinstance(status, int) and 400 <= status < 500 and reason.strip()):
                    unexpected.append(f"#{n}: {type(exc).__name__} {status} {reason!r}")
                if FORM_SECRET in reason or CRM_SECRET in reason:
                    unexpected.append(f"#{n}: a secret in the reason: {reason!r}")
            except Exception as exc:
                crashes[type(exc).__name__] += 1
                unexpected.append(
                    f"#{n}: {type(exc).__name__}: {str(exc)[:200]!r} for source {source!r}, "
                    f"body {body[:120]!r}, headers {headers!r}"[:600]
                )
            slowest = max(slowest, time.monotonic() - began)
            assert time.monotonic() - started < TIME_BUDGET_SECONDS, f"seed {seed}: too slow"
    elapsed = time.monotonic() - started
    print(
        f"\n{REQUESTS} deliveries in {elapsed:.1f}s (slowest {slowest * 1000:.0f} ms), "
        f"seed {seed}: {dict(sorted(outcomes.items()))}"
    )
    assert slowest < SLOWEST_SECONDS, f"seed {seed}: one delivery took {slowest:.1f}s"
    assert unexpected == [], (
        f"seed {seed}: {len(unexpected)} unexpected ({dict(crashes)}), e.g. {unexpected[:5]}"
    )
    # The run reached every stage: accepted, refused for the signature, the body, the source.
    assert outcomes["created"] > 100 and outcomes["repeated"] > 10
    for status in ("401", "403", "404", "409", "413", "422"):
        assert any(key.startswith(status) for key in outcomes), (status, outcomes)
    assert actions(database_url) == outcomes["created"]
