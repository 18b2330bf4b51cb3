"""A real Flower, on the real Redis broker, watching the real worker run actions.

Flower learns about tasks only from the workers' events, so it must see each action's task
under its ``aol.<TYPE>`` name, with the action id as its only argument, and in the state the
AOL put it in: SUCCESS, RETRY then SUCCESS, and FAILURE for a dead letter.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from aicmo.db import session_scope
from aicmo.orchestration.queue import ActionQueue
from tests.conftest import Book
from tests.support.processes import CeleryProcess, wait_for

pytestmark = pytest.mark.usefixtures("clean")

USER, PASSWORD = "ops", "flower-test-secret"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def flower(celery_app: Any, shared_worker: CeleryProcess, log_dir: Path) -> Iterator[str]:
    """``celery -A tasks flower`` with basic auth from the environment, as in compose."""
    port = free_port()
    process = CeleryProcess(
        "flower",
        ["--address=127.0.0.1", f"--port={port}"],
        log_dir,
        env={"FLOWER_BASIC_AUTH": f"{USER}:{PASSWORD}"},
    ).start()
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if not process.alive():
            raise RuntimeError(f"flower exited:\n{process.log()}")
        try:
            return httpx.get(f"{url}/healthcheck", timeout=1).text == "OK"
        except httpx.HTTPError:
            return False

    wait_for(up, 30, interval=0.2, message=f"flower on {url}")

    # Flower has subscribed to events once it lists the worker.
    def sees_worker() -> bool:
        workers = httpx.get(
            f"{url}/api/workers?refresh=1", auth=(USER, PASSWORD), timeout=10
        ).json()
        return bool(workers)

    wait_for(sees_worker, 30, interval=0.5, message="flower to see the worker")
    yield url
    process.stop()


def flower_tasks(url: str) -> dict[int, list[dict[str, Any]]]:
    """Flower's tasks grouped by the action id in their arguments."""
    found = httpx.get(f"{url}/api/tasks", auth=(USER, PASSWORD), timeout=10).json()
    by_action: dict[int, list[dict[str, Any]]] = {}
    for task in found.values():
        if not str(task.get("name", "")).startswith("aol.T_"):
            continue
        args = task["args"].strip("()[], ")
        by_action.setdefault(int(args), []).append(task)
    return by_action


def enqueue(action_type: str, payload: dict[str, Any]) -> int:
    with session_scope() as session:
        return ActionQueue.enqueue_action(session, action_type, payload).id


def test_flower_needs_basic_auth(flower: str) -> None:
    assert httpx.get(f"{flower}/api/tasks", timeout=10).status_code == 401
    assert httpx.get(f"{flower}/api/tasks", auth=(USER, "wrong"), timeout=10).status_code == 401
    assert httpx.get(f"{flower}/", timeout=10).status_code == 401
    ok = httpx.get(f"{flower}/api/tasks", auth=(USER, PASSWORD), timeout=10)
    assert ok.status_code == 200


def test_flower_sees_success_retry_and_dead_letter(flower: str, book: Book) -> None:
    succeeds = enqueue("T_EFFECT", {"tag": "flower-ok"})
    retries = enqueue("T_EFFECT", {"tag": "flower-retry", "fail_first": 1})
    dies = enqueue("T_ALWAYS_FAIL", {"tag": "flower-dlq"})
    book.wait_status(succeeds, "SUCCESS")
    book.wait_status(retries, "SUCCESS")
    book.wait_status(dies, "DLQ")
    ids = {succeeds, retries, dies}

    def settled() -> dict[int, list[dict[str, Any]]] | None:
        tasks = flower_tasks(flower)
        final = {"SUCCESS", "FAILURE"}
        if ids <= set(tasks) and all(t["state"] in final for i in ids for t in tasks[i]):
            return tasks
        return None

    tasks = wait_for(settled, 20, interval=0.3, message="flower to see the three actions")
    assert isinstance(tasks, dict)

    # One Celery task per action: Celery's retry re-sends the same task id.
    assert {i: len(tasks[i]) for i in ids} == {i: 1 for i in ids}
    ok, retried, dead = tasks[succeeds][0], tasks[retries][0], tasks[dies][0]

    assert (ok["name"], ok["state"], ok["retries"]) == ("aol.T_EFFECT", "SUCCESS", 0)
    assert ok["retried"] is None

    # The retried action went through Flower's RETRY state before its SUCCESS.
    assert (retried["name"], retried["state"], retried["retries"]) == (
        "aol.T_EFFECT",
        "SUCCESS",
        1,
    )
    assert retried["retried"] is not None

    assert (dead["name"], dead["state"], dead["retries"]) == ("aol.T_ALWAYS_FAIL", "FAILURE", 2)
    assert "dead-lettered after 3 attempts" in dead["exception"]

    # Arguments are the action id only: no payload, no key (Flower shows no secrets).
    for action_id in ids:
        task = tasks[action_id][0]
        assert task["args"] in (f"[{action_id}]", f"({action_id},)")
        assert task["kwargs"] == "{}"
        assert "flower-" not in str(task["args"]) + str(task["kwargs"])

    # The per-task API agrees, and the action's own record matches what Flower saw.
    info = httpx.get(
        f"{flower}/api/task/info/{dead['uuid']}", auth=(USER, PASSWORD), timeout=10
    ).json()
    assert info["state"] == "FAILURE"
    assert book.action(dies).attempts == 3
    assert book.events(retries).count("RETRY_SCHEDULED") == 1
