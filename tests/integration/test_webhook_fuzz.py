"""The lead webhook fuzzed through a real `aicmo serve`: 10,000 random and mutated requests,
within a time bound, and not one answer of 5xx (nor a non-JSON answer)."""

from __future__ import annotations

import json
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from aicmo.cam.webhooks import sign
from tests.support import campaigns as support
from tests.support.web import WEBHOOK_SECRET, WebServer

pytestmark = [pytest.mark.usefixtures("clean"), pytest.mark.slow]

REQUESTS = 10_000
TIME_BOUND_SECONDS = 420
THREADS = 4
ODD = [
    "",
    "\u0000",
    "\ud800",
    "😀" * 50,
    "A" * 5000,
    "<script>",
    "' OR 1=1 --",
    "../../etc/passwd",
    "%00",
    "\r\nX-Injected: 1",
]
ODD_VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    2**63,
    -(2**63) - 1,
    1e308,
    1.5,
    "",
    [],
    {},
    [[[]]],
    {"a": {"b": {}}},
    *ODD,
]


def good_event(rng: random.Random, campaign_id: int) -> dict[str, Any]:
    return {
        "event_id": f"fz-{rng.getrandbits(48):x}",
        "campaign_id": campaign_id,
        "leads": [
            {"email": f"p{rng.randint(0, 10**6)}@example.com", "first_name": "Ada"}
            for _ in range(rng.randint(1, 3))
        ],
    }


def mutate(rng: random.Random, value: Any, depth: int = 0) -> Any:
    if isinstance(value, dict) and value and rng.random() < 0.7:
        key = rng.choice(list(value))
        copy = dict(value)
        roll = rng.random()
        if roll < 0.2:
            del copy[key]
        elif roll < 0.35:
            copy[rng.choice(ODD) or "k"] = rng.choice(ODD_VALUES)
        else:
            copy[key] = mutate(rng, copy[key], depth + 1) if depth < 4 else rng.choice(ODD_VALUES)
        return copy
    if isinstance(value, list) and value and rng.random() < 0.7:
        copy = list(value)
        roll = rng.random()
        if roll < 0.3:
            copy.append(rng.choice(ODD_VALUES))
        elif roll < 0.5:
            copy *= rng.randint(50, 300)  # over the leads limit
        else:
            i = rng.randrange(len(copy))
            copy[i] = mutate(rng, copy[i], depth + 1)
        return copy
    return rng.choice(ODD_VALUES)


def mutate_bytes(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        roll = rng.random()
        if roll < 0.4 and buf:
            buf[rng.randrange(len(buf))] = rng.randrange(256)
        elif roll < 0.6 and buf:
            del buf[rng.randrange(len(buf)) :]
        elif roll < 0.8:
            buf[rng.randrange(len(buf) + 1) : 0] = bytes(rng.randrange(256) for _ in range(8))
        else:
            buf += b"[" * rng.randint(1, 50_000)  # deep nesting
    return bytes(buf)


def request(rng: random.Random, campaign_id: int) -> tuple[str, bytes, dict[str, str]]:
    source = "form"
    roll = rng.random()
    if roll < 0.08:
        source = rng.choice(["other", "FORM", "f" * 200, "a.b", "%2e%2e", "x%00", "ü", "-"])
    now = int(time.time())
    event = good_event(rng, campaign_id)
    kind = rng.random()
    if kind < 0.15:
        body = bytes(rng.randrange(256) for _ in range(rng.randint(0, 2000)))
    elif kind < 0.55:
        body = json.dumps(mutate(rng, event), ensure_ascii=rng.random() < 0.5).encode(
            "utf-8", "surrogatepass"
        )
    elif kind < 0.75:
        body = mutate_bytes(rng, json.dumps(event).encode())
    elif kind < 0.8:
        body = b" " * (300 * 1024)  # over the size limit
    else:
        body = json.dumps(event).encode()
    headers = {"Content-Type": rng.choice(["application/json", "text/plain", "", "x/y"])}
    sig = rng.random()
    if sig < 0.6:
        headers["X-Aicmo-Signature"] = sign(WEBHOOK_SECRET, body, now, source="form")
    elif sig < 0.7:
        headers["X-Aicmo-Signature"] = sign(WEBHOOK_SECRET, body, now - 10_000, source="form")
    elif sig < 0.8:
        headers["X-Aicmo-Signature"] = sign("wrong-secret", body, now, source="form")
    elif sig < 0.9:
        headers["X-Aicmo-Signature"] = rng.choice(
            ["", "t=", "v1=", "t=abc,v1=00", f"t={now}", f"t={10**30},v1=a", "t=1," + "v1=a," * 500]
        )
    return source, body, headers


def leave_no_work_behind(url: str) -> None:
    """The accepted events are real CAMPAIGN_CAPTURE_LEADS actions: stop them before the next
    test, or a shared worker busy with them deadlocks with its TRUNCATE."""
    from sqlalchemy import func, select, update

    from aicmo.db import session_factory
    from aicmo.orchestration import manager
    from aicmo.orchestration.models import AOLAction
    from tests.support.processes import wait_for

    kind = "CAMPAIGN_CAPTURE_LEADS"
    waiting = ["PENDING", "READY", "RETRY"]
    with session_factory(url)() as s, s.begin():
        manager.pause(s, kind, reason="fuzz test over", by="test")
        s.execute(
            update(AOLAction)
            .where(AOLAction.action_type == kind, AOLAction.status.in_(waiting))
            .values(status="CANCELLED")
        )

    def idle() -> bool:
        with session_factory(url)() as s:
            running = select(func.count()).where(
                AOLAction.action_type == kind, AOLAction.status == "RUNNING"
            )
            return not s.scalar(running)

    wait_for(idle, 60, interval=0.2, message="the fuzz's lead captures to stop")


@pytest.fixture(scope="module")
def server(database_url: str, redis_client: Any, log_dir: Path) -> Iterator[WebServer]:
    web = WebServer(log_dir).start()
    yield web
    web.stop()


def test_ten_thousand_random_and_mutated_webhooks_get_no_5xx(
    server: WebServer, database_url: str
) -> None:
    campaign_id = support.create(database_url, n_leads=0)
    seed = uuid.uuid4().int & 0xFFFF_FFFF
    deadline = time.monotonic() + TIME_BOUND_SECONDS
    statuses: Counter[int] = Counter()
    failures: list[str] = []

    def worker(index: int) -> Callable[[], None]:
        def run() -> None:
            rng = random.Random(seed + index)
            with httpx.Client(base_url=server.url, timeout=30) as client:
                for _ in range(REQUESTS // THREADS):
                    if time.monotonic() > deadline:
                        failures.append("time bound reached")
                        return
                    source, body, headers = request(rng, campaign_id)
                    try:
                        answer = client.post(
                            f"/webhooks/leads/{source}", content=body, headers=headers
                        )
                    except httpx.HTTPError as exc:
                        failures.append(f"transport error {exc!r} on {body[:80]!r}")
                        continue
                    statuses[answer.status_code] += 1
                    if answer.status_code >= 500 or "json" not in answer.headers.get(
                        "content-type", ""
                    ):
                        failures.append(
                            f"{answer.status_code} {answer.text[:200]} <- {body[:120]!r}"
                        )

        return run

    try:
        with ThreadPoolExecutor(THREADS) as pool:
            for future in [pool.submit(worker(i)) for i in range(THREADS)]:
                future.result()
    finally:
        leave_no_work_behind(database_url)
    assert sum(statuses.values()) == REQUESTS, (dict(statuses), failures[:5], f"seed {seed}")
    assert not failures, f"seed {seed}: {len(failures)} bad answers, e.g. {failures[:5]}"
    # The fuzz reached every branch: accepted events and each refusal.
    for status in (202, 401, 404, 413, 422):
        assert statuses[status] > 0, (status, dict(statuses))
