"""The OpenAI-compatible client against a real local HTTP server: success, 429 + Retry-After,
500, a server that never answers, bad credentials; the global token/request limits and the
daily budgets in Redis (shared across processes); and LLM calls run by a real worker."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy.orm import Session

from aicmo.config import Settings
from aicmo.llm import (
    LLMBadCredentials,
    LLMBudgetExceeded,
    LLMError,
    LLMPermanentError,
    LLMRateLimited,
    LLMTimeout,
    LLMTransientError,
    get_text_generator,
    text_generator,
)
from aicmo.llm.budget import LLMBudget
from aicmo.llm.client import OpenAIChatClient, estimate_tokens
from aicmo.llm.template import TemplateTextGenerator
from aicmo.orchestration.errors import Deferred
from aicmo.orchestration.queue import ActionQueue
from aicmo.ratelimit import Bucket, RateLimiter, RedisCounterStore
from tests.conftest import ROOT, Book
from tests.support.fake_http import COMPLETION_PREFIX, FakeHTTPServer
from tests.support.gateway_actions import GATEWAYS_QUEUE, live_worker_env, route_gateways_queue
from tests.support.processes import CeleryProcess, worker

pytestmark = pytest.mark.usefixtures("clean")

API_KEY = "sk-test-5b0e7c2f9a4d4e61"


@pytest.fixture(scope="module")
def server() -> Iterator[FakeHTTPServer]:
    fake = FakeHTTPServer().start()
    yield fake
    fake.stop()


@pytest.fixture(autouse=True)
def fresh(server: FakeHTTPServer) -> None:
    server.clear()


@pytest.fixture
def store(redis_client: redis.Redis) -> RedisCounterStore:
    return RedisCounterStore(os.environ["AICMO_BROKER_URL"])


def client(server: FakeHTTPServer, **kw: Any) -> OpenAIChatClient:
    options: dict[str, Any] = {
        "base_url": f"{server.url}/v1",
        "model": "test-model",
        "api_key": API_KEY,
        "system_prompt": "You write outreach.",
        "timeout": 5.0,
        "connect_timeout": 1.0,
        "retry_base_delay": 0.1,
    }
    options.update(kw)
    return OpenAIChatClient(**options)


def completions(server: FakeHTTPServer) -> list[Any]:
    return server.seen("/v1/chat/completions")


# -- the client, called directly -----------------------------------------------------------


def test_generate_sends_a_chat_completion_and_returns_the_text(server: FakeHTTPServer) -> None:
    text = client(server).generate("Write to Ada", max_tokens=80, idempotency_key="draft-1")

    assert text == COMPLETION_PREFIX + "Write to Ada"
    [seen] = completions(server)
    assert seen.headers["authorization"] == f"Bearer {API_KEY}"
    assert seen.headers["idempotency-key"] == "draft-1"
    assert seen.json() == {
        "model": "test-model",
        "messages": [
            {"role": "system", "content": "You write outreach."},
            {"role": "user", "content": "Write to Ada"},
        ],
        "max_tokens": 80,
        "temperature": 0.7,
    }


def test_a_short_retry_after_is_waited_out_within_the_call(server: FakeHTTPServer) -> None:
    started = time.monotonic()
    text = client(server).generate("hello @@limited:1@@", idempotency_key="d-429")
    assert text.startswith(COMPLETION_PREFIX)
    assert len(completions(server)) == 2
    assert time.monotonic() - started >= 1.0  # the provider's Retry-After: 1


def test_a_retry_after_beyond_the_deadline_is_handed_to_the_caller(server: FakeHTTPServer) -> None:
    started = time.monotonic()
    with pytest.raises(LLMRateLimited) as raised:
        client(server).generate("hello @@429:60@@", idempotency_key="d-429-long")
    assert raised.value.retry_after == 60
    assert time.monotonic() - started < 5.0  # far below the 60 s it was told to wait
    assert len(completions(server)) == 1


def test_500_is_retried_with_backoff_then_given_up(server: FakeHTTPServer) -> None:
    assert client(server).generate("x @@flaky:2@@", idempotency_key="d-flaky").startswith("Draft")
    assert len(completions(server)) == 3
    server.clear()
    with pytest.raises(LLMTransientError, match="HTTP 500"):
        client(server, max_retries=1).generate("x @@500@@", idempotency_key="d-500")
    assert len(completions(server)) == 2
    assert {s.headers["idempotency-key"] for s in completions(server)} == {"d-500"}


def test_a_server_that_never_answers_ends_at_the_timeout(server: FakeHTTPServer) -> None:
    started = time.monotonic()
    with pytest.raises(LLMTimeout, match="no answer within the 1s limit"):
        client(server, timeout=1.0).generate("@@hang@@")
    assert 0.95 <= time.monotonic() - started < 2.5  # (slack for a busy machine)


def test_bad_credentials_are_permanent_and_not_retried(server: FakeHTTPServer) -> None:
    with pytest.raises(LLMBadCredentials, match="credentials refused") as raised:
        client(server).generate("@@401@@")
    assert API_KEY not in str(raised.value)  # the provider echoed the key back
    assert len(completions(server)) == 1


def test_an_empty_completion_is_permanent(server: FakeHTTPServer) -> None:
    with pytest.raises(LLMPermanentError, match="content_filter"):
        client(server).generate("@@empty@@")


def test_request_and_token_limits_are_global_and_refuse_past_the_wait(
    server: FakeHTTPServer, store: RedisCounterStore
) -> None:
    limiter = RateLimiter(store, max_wait=0.5)
    tokens = Bucket("llm:test:tokens", per_minute=120, burst=120)
    first = client(server, system_prompt="", limiter=limiter, token_bucket=tokens)
    second = client(
        server, system_prompt="", limiter=limiter, token_bucket=tokens
    )  # "another worker"
    first.generate("hi", max_tokens=100)
    with pytest.raises(LLMRateLimited) as raised:
        second.generate("hi", max_tokens=100)
    # 120 tokens/min = 2/s. The first call took its worst case W from 120; the second needs
    # W again, so it must wait for W - (120 - W) tokens: (2W - 120) / 2 seconds.
    worst = estimate_tokens("hi") + 100
    assert raised.value.retry_after == pytest.approx((2 * worst - 120) / 2, abs=0.5)
    assert len(completions(server)) == 1


def test_our_own_rate_limit_defers_the_call_without_spending_an_attempt(
    server: FakeHTTPServer, store: RedisCounterStore
) -> None:
    limiter = RateLimiter(store, max_wait=0.2)
    requests = Bucket("llm:test:deferred", per_minute=6, burst=1)
    llm = client(server, limiter=limiter, request_bucket=requests)
    llm.generate("one")
    with pytest.raises(LLMRateLimited) as ours:
        llm.generate("two")
    # Waiting for a turn in our own bucket is a Deferred (the attempt is given back); the
    # provider's own 429 did reach it, and stays an ordinary transient error.
    assert isinstance(ours.value, Deferred)
    with pytest.raises(LLMRateLimited) as theirs:
        client(server).generate("x @@429:60@@")
    assert not isinstance(theirs.value, Deferred)
    assert len(completions(server)) == 2


# -- budgets -------------------------------------------------------------------------------


def test_campaign_and_total_budgets_refuse_before_calling(
    server: FakeHTTPServer, store: RedisCounterStore
) -> None:
    budget = LLMBudget(store, daily_tokens=300, campaign_daily_tokens=150)
    llm = client(server, system_prompt="", budget=budget)
    worst = estimate_tokens("hi") + 100
    llm.generate("hi", campaign_id=1, max_tokens=100)  # reserves 110, settles to 18
    assert budget.spent(1)["tokens"] == 18
    with pytest.raises(LLMBudgetExceeded, match="this campaign's daily token budget"):
        llm.generate("hi", campaign_id=1, max_tokens=150)  # 18 + 160 > 150
    assert worst < 150
    llm.generate("hi", campaign_id=2, max_tokens=100)
    llm.generate("hi", campaign_id=3, max_tokens=100)  # total 54
    with pytest.raises(LLMBudgetExceeded, match="the total daily token budget"):
        llm.generate("hi", campaign_id=4, max_tokens=250)  # 54 + 260 > 300
    assert len(completions(server)) == 3
    assert budget.spent()["tokens"] == 54
    assert isinstance(LLMBudgetExceeded("x"), LLMError)  # the campaign falls back on it


def test_a_spend_budget_counts_dollars(server: FakeHTTPServer, store: RedisCounterStore) -> None:
    budget = LLMBudget(
        store, daily_usd=0.03, usd_per_1k_prompt_tokens=0.5, usd_per_1k_completion_tokens=1.0
    )
    llm = client(server, system_prompt="", budget=budget)
    # Each call reserves its worst case, (8 * 0.5 + 10 * 1.0) / 1000 = $0.014, and settles to
    # what the server reports, 11 prompt + 7 completion tokens = $0.0125.
    llm.generate("hi", max_tokens=10)
    llm.generate("hi", max_tokens=10)  # 0.0125 + 0.014 <= 0.03
    assert budget.spent()["usd"] == pytest.approx(0.025)
    with pytest.raises(LLMBudgetExceeded, match="spend budget"):
        llm.generate("hi", max_tokens=10)  # 0.025 + 0.014 > 0.03
    assert len(completions(server)) == 2
    assert budget.spent()["usd"] == pytest.approx(0.025)


def test_a_failed_call_gives_its_reservation_back(
    server: FakeHTTPServer, store: RedisCounterStore
) -> None:
    budget = LLMBudget(store, campaign_daily_tokens=1000)
    with pytest.raises(LLMBadCredentials):
        client(server, budget=budget).generate("@@401@@", campaign_id=5)
    assert budget.spent(5)["tokens"] == 0


def test_a_slow_provider_is_charged_for_every_timed_out_call_and_the_budget_stops_spending(
    server: FakeHTTPServer, store: RedisCounterStore
) -> None:
    # The provider answers (and bills) after the client has given up: each timed-out call is
    # charged its worst case, so the budget runs out and later calls never reach the provider.
    prompt = "slow one @@slow:1.5@@"
    worst = estimate_tokens(prompt) + 50
    budget = LLMBudget(store, campaign_daily_tokens=3 * worst)
    llm = client(server, system_prompt="", budget=budget, timeout=0.5)
    outcomes = []
    for _ in range(6):
        try:
            llm.generate(prompt, campaign_id=11, max_tokens=50)
            outcomes.append("ok")
        except LLMTimeout:
            outcomes.append("timeout")
        except LLMBudgetExceeded:
            outcomes.append("refused")
    assert outcomes == ["timeout"] * 3 + ["refused"] * 3
    assert len(completions(server)) == 3
    assert budget.spent(11)["tokens"] == 3 * worst


def test_each_attempt_that_reached_the_provider_is_charged(
    server: FakeHTTPServer, store: RedisCounterStore
) -> None:
    # Two 500s then an answer in one call: the two failed attempts may have been billed, so
    # each costs its worst case; the answer costs what the provider reports (11 + 7).
    budget = LLMBudget(store, campaign_daily_tokens=10_000)
    prompt = "x @@flaky:2@@"
    worst = estimate_tokens(prompt) + 100
    text = client(server, system_prompt="", budget=budget).generate(
        prompt, campaign_id=12, max_tokens=100, idempotency_key="d-charged"
    )
    assert text.startswith(COMPLETION_PREFIX)
    assert len(completions(server)) == 3
    assert budget.spent(12)["tokens"] == 2 * worst + 18


def test_a_retry_without_room_in_the_budget_is_refused_before_it_is_sent(
    server: FakeHTTPServer, store: RedisCounterStore
) -> None:
    prompt = "x @@500@@"
    worst = estimate_tokens(prompt) + 100
    budget = LLMBudget(store, campaign_daily_tokens=worst + worst // 2)
    with pytest.raises(LLMBudgetExceeded, match=r"after attempt 1: .*HTTP 500"):
        client(server, system_prompt="", budget=budget).generate(
            prompt, campaign_id=13, max_tokens=100, idempotency_key="d-no-room"
        )
    assert len(completions(server)) == 1
    assert budget.spent(13)["tokens"] == worst


def test_a_call_that_never_reached_the_provider_costs_nothing(store: RedisCounterStore) -> None:
    with socket.socket() as probe:  # a port with nothing listening: the connection is refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    budget = LLMBudget(store, campaign_daily_tokens=1000)
    llm = OpenAIChatClient(
        base_url=f"http://127.0.0.1:{port}/v1",
        model="m",
        budget=budget,
        timeout=2.0,
        max_retries=1,
        retry_base_delay=0.05,
    )
    with pytest.raises(LLMTransientError, match="network error"):
        llm.generate("hi", campaign_id=14, max_tokens=100)
    assert budget.spent(14)["tokens"] == 0


BUDGET_SCRIPT = """
import json, sys
from aicmo.llm import LLMBudgetExceeded
from aicmo.llm.budget import LLMBudget
from aicmo.llm.client import OpenAIChatClient
from aicmo.ratelimit import RedisCounterStore

url, base, limit, prompt, name = sys.argv[1:]
budget = LLMBudget(RedisCounterStore(url), campaign_daily_tokens=int(limit))
llm = OpenAIChatClient(base_url=base, model="m", budget=budget, timeout=10)
ok = refused = 0
for n in range(5):
    try:
        llm.generate(prompt, campaign_id=42, max_tokens=20, idempotency_key=f"{name}-{n}")
        ok += 1
    except LLMBudgetExceeded:
        refused += 1
print(json.dumps([ok, refused]))
"""


def test_a_campaign_budget_holds_across_four_processes(
    server: FakeHTTPServer, store: RedisCounterStore
) -> None:
    # Each call costs exactly what it reserves (the server reports that usage), so a budget
    # of six calls admits exactly six of twenty concurrent ones, whatever the interleaving.
    prompt = "Write a short note to Ada about our launch @@usage:00@@"
    cost = estimate_tokens(prompt) + 20
    prompt = prompt.replace("00", f"{cost:02d}")
    assert estimate_tokens(prompt) + 20 == cost
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                BUDGET_SCRIPT,
                os.environ["AICMO_BROKER_URL"],
                f"{server.url}/v1",
                str(6 * cost),
                prompt,
                f"p{n}",
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(4)
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        results.append(json.loads(out))
    assert sum(ok for ok, _ in results) == 6
    assert sum(refused for _, refused in results) == 14
    assert len(completions(server)) == 6
    assert LLMBudget(store).spent(42)["tokens"] == 6 * cost


# -- configuration and the template provider ------------------------------------------------


def test_no_llm_configured_means_templates(server: FakeHTTPServer) -> None:
    assert get_text_generator(Settings(llm_base_url=None)) is None
    fallback = text_generator(Settings(llm_base_url=None))
    assert isinstance(fallback, TemplateTextGenerator)
    first = fallback.generate("Tell Ada about the launch", campaign_id=1)
    assert first == TemplateTextGenerator().generate("Tell Ada about the launch")
    assert "Tell Ada about the launch" in first
    configured = get_text_generator(
        Settings(llm_base_url=f"{server.url}/v1", llm_api_key=API_KEY, llm_model="m")
    )
    assert isinstance(configured, OpenAIChatClient) and configured.model == "m"


def test_settings_are_validated_with_clear_errors() -> None:
    with pytest.raises(ValueError, match="AICMO_LLM_BASE_URL must be http"):
        Settings(llm_base_url="api.openai.com/v1")
    with pytest.raises(ValueError, match="a USD budget needs"):
        Settings(llm_daily_budget_usd=5)
    with pytest.raises(ValueError, match="AICMO_SMTP_USERNAME and AICMO_SMTP_PASSWORD"):
        Settings(smtp_username="me")


# -- LLM calls in a real live-mode worker --------------------------------------------------


@pytest.fixture(scope="module")
def live_worker(server: FakeHTTPServer, celery_app: Any, log_dir: Path) -> Iterator[CeleryProcess]:
    route_gateways_queue(celery_app)
    env = live_worker_env(
        llm_base_url=f"{server.url}/v1",
        llm_api_key=API_KEY,
        llm_timeout_seconds="1.5",
        llm_max_retries="1",
        llm_retry_base_delay_seconds="0.2",
        llm_campaign_daily_token_budget="1000",
        llm_requests_per_minute="6000",
        llm_burst_requests="100",
    )
    process = worker(log_dir, concurrency=1, env=env, extra=["-Q", GATEWAYS_QUEUE]).start()
    yield process
    process.stop()


def draft(session: Session, prompt: str, key: str, **extra: Any) -> int:
    with session.begin():
        return ActionQueue.enqueue_action(session, "T_GW_LLM", {"prompt": prompt, **extra}, key).id


def test_llm_action_succeeds(live_worker: CeleryProcess, session: Session, book: Book) -> None:
    done = book.wait_status(draft(session, "Hello Ada", "llm-ok"), "SUCCESS", timeout=15)
    assert done.result_json["text"] == COMPLETION_PREFIX + "Hello Ada"


def test_llm_hang_goes_to_retry_at_the_timeout_and_frees_the_worker(
    live_worker: CeleryProcess, session: Session, book: Book
) -> None:
    hanging = draft(session, "@@hang@@", "llm-hang")
    following = draft(session, "next", "llm-after-hang")
    started = time.monotonic()
    retry = book.wait_status(hanging, "RETRY", timeout=15)
    book.wait_status(following, "SUCCESS", timeout=15)
    assert time.monotonic() - started < 1.5 + 4  # -c 1: it ran because the hang let go
    assert "no answer within the 1.5s limit" in (retry.last_error or "")


def test_llm_429_goes_to_retry_due_after_retry_after(
    live_worker: CeleryProcess, session: Session, book: Book
) -> None:
    action = book.wait_status(draft(session, "@@429:40@@", "llm-429"), "RETRY", timeout=15)
    assert "HTTP 429" in (action.last_error or "")
    assert (action.not_before_utc - action.updated_at_utc).total_seconds() == pytest.approx(40)


def test_llm_bad_key_and_budget_fail_without_retry(
    live_worker: CeleryProcess, session: Session, book: Book, server: FakeHTTPServer
) -> None:
    denied = book.wait_status(draft(session, "@@401@@", "llm-401"), "FAILED", timeout=15)
    over = book.wait_status(
        draft(session, "long one", "llm-over", campaign_id=9, max_tokens=2000), "FAILED", timeout=15
    )
    assert denied.attempts == 1 and "credentials refused" in (denied.last_error or "")
    assert API_KEY not in (denied.last_error or "")
    assert over.attempts == 1 and "LLMBudgetExceeded" in (over.last_error or "")
    assert [json.loads(s.body)["messages"][-1]["content"] for s in completions(server)] == [
        "@@401@@"
    ]
