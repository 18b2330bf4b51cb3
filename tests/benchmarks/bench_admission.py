"""``python -m tests.benchmarks.bench_admission [--quick] [--no-write]``: what admission costs
and the fairness figure (issue 15). Run by ``make bench``; writes BENCHMARKS-admission.md.

Sizes: ``BENCH_ADMISSION_E2E`` publishes per side per round (2,000; quick 500),
``BENCH_ADMISSION_ROUNDS`` (4; quick 2), ``BENCH_ADMISSION_BACKLOG`` (20,000; quick 3,000).

Everything on its own PostgreSQL database and Redis db (BenchEnv), nothing mocked:

* **End-to-end cost** (real workers, 2 processes x 2 pool children per side): campaign
  publishes (CAMPAIGN_PUBLISH's own handler: review gate, daily limit, proof send, record)
  run as two bench types on two queues, each with its own idle-when-not-used workers, in
  alternating rounds of the same run. *On*: an always-open send window, the default caps
  (``1/24h,3/7d``: the person's lock, count and contact row) and a concurrency key (a slot
  taken in the claim and released after, never waited for). *Off*: no window, no caps
  (``AICMO_CAM_FREQUENCY_CAPS=""``), no key; the publish still writes the person's contact
  row (kept so that caps turned on later count earlier sends). Throughput = actions / (last
  finish - commit of the enqueue), database clock; cost = 1 - on/off (median of rounds).
* **Fairness** (real workers reading ``aol``): campaign A's N publishes (20,000; ``--quick``:
  3,000) queued with the workers stopped, the workers started, and 2 s later campaign B's
  tick queues its 20. Reported: seconds from B's commit to B's last publish, and how many
  of A's were published by then.
* In-process breakdown: the admission steps' share of one publish through the executor, and
  the ms a concurrency key adds to a run (T_NOOP vs BENCH_KEYED_NOOP: the same empty handler,
  the second with a key: the keyed claim statement and the release-and-wake statement).
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from tests.benchmarks.bench_env import BenchEnv
from tests.support.processes import ROOT

N_PUBLISH = int(os.environ.get("BENCH_ADMISSION_PUBLISHES", "300"))
N_CLAIMS = int(os.environ.get("BENCH_ADMISSION_CLAIMS", "1000"))
DEFAULT_CAPS = "1/24h,3/7d"
ALWAYS_OPEN = {
    "start": "00:00",
    "end": "23:59",
    "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
}


def _campaign(url: str, n: int) -> list[tuple[int, int]]:
    from sqlalchemy import select

    from aicmo.cam import campaigns, leads, review
    from aicmo.cam.models import OutreachMessage
    from aicmo.cam.orchestrator import tick
    from aicmo.db import session_factory

    with session_factory(url)() as s, s.begin():
        campaign = campaigns.create_campaign(
            s,
            {
                "name": "bench",
                "batch_size": 1000,
                "daily_send_limit": 1_000_000,
                "send_window": ALWAYS_OPEN,
                "steps": [{"subject": "Hi", "body": "Hello {first_name}.", "wait_minutes": 0}],
            },
        )
        campaigns.activate(s, campaign.id)
        leads.capture(
            s,
            campaign.id,
            "bench",
            [{"email": f"p{i}@bench.example", "first_name": "P"} for i in range(n)],
        )
        cid = campaign.id
    with session_factory(url)() as s, s.begin():
        tick(s, cid, generator=None)
    with session_factory(url)() as s, s.begin():
        ids = list(s.scalars(select(OutreachMessage.id).where(OutreachMessage.campaign_id == cid)))
        results = review.approve_many(s, ids, "bench")
    return [(r.message_id, r.publish_action_id or 0) for r in results]


def measure_publish_admission(url: str, n_publish: int = N_PUBLISH) -> dict[str, Any]:
    from datetime import UTC, datetime

    from sqlalchemy import select

    from aicmo.cam import admission
    from aicmo.cam.campaigns import get_campaign
    from aicmo.cam.models import Lead, OutreachMessage
    from aicmo.db import session_factory
    from aicmo.orchestration.adapters.campaign_adapter import handle_campaign_publish

    pairs = _campaign(url, 2 * n_publish)
    timed, run = pairs[:n_publish], pairs[n_publish:]
    admission_ms: list[float] = []
    e2e_ms: list[float] = []
    # Paired, one of each in turn: a burst of load from elsewhere hits both alike.
    for (message_id, _), (whole_id, action_id) in zip(timed, run, strict=True):
        with session_factory(url)() as s:
            s.begin()
            message = s.get(OutreachMessage, message_id)
            assert message is not None
            campaign = get_campaign(s, message.campaign_id, lock=True)
            s.execute(
                select(OutreachMessage.id).where(OutreachMessage.id == message_id).with_for_update()
            )
            lead = s.get(Lead, message.lead_id)
            assert lead is not None
            now = datetime.now(UTC)
            started = time.perf_counter()
            admission.check_send_window(campaign, lead, now)
            admission.admit_recipient(s, campaign, message, lead, now)
            admission_ms.append((time.perf_counter() - started) * 1000)
            s.rollback()
        with session_factory(url)() as s:
            started = time.perf_counter()
            handle_campaign_publish(s, action_id, {"message_id": whole_id}, proof_mode=True)
            e2e_ms.append((time.perf_counter() - started) * 1000)
    cost, whole = statistics.median(admission_ms), statistics.median(e2e_ms)
    return {
        "publish admission (window + cap), median ms": round(cost, 3),
        "whole publish through the executor, median ms": round(whole, 3),
        "admission share of a publish": f"{100 * cost / whole:.1f}%",
    }


def measure_claims(url: str, n_claims: int = N_CLAIMS) -> dict[str, Any]:
    from aicmo.db import session_factory
    from aicmo.orchestration.executor import Executor
    from aicmo.orchestration.queue import ActionQueue
    from tests.benchmarks.bench_actions import KEYED_NOOP
    from tests.support.campaigns import recording_dispatcher

    out: dict[str, Any] = {}
    executor = Executor(worker="bench")
    kinds: list[tuple[str, Any]] = [
        ("T_NOOP", lambda i: {"n": i}),
        (KEYED_NOOP, lambda i: {"n": i, "account": "a"}),
    ]
    ids: dict[str, list[int]] = {}
    for action_type, payload in kinds:
        with recording_dispatcher(), session_factory(url)() as s, s.begin():
            ids[action_type] = [
                ActionQueue.enqueue_action(s, action_type, payload(i)).id for i in range(n_claims)
            ]
        with recording_dispatcher():
            # Warm-up: a key's first claim makes its slot rows (and is woken at once).
            first = executor.run(ids[action_type][0], action_type)
            if first.kind.value == "WAITING":
                first = executor.run(ids[action_type][0], action_type)
            assert first.kind.value == "SUCCEEDED", first
    # Paired, one of each in turn: a burst of load from elsewhere hits both alike.
    spent: dict[str, list[float]] = {action_type: [] for action_type, _ in kinds}
    with recording_dispatcher():
        for i in range(1, n_claims):
            for action_type, _ in kinds:
                started = time.perf_counter()
                outcome = executor.run(ids[action_type][i], action_type)
                spent[action_type].append((time.perf_counter() - started) * 1000)
                assert outcome.kind.value == "SUCCEEDED", outcome
    for action_type, _ in kinds:
        out[f"{action_type} run in-process, median ms/action"] = round(
            statistics.median(spent[action_type]), 3
        )
    plain = out["T_NOOP run in-process, median ms/action"]
    keyed = out[f"{KEYED_NOOP} run in-process, median ms/action"]
    out["concurrency key overhead, ms/action"] = round(keyed - plain, 3)
    return out


# -- end to end, with real workers ------------------------------------------------------


def _wait(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


def _scalar(url: str, sql: str, **params: Any) -> Any:
    from sqlalchemy import text

    from aicmo.db import get_engine

    with get_engine(url).connect() as conn:
        return conn.execute(text(sql), params).scalar()


def _people_campaign(url: str, n: int, prefix: str, **overrides: Any) -> int:
    """An ACTIVE campaign of ``n`` distinct people, one step, nothing drafted yet."""
    from aicmo.cam import campaigns, leads
    from aicmo.db import session_factory

    spec: dict[str, Any] = {
        "name": f"bench {prefix}",
        "batch_size": 1000,
        "daily_send_limit": 1_000_000,
        "steps": [{"subject": "Hi", "body": "Hello {first_name}.", "wait_minutes": 0}],
        **overrides,
    }
    with session_factory(url)() as s, s.begin():
        campaign = campaigns.create_campaign(s, spec)
        leads.capture(
            s,
            campaign.id,
            "bench",
            [{"email": f"{prefix}{i}@bench.example", "first_name": "P"} for i in range(n)],
        )
        cid = campaign.id
    with session_factory(url)() as s, s.begin():
        campaigns.activate(s, cid)
    return cid


def _count_messages(url: str, cid: int, status: str | None = None) -> int:
    sql = "SELECT count(*) FROM cam_outreach_messages WHERE campaign_id = :cid"
    if status:
        sql += " AND publish_status = :status"
    return int(_scalar(url, sql, cid=cid, status=status))


def _drafted(url: str, n: int, prefix: str, **overrides: Any) -> tuple[int, list[int]]:
    """:func:`_people_campaign`, ticked until each person has a message (ticks of 1,000)."""
    from sqlalchemy import select

    from aicmo.cam.models import OutreachMessage
    from aicmo.cam.orchestrator import tick
    from aicmo.db import session_factory

    cid = _people_campaign(url, n, prefix, **overrides)
    for _ in range(n // 1000 + 3):
        with session_factory(url)() as s, s.begin():
            tick(s, cid, generator=None)
        if _count_messages(url, cid) >= n:
            break
    with session_factory(url)() as s:
        ids = list(s.scalars(select(OutreachMessage.id).where(OutreachMessage.campaign_id == cid)))
    assert len(ids) == n, f"{len(ids)} of {n} drafted"
    return cid, ids


def _approved(url: str, n: int, tag: str, window: bool) -> list[int]:
    """A fresh campaign's ``n`` messages, approved by a reviewer and not yet queued."""
    from sqlalchemy import text

    from aicmo.db import session_factory

    overrides: dict[str, Any] = {"requires_approval": True}
    if window:
        overrides["send_window"] = ALWAYS_OPEN
    cid, ids = _drafted(url, n, tag, **overrides)
    with session_factory(url)() as s, s.begin():
        s.execute(
            text(
                "UPDATE cam_outreach_messages SET publish_status = 'APPROVED', reviewer = 'bench',"
                " approved_at_utc = now() WHERE campaign_id = :cid"
            ),
            {"cid": cid},
        )
    return ids


def _round(url: str, n: int, tag: str) -> dict[str, float]:
    """One round: ``n`` publishes per side, enqueued in one commit (interleaved), both sides'
    workers running at once, so a burst of load from elsewhere hits both alike. At the
    moment the first side finishes, each side's rate is what it finished by then divided by
    the time since the commit (database clock)."""
    from aicmo.db import session_factory
    from aicmo.orchestration.queue import ActionQueue
    from tests.benchmarks.bench_actions import PUBLISH_OFF, PUBLISH_ON

    ids = {"on": _approved(url, n, f"on{tag}", True), "off": _approved(url, n, f"off{tag}", False)}
    kinds = {"on": PUBLISH_ON, "off": PUBLISH_OFF}
    items = [
        (kinds[side], {"message_id": ids[side][i]}, f"bench:{side}{tag}:{ids[side][i]}")
        for i in range(n)
        for side in ("on", "off")
    ]
    with session_factory(url)() as s:
        s.begin()
        ActionQueue.enqueue_many(s, items)
        s.commit()  # the messages go to Redis after this commit
        started = _scalar(url, "SELECT now()")
    done_sql = (
        "SELECT count(*) FROM aol_actions WHERE idempotency_key LIKE :k AND status = 'SUCCESS'"
    )

    def done(side: str) -> int:
        return int(_scalar(url, done_sql, k=f"bench:{side}{tag}:%"))

    _wait(lambda: n in (done("on"), done("off")), 60 + n, f"round {tag}")
    # The first side to finish (both, if the other finished meanwhile: the earlier end).
    first = min(
        _scalar(
            url,
            "SELECT max(finished_at_utc) FROM aol_actions WHERE idempotency_key LIKE :k",
            k=f"bench:{side}{tag}:%",
        )
        for side in ("on", "off")
        if done(side) == n
    )
    _wait(lambda: done("on") == n and done("off") == n, 60 + n, f"round {tag} to finish")
    seconds = (first - started).total_seconds()
    rates: dict[str, float] = {}
    for side in ("on", "off"):
        by_then = _scalar(
            url,
            "SELECT count(*) FROM aol_actions WHERE idempotency_key LIKE :k"
            " AND finished_at_utc <= :t",
            k=f"bench:{side}{tag}:%",
            t=first,
        )
        rates[side] = float(by_then) / seconds
    published = _scalar(
        url,
        "SELECT count(*) FROM cam_outreach_messages WHERE id = ANY(:ids)"
        " AND publish_status = 'PUBLISHED'",
        ids=ids["on"] + ids["off"],
    )
    assert published == 2 * n, f"{published} of {2 * n} published"
    return rates


def measure_end_to_end(env: BenchEnv, n: int, rounds: int) -> dict[str, Any]:
    from tests.benchmarks.bench_actions import QUEUE_OFF, QUEUE_ON

    def side(queue: str, caps: str) -> Any:
        settings = {"AICMO_LOG_LEVEL": "WARNING", "AICMO_CAM_FREQUENCY_CAPS": caps}
        return env.worker("aicmo", [queue], "INFO", settings)

    workers = [side(QUEUE_OFF, "") for _ in range(2)] + [
        side(QUEUE_ON, DEFAULT_CAPS) for _ in range(2)
    ]
    for found in workers:
        found.start()
    load = os.getloadavg()[0]
    ratios: list[float] = []
    rates: dict[str, list[float]] = {"on": [], "off": []}
    for r in range(rounds):
        got = _round(env.database_url, n, f"r{r}x")
        for key in rates:
            rates[key].append(got[key])
        ratios.append(got["on"] / got["off"])
        print(f"round {r}: on {got['on']:.1f}/s, off {got['off']:.1f}/s", flush=True)
    for found in workers:
        found.stop()
    ratio = statistics.median(ratios)
    return {
        "e2e: load average (1 min) before": f"{load:.2f}",
        f"e2e: publishes/s, admission off (median of {rounds} rounds x {n})": round(
            statistics.median(rates["off"]), 1
        ),
        f"e2e: publishes/s, admission on (median of {rounds} rounds x {n})": round(
            statistics.median(rates["on"]), 1
        ),
        "e2e: on/off ratio per round": ", ".join(f"{x:.3f}" for x in ratios),
        "e2e: admission cost, share of end-to-end throughput (1 - median ratio)": (
            f"{100 * (1 - ratio):.1f}%"
        ),
    }


def measure_fairness(env: BenchEnv, a_backlog: int, b_messages: int = 20) -> dict[str, Any]:
    from aicmo.cam.orchestrator import tick
    from aicmo.db import session_factory

    url = env.database_url
    auto = {"requires_approval": False}  # each tick queues what it drafts
    made = time.monotonic()
    a, _ = _drafted(url, a_backlog, "fa", **auto)  # no worker yet: all of it waits in Redis
    print(f"fairness: A's {a_backlog} queued in {time.monotonic() - made:.0f}s", flush=True)
    b = _people_campaign(url, b_messages, "fb", **auto)
    workers = [
        env.worker(
            "aicmo",
            ["aol"],
            "INFO",
            {"AICMO_LOG_LEVEL": "WARNING", "AICMO_CAM_FREQUENCY_CAPS": DEFAULT_CAPS},
        )
        for _ in range(2)
    ]
    for found in workers:
        found.start()
    time.sleep(2.0)  # the workers are deep in A's backlog
    load = os.getloadavg()[0]
    a_before = _count_messages(url, a, "PUBLISHED")
    with session_factory(url)() as s, s.begin():
        tick(s, b, generator=None)
    started = _scalar(url, "SELECT now()")
    _wait(
        lambda: _count_messages(url, b, "PUBLISHED") == b_messages,
        300,
        f"B's {b_messages} publishes",
    )
    b_last = _scalar(
        url, "SELECT max(published_at_utc) FROM cam_outreach_messages WHERE campaign_id = :b", b=b
    )
    a_then = int(
        _scalar(
            url,
            "SELECT count(*) FROM cam_outreach_messages WHERE campaign_id = :a"
            " AND published_at_utc <= :t",
            a=a,
            t=b_last,
        )
    )
    for found in workers:
        found.stop()
    seconds = (b_last - started).total_seconds()
    return {
        "fairness: load average (1 min) before B": f"{load:.2f}",
        f"fairness: seconds from B's commit to B's last of {b_messages}": round(seconds, 2),
        f"fairness: A's {a_backlog} published when B started / when B finished": (
            f"{a_before} / {a_then}"
        ),
    }


def main() -> int:
    quick = "--quick" in sys.argv
    e2e_n = int(os.environ.get("BENCH_ADMISSION_E2E", 500 if quick else 2000))
    rounds = int(os.environ.get("BENCH_ADMISSION_ROUNDS", 2 if quick else 4))
    backlog = int(os.environ.get("BENCH_ADMISSION_BACKLOG", 3000 if quick else 20_000))
    load_at_start = os.getloadavg()
    with BenchEnv() as env:
        env.install_process_env()
        os.environ["AICMO_CAM_FREQUENCY_CAPS"] = DEFAULT_CAPS
        from aicmo.config import reload_settings
        from aicmo.migrate import upgrade

        reload_settings()
        upgrade(env.database_url)
        from sqlalchemy import text

        import tasks  # noqa: F401  (installs the Celery dispatcher: enqueues reach Redis)
        from aicmo.db import get_engine
        from tests.support.actions import EFFECTS_DDL

        with get_engine(env.database_url).begin() as conn:
            conn.execute(text(EFFECTS_DDL.format(id_type="BIGSERIAL PRIMARY KEY")))
        figures = {
            **measure_end_to_end(env, e2e_n, rounds),
            **measure_fairness(env, backlog),
            **measure_publish_admission(env.database_url, 100 if quick else N_PUBLISH),
            **measure_claims(env.database_url, 300 if quick else N_CLAIMS),
        }
    load_at_end = os.getloadavg()
    busy = max(load_at_start[0], load_at_end[0]) > 1.0
    lines = [
        "# Admission benchmark (issue 15)",
        "",
        f"`python -m tests.benchmarks.bench_admission{' --quick' if quick else ''}` (run by"
        " `make bench`; `--quick` for a short run). Its own PostgreSQL database and Redis db;",
        "real `celery worker` processes (2 x `-c 2` per side) on this 2-core machine. The module",
        "docstring says what each line times.",
        "",
        f"Load average (1, 5, 15 min) at start: {', '.join(f'{x:.2f}' for x in load_at_start)};"
        f" at end: {', '.join(f'{x:.2f}' for x in load_at_end)}."
        + (
            " **Measured on a busy machine** (other sessions running tests): the ratios"
            " compare sides of the same run, the absolute rates are low."
            if busy
            else ""
        ),
        "",
        "| figure | value |",
        "|---|---|",
        *[f"| {name} | {value} |" for name, value in figures.items()],
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if "--no-write" not in sys.argv:
        Path(ROOT / "BENCHMARKS-admission.md").write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
