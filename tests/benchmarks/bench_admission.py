"""``python -m tests.benchmarks.bench_admission``: what admission costs (issue 15).

Measured in this process on its own PostgreSQL database (BenchEnv), nothing mocked:

* publish admission: the send-window check and the per-person cap (lock, count, contact row)
  timed inside the same transaction ``begin_publish`` runs, against one whole publish run
  through the worker's executor (claim, admission, proof send, record). Target: < 10%.
* claim with a concurrency key: ms per action run through the executor for a type with no
  key (T_NOOP) and one with a key (T_KEYED: slot taken in the claim, released after).
* fairness: see tests/integration/test_fairness.py (real workers; its figure is printed).

Written to BENCHMARKS-admission.md; ``make bench`` runs it after the main harness.
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


def measure_publish_admission(url: str) -> dict[str, Any]:
    from datetime import UTC, datetime

    from sqlalchemy import select

    from aicmo.cam import admission
    from aicmo.cam.campaigns import get_campaign
    from aicmo.cam.models import Lead, OutreachMessage
    from aicmo.db import session_factory
    from aicmo.orchestration.adapters.campaign_adapter import handle_campaign_publish

    pairs = _campaign(url, 2 * N_PUBLISH)
    timed, run = pairs[:N_PUBLISH], pairs[N_PUBLISH:]
    admission_ms: list[float] = []
    for message_id, _ in timed:
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
    e2e_ms: list[float] = []
    for message_id, action_id in run:
        with session_factory(url)() as s:
            started = time.perf_counter()
            handle_campaign_publish(s, action_id, {"message_id": message_id}, proof_mode=True)
            e2e_ms.append((time.perf_counter() - started) * 1000)
    cost, whole = statistics.median(admission_ms), statistics.median(e2e_ms)
    return {
        "publish admission (window + cap), median ms": round(cost, 3),
        "whole publish through the executor, median ms": round(whole, 3),
        "admission share of a publish": f"{100 * cost / whole:.1f}%",
    }


def measure_claims(url: str) -> dict[str, Any]:
    from aicmo.db import session_factory
    from aicmo.orchestration.executor import Executor
    from aicmo.orchestration.queue import ActionQueue
    from tests.support.campaigns import recording_dispatcher

    out: dict[str, Any] = {}
    executor = Executor(worker="bench")
    kinds: list[tuple[str, Any]] = [
        ("T_NOOP", lambda i: {"n": i}),
        ("T_KEYED", lambda i: {"account": "a", "sleep": 0, "tag": str(i)}),
    ]
    for action_type, payload in kinds:
        with recording_dispatcher(), session_factory(url)() as s, s.begin():
            ids = [
                ActionQueue.enqueue_action(s, action_type, payload(i)).id for i in range(N_CLAIMS)
            ]
        with recording_dispatcher():
            # Warm-up: a key's first claim makes its slot rows (and is woken at once).
            first = executor.run(ids[0], action_type)
            if first.kind.value == "WAITING":
                first = executor.run(ids[0], action_type)
            assert first.kind.value == "SUCCEEDED", first
        ids = ids[1:]
        started = time.perf_counter()
        with recording_dispatcher():
            for action_id in ids:
                outcome = executor.run(action_id, action_type)
                assert outcome.kind.value == "SUCCEEDED", outcome
        out[f"{action_type} run in-process, ms/action"] = round(
            (time.perf_counter() - started) * 1000 / len(ids), 3
        )
    plain, keyed = out["T_NOOP run in-process, ms/action"], out["T_KEYED run in-process, ms/action"]
    out["concurrency key overhead, ms/action"] = round(keyed - plain, 3)
    return out


def main() -> int:
    with BenchEnv() as env:
        env.install_process_env()
        os.environ["AICMO_CAM_FREQUENCY_CAPS"] = "1/24h,3/7d"
        from aicmo.config import reload_settings
        from aicmo.migrate import upgrade

        reload_settings()
        upgrade(env.database_url)
        from sqlalchemy import text

        from aicmo.db import get_engine
        from tests.support.actions import EFFECTS_DDL

        with get_engine(env.database_url).begin() as conn:
            conn.execute(text(EFFECTS_DDL.format(id_type="BIGSERIAL PRIMARY KEY")))
        figures = {
            **measure_publish_admission(env.database_url),
            **measure_claims(env.database_url),
        }
    lines = [
        "# Admission benchmark (issue 15)",
        "",
        "`python -m tests.benchmarks.bench_admission` (run by `make bench`). In-process, one",
        "PostgreSQL database of its own; see the module docstring for what each line times.",
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
