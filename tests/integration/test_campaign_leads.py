"""Lead capture (dedupe, validation, DNC), FETCH_LEADS from a CSV file, webhook transactions."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy import func, select

from aicmo.cam import keys, leads, webhooks
from aicmo.cam.errors import CampaignNotFound
from aicmo.cam.models import Lead
from aicmo.config import Settings, get_settings
from aicmo.db import session_factory
from aicmo.orchestration.executor import Executor, OutcomeKind
from aicmo.orchestration.models import AOLAction
from aicmo.orchestration.queue import ActionQueue
from tests.conftest import Book
from tests.support import campaigns as support

pytestmark = pytest.mark.usefixtures("clean", "celery_app")


def all_leads(url: str, campaign_id: int) -> list[Lead]:
    with session_factory(url)() as s:
        return list(
            s.scalars(select(Lead).where(Lead.campaign_id == campaign_id).order_by(Lead.id))
        )


def test_capture_validates_each_lead_and_merges_by_any_identifier(database_url: str) -> None:
    cid = support.create(database_url, n_leads=0)
    batch = [
        {"email": " Ada@Example.COM ", "first_name": "Ada", "plan": "pro"},
        {"email": "ada@example.com", "phone": "0033 6 12 34 56 78", "company": "Acme"},
        {"phone": "+33612345678", "linkedin_url": "https://www.linkedin.com/in/Ada-L/?x=1"},
        {"linkedin_url": "linkedin.com/in/ada-l", "title": "CTO"},
        {"email": "bob@example.com", "consent": "consented", "requires_human_review": True},
        {"first_name": "Ghost"},
        {"email": "x@y"},
        {"phone": "12"},
        {"linkedin_url": "https://example.com/in/ada"},
        "not an object",
    ]
    with session_factory(database_url)() as s, s.begin():
        report = leads.capture(s, cid, "api", batch)
    summary = report.as_dict()
    assert (summary["created"], summary["merged"]) == (2, 3)
    assert [item["index"] for item in summary["invalid"]] == [5, 6, 7, 8, 9]
    reasons = " | ".join(item["reason"] for item in summary["invalid"])
    for expected in (
        "needs an email",
        "not an email address",
        "not a phone number",
        "not a LinkedIn URL",
        "a lead is a JSON object",
    ):
        assert expected in reasons

    ada, bob = all_leads(database_url, cid)
    assert (ada.email, ada.email_domain, ada.phone, ada.linkedin_url) == (
        "ada@example.com",
        "example.com",
        "+33612345678",
        "linkedin.com/in/ada-l",
    )
    assert (ada.first_name, ada.company, ada.title, ada.attributes) == (
        "Ada",
        "Acme",
        "CTO",
        {"plan": "pro"},
    )
    assert ada.identity_hash == leads.identity_hash("ada@example.com")
    assert (bob.consent, bob.requires_human_review, bob.status) == ("CONSENTED", True, "NEW")

    with session_factory(database_url)() as s, s.begin():
        again = leads.capture(s, cid, "api", [{"email": "ADA@example.com", "consent": "DNC"}])
        later = leads.capture(s, cid, "api", [{"email": "ada@example.com", "consent": "CONSENTED"}])
    assert again.merged == later.merged == [ada.id]
    assert all_leads(database_url, cid)[0].consent == "DNC"
    with session_factory(database_url)() as s, s.begin(), pytest.raises(CampaignNotFound):
        leads.capture(s, 999_999, "api", batch)


def test_concurrent_captures_of_one_lead_create_one_row(database_url: str) -> None:
    cid = support.create(database_url, n_leads=0)

    def capture(n: int) -> leads.CaptureReport:
        with session_factory(database_url)() as s, s.begin():
            return leads.capture(s, cid, "api", [{"email": "race@example.com", "title": str(n)}])

    threads = [support.Thread(capture, n) for n in range(6)]
    for thread in threads:
        thread.start()
    reports = [thread.join_result() for thread in threads]
    assert sum(len(r.created) for r in reports) == 1
    assert sum(len(r.merged) for r in reports) == 5
    assert len(all_leads(database_url, cid)) == 1


CSV = """E-mail,First Name,Company,LinkedIn,Mobile,Notes
ada@example.com,Ada,Acme,,,vip
ADA@EXAMPLE.COM,,,https://linkedin.com/in/ada,,
bob@example.com,Bob,Beta,,+33 6 00 00 00 01,
,Nobody,,,,
,,,,,
carol@example.com,Carol,,,,
"""


def test_fetch_leads_reads_a_csv_and_enqueues_its_captures(
    database_url: str, book: Book, shared_worker: object, tmp_path: Path
) -> None:
    cid = support.create(database_url, n_leads=0)
    # The worker reads lead files only inside its import folder (the run's own, see conftest).
    path = Path(os.environ["AICMO_CAM_LEAD_IMPORT_DIR"]) / f"leads-{cid}.csv"
    path.write_text("\ufeff" + CSV, encoding="utf-8")
    with session_factory(database_url)() as s, s.begin():
        fetch = ActionQueue.enqueue_action(
            s, keys.FETCH_LEADS, {"campaign_id": cid, "source": f"csv:{path}", "batch_size": 2}
        )
    result = book.wait_status(fetch.id, "SUCCESS").result_json
    assert (result["source"], result["batches"], result["leads"], result["new_captures"]) == (
        "csv",
        3,
        5,
        3,
    )
    captures = result["capture_action_ids"]
    book.wait_all(captures, "SUCCESS")
    assert all(
        book.action(i).idempotency_key.startswith(f"cam_leads:csv:c{cid}-") for i in captures
    )
    reports = [book.action(i).result_json for i in captures]
    assert sum(r["created"] for r in reports) == 3 and sum(r["merged"] for r in reports) == 1
    assert [i["reason"] for r in reports for i in r["invalid"]] == [
        "payload: Value error, a lead needs an email, a phone number or a LinkedIn URL"
    ]
    found = sorted(all_leads(database_url, cid), key=lambda lead: lead.email or "")
    assert [(lead.email, lead.first_name) for lead in found] == [
        ("ada@example.com", "Ada"),
        ("bob@example.com", "Bob"),
        ("carol@example.com", "Carol"),
    ]
    assert found[0].linkedin_url == "linkedin.com/in/ada"
    assert found[0].attributes == {"notes": "vip"}
    assert found[1].phone == "+33600000001"

    # Fetching the same file again (another action) enqueues no new capture.
    with session_factory(database_url)() as s, s.begin():
        refetch = ActionQueue.enqueue_action(
            s, keys.FETCH_LEADS, {"campaign_id": cid, "source": str(path), "batch_size": 2}
        )
    again = book.wait_status(refetch.id, "SUCCESS").result_json
    assert again["new_captures"] == 0 and again["capture_action_ids"] == captures


def run_fetches(database_url: str, cid: int, sources: list[str]) -> list[tuple[OutcomeKind, str]]:
    """Run one FETCH_LEADS per source in this process (nothing reaches the worker)."""
    with support.recording_dispatcher():
        with session_factory(database_url)() as s, s.begin():
            ids = [
                ActionQueue.enqueue_action(
                    s, keys.FETCH_LEADS, {"campaign_id": cid, "source": source}
                ).id
                for source in sources
            ]
        outcomes = [Executor().run(i, keys.FETCH_LEADS) for i in ids]
    return [(outcome.kind, outcome.error or "") for outcome in outcomes]


def test_fetch_leads_refuses_files_outside_the_import_folder(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cid = support.create(database_url, n_leads=0)
    inside = tmp_path / "imports"
    inside.mkdir()
    (inside / "ok.csv").write_text(CSV)
    (tmp_path / "secret.csv").write_text(CSV)
    (inside / "link.csv").symlink_to(tmp_path / "secret.csv")
    (inside / "out").symlink_to(tmp_path, target_is_directory=True)
    monkeypatch.setattr(get_settings(), "cam_lead_import_dir", inside)
    escapes = [
        "csv:../secret.csv",
        f"csv:{inside}/../secret.csv",
        f"{tmp_path}/secret.csv",
        "csv:link.csv",  # a symlink inside that points outside
        "csv:out/secret.csv",  # a folder symlink that leads outside
        "csv:/etc/passwd",
    ]
    outcomes = run_fetches(database_url, cid, [*escapes, "csv:nope.csv", "csv:ok.csv"])
    for source, (kind, error) in zip(escapes, outcomes, strict=False):
        assert kind is OutcomeKind.FAILED, source
        assert "outside the import folder" in error, source
    assert outcomes[-2][0] is OutcomeKind.FAILED and "does not exist" in outcomes[-2][1]
    assert outcomes[-1][0] is OutcomeKind.SUCCEEDED


def test_fetch_leads_with_no_import_folder_set_reads_only_var_imports(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AICMO_CAM_LEAD_IMPORT_DIR")
    unset = Settings()
    assert unset.cam_lead_import_dir == (Path.cwd() / "var" / "imports").resolve()
    monkeypatch.setattr(get_settings(), "cam_lead_import_dir", unset.cam_lead_import_dir)
    cid = support.create(database_url, n_leads=0)
    (tmp_path / "anywhere.csv").write_text(CSV)
    outcomes = run_fetches(database_url, cid, [f"csv:{tmp_path}/anywhere.csv", "/etc/passwd"])
    assert [kind for kind, _ in outcomes] == [OutcomeKind.FAILED, OutcomeKind.FAILED]
    assert all("outside the import folder" in error for _, error in outcomes)


def test_a_webhook_in_the_callers_transaction_rolls_back_with_it(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    cid = support.create(database_url, n_leads=0)
    monkeypatch.setattr(get_settings(), "cam_webhook_secrets", {"form": SecretStr("k")})
    body = b'{"event_id": "e1", "campaign_id": %d, "leads": [{"email": "a@b.io"}]}' % cid
    headers = {"X-Aicmo-Signature": webhooks.sign("k", body, int(time.time()), source="form")}
    with support.recording_dispatcher() as sent:
        with session_factory(database_url)() as s:
            s.begin()
            receipt = webhooks.receive("form", body, headers, session=s)
            s.rollback()
        assert sent.ids == []
        with session_factory(database_url)() as s:
            assert s.scalar(select(func.count()).select_from(AOLAction)) == 0
        with session_factory(database_url)() as s, s.begin():
            again = webhooks.receive("form", body, headers, session=s)
        assert sent.ids == [again.action_id] and again.created
    assert receipt.idempotency_key == again.idempotency_key == "cam_leads:form:e1"
    unknown = b'{"event_id": "e2", "campaign_id": 999999, "leads": [{"email": "a@b.io"}]}'
    with pytest.raises(webhooks.BadPayload, match="campaign 999999 does not exist"):
        webhooks.receive(
            "form",
            unknown,
            {"X-Aicmo-Signature": webhooks.sign("k", unknown, int(time.time()), source="form")},
        )
