"""The console in a real browser: Debian's chromium, headless, through chromedriver and
Selenium, against a real `aicmo serve`, a real Celery worker and PostgreSQL.

Screenshots of each page go to pytest's temporary folder (``screenshots0``, kept after the
run; its path is printed); the review queue and the overview
are also copied to docs/ for the README.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from aicmo.db import session_factory
from tests.conftest import ROOT, Book
from tests.support import campaigns as support
from tests.support.processes import CeleryProcess, wait_for
from tests.support.web import PASSWORD, WebServer, make_user

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
DOCS = ROOT / "docs"

pytestmark = [pytest.mark.usefixtures("clean"), pytest.mark.slow]


@pytest.fixture(scope="module")
def server(database_url: str, redis_client: Any, log_dir: Path) -> Iterator[WebServer]:
    web = WebServer(log_dir).start()
    yield web
    web.stop()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # pytest's own temporary folder: kept after the run (the last three runs), for review.
    folder = tmp_path_factory.mktemp("screenshots")
    print(f"screenshots in {folder}")
    return folder


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    # A missing browser is a failure, never a skip: .ci/run installs the Debian packages.
    assert CHROMIUM.exists(), f"{CHROMIUM} missing: apt-get install chromium chromium-driver"
    assert CHROMEDRIVER.exists(), f"{CHROMEDRIVER} missing: apt-get install chromium-driver"
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,1000",
        f"--user-data-dir=/tmp/aicmo-chromium-{uuid.uuid4().hex[:8]}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def enqueue(url: str, action_type: str, payload: dict[str, Any]) -> int:
    from aicmo.orchestration.queue import ActionQueue

    with session_factory(url)() as s, s.begin():
        return ActionQueue.enqueue_action(s, action_type, payload, f"b-{uuid.uuid4().hex}").id


def drafted(url: str, n: int = 3) -> tuple[int, list[int]]:
    from aicmo.cam.models import CampaignMetrics
    from aicmo.cam.orchestrator import tick

    cid = support.create(url, n_leads=n, name="Spring launch")
    with session_factory(url)() as s, s.begin():
        tick(s, cid, generator=None)
        today = date.today()
        for back in range(14, 0, -1):  # a fortnight of metrics for the chart
            s.add(
                CampaignMetrics(
                    campaign_id=cid,
                    metric_date=today - timedelta(days=back),
                    leads_captured=20 + (back * 7) % 13,
                    messages_drafted=15 + (back * 5) % 11,
                    messages_approved=12 + (back * 3) % 7,
                    messages_rejected=back % 4,
                    messages_published=10 + (back * 3) % 9,
                    messages_failed=back % 2,
                    by_channel={},
                    external={},
                )
            )
    return cid, [m.id for m in support.messages(url, cid)]


class Console:
    def __init__(self, driver: webdriver.Chrome, server: WebServer, shots: Path) -> None:
        self.driver, self.server, self.shots = driver, server, shots

    def open(self, path: str) -> None:
        self.driver.get(self.server.url + path)

    def find(self, css: str) -> Any:
        return WebDriverWait(self.driver, 20).until(
            ec.presence_of_element_located((By.CSS_SELECTOR, css))
        )

    def text(self) -> str:
        return str(self.driver.find_element(By.TAG_NAME, "body").text)

    def shot(self, name: str) -> Path:
        path = self.shots / f"{name}.png"
        self.driver.save_screenshot(str(path))
        return path

    def login(self, name: str, password: str = PASSWORD) -> None:
        self.open("/login")
        self.find("#name").send_keys(name)
        self.find("#password").send_keys(password)
        self.find("#login").click()
        WebDriverWait(self.driver, 20).until(lambda d: "/login" not in d.current_url)

    def logout(self) -> None:
        self.find("header form.who button").click()
        self.find("#login")


def test_a_reviewer_and_an_operator_at_work(
    browser: webdriver.Chrome,
    server: WebServer,
    shots: Path,
    database_url: str,
    book: Book,
    shared_worker: CeleryProcess,
) -> None:
    from aicmo.cam.models import OutreachMessage

    cid, (first, second, third) = drafted(database_url)
    dead = [enqueue(database_url, "T_ALWAYS_FAIL", {"tag": f"browser-{i}"}) for i in range(2)]
    for action_id in dead:
        book.wait_status(action_id, "DLQ", timeout=60)
    done = enqueue(database_url, "T_NOOP", {"n": 1})
    book.wait_status(done, "SUCCESS")
    operator, viewer = make_user("operator", "ops"), make_user("viewer", "view")
    console = Console(browser, server, shots)

    # Not logged in: every page sends the person to the login form.
    console.open("/review")
    assert "/login" in browser.current_url
    console.shot("01-login")
    console.login(operator)

    console.open("/")
    console.find("#queue-depth")
    assert console.find("#dlq-size").text == "2"
    shutil.copy(console.shot("02-overview"), DOCS / "console-overview.png")

    # The review queue shows each message as it will be sent.
    console.open(f"/review?campaign={cid}")
    article = console.find(f"#message-{first}")
    assert "Hello Ada0" in article.text and "lead0@example0.com" in article.text
    shutil.copy(console.shot("03-review-queue"), DOCS / "console-review-queue.png")

    # Approve one: its CAMPAIGN_PUBLISH runs on the real worker and reaches SUCCESS.
    console.find(f"#pick-{first}").click()
    console.find(f"#note-{cid}").send_keys("looks good")
    console.find(f"#approve-{cid}").click()
    assert "1 message(s) approved" in console.find("#flash").text
    with session_factory(database_url)() as s:
        message = s.get(OutreachMessage, first)
        assert message is not None and message.publish_action_id is not None
        publish_id = message.publish_action_id
    book.wait_status(publish_id, "SUCCESS", timeout=60)
    console.open(f"/actions/{publish_id}")
    wait_for(lambda: "SUCCEEDED" in console.find("#timeline").text, 20, message="timeline")
    assert console.find("#status").text == "SUCCESS"
    console.shot("04-publish-action")

    # Reject another: it will never be sent.
    console.open(f"/review?campaign={cid}")
    console.find(f"#pick-{second}").click()
    console.find(f"#reject-{cid}").click()
    assert "1 message(s) rejected" in console.find("#flash").text
    with session_factory(database_url)() as s:
        rejected = s.get(OutreachMessage, second)
        assert rejected is not None and rejected.publish_status == "REJECTED"
        assert rejected.reviewer == f"web:{operator}"

    # Replay a dead letter from its page.
    console.open("/dlq")
    console.find("#dlq-types")
    console.shot("05-dlq")
    console.open(f"/actions/{dead[0]}")
    console.find("#replay").click()
    assert "replayed" in console.find("#flash").text
    assert "REPLAYED" in book.events(dead[0])

    # A form whose CSRF token was tampered with is refused, and changes nothing.
    console.open(f"/actions/{dead[1]}")
    browser.execute_script(
        "document.querySelectorAll('input[name=csrf_token]').forEach(i => i.value = 'forged')"
    )
    console.find("#replay").click()
    assert "CSRF token missing or wrong" in console.find("#error").text
    console.shot("06-csrf-refused")
    assert "REPLAYED" not in book.events(dead[1])

    # The campaign page: kill switch, today's sends, and the chart.
    console.open(f"/campaigns/{cid}")
    console.find("svg.chart")
    console.shot("07-campaign")
    console.open("/actions?type=T_ALWAYS_FAIL")
    console.find("#actions")
    console.shot("08-actions")

    # A viewer reads, but the server refuses the replay it tries.
    console.logout()
    console.login(viewer)
    console.open(f"/review?campaign={cid}")
    assert "viewers cannot approve" in console.text()
    console.open(f"/actions/{dead[1]}")
    console.find("#replay").click()
    assert "needs operator" in console.find("#error").text
    console.shot("09-role-refused")
    assert "REPLAYED" not in book.events(dead[1])
    with session_factory(database_url)() as s:
        untouched = s.get(OutreachMessage, third)
        assert untouched is not None and untouched.publish_status == "DRAFT"
