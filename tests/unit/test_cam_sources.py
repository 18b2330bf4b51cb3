"""The CSV lead source and how FETCH_LEADS cuts its output into capture events."""

from __future__ import annotations

import inspect
import os
from pathlib import Path

import pytest

from aicmo.config import Settings
from aicmo.gateways.leads import CsvLeadSource, column_name, lead_source
from aicmo.orchestration.adapters.leads_adapter import _chunks, event_id, source_kind
from aicmo.orchestration.errors import PermanentError, RealRunUnconfigured


def test_csv_pages_with_a_cursor(tmp_path: Path) -> None:
    path = tmp_path / "l.csv"
    path.write_text("Email Address,First-Name\n" + "".join(f"u{i}@x.io,U{i}\n" for i in range(5)))
    source = lead_source(f"csv:{path}")
    assert isinstance(source, CsvLeadSource)
    first = source.fetch("key", limit=2)
    assert first.leads == [
        {"email": "u0@x.io", "first_name": "U0"},
        {"email": "u1@x.io", "first_name": "U1"},
    ]
    assert first.next_cursor == "2"
    last = source.fetch("key", cursor="4", limit=2)
    assert (len(last.leads), last.next_cursor) == (1, None)


def test_csv_errors_are_permanent(tmp_path: Path) -> None:
    with pytest.raises(PermanentError, match="does not exist"):
        CsvLeadSource(tmp_path / "none.csv").fetch("k")
    (tmp_path / "bin.csv").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(PermanentError, match="not UTF-8"):
        CsvLeadSource(tmp_path / "bin.csv").fetch("k")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(PermanentError, match="no header row"):
        CsvLeadSource(tmp_path / "empty.csv").fetch("k")
    with pytest.raises(RealRunUnconfigured, match="supported: csv"):
        lead_source("hubspot:list/3")


def test_a_lead_file_swapped_for_a_symlink_after_the_check_is_not_followed(tmp_path: Path) -> None:
    # FETCH_LEADS checks the resolved path, then reads it; a symlink planted in between (in
    # the file's place or a folder's) must not lead the read out of the import folder.
    root = tmp_path / "imports"
    (root / "sub").mkdir(parents=True)
    (tmp_path / "secret.csv").write_text("email\nsecret@example.com\n")
    (root / "leads.csv").symlink_to(tmp_path / "secret.csv")
    (root / "sub" / "x.csv").write_text("email\nok@example.com\n")
    (root / "sub").rename(root / "was-sub")
    (root / "sub").symlink_to(tmp_path, target_is_directory=True)
    (tmp_path / "x.csv").write_text("email\nsecret@example.com\n")
    for path in (root / "leads.csv", root / "sub" / "x.csv"):
        with pytest.raises(PermanentError, match="symlink"):
            CsvLeadSource(path, root=root).rows()
    assert CsvLeadSource(root / "was-sub" / "x.csv", root=root).rows() == [
        {"email": "ok@example.com"}
    ]


def test_a_lead_file_that_is_not_a_regular_file_is_refused_without_blocking(
    tmp_path: Path,
) -> None:
    fifo = tmp_path / "leads.csv"
    os.mkfifo(fifo)  # opening it for reading would wait for a writer forever
    with pytest.raises(PermanentError, match="not a regular file"):
        CsvLeadSource(fifo, root=tmp_path).rows()
    with pytest.raises(PermanentError, match="not a regular file"):
        CsvLeadSource(fifo).rows()
    with pytest.raises(PermanentError, match="is a folder"):
        CsvLeadSource(tmp_path).rows()


def test_the_lead_import_folder_is_never_unset_empty_or_the_whole_filesystem() -> None:
    assert Settings(cam_lead_import_dir="some/where").cam_lead_import_dir == (
        Path.cwd() / "some" / "where"
    )
    for value in ("", "  ", "/", "/.."):
        with pytest.raises(ValueError, match="AICMO_CAM_LEAD_IMPORT_DIR"):
            Settings(cam_lead_import_dir=value)


def test_column_names_are_normalised() -> None:
    assert [column_name(h) for h in ("E-mail", " First Name ", "LinkedIn", "Job Title")] == [
        "email",
        "first_name",
        "linkedin_url",
        "title",
    ]


def test_capture_events_are_small_and_content_addressed() -> None:
    leads = [{"email": f"u{i}@x.io", "notes": "n" * 50_000} for i in range(10)]
    chunks = _chunks(leads, 500)
    assert [len(c) for c in chunks] == [3, 3, 3, 1]  # ~192 KiB each at most
    assert event_id(1, chunks[0]) == event_id(1, [dict(lead) for lead in chunks[0]])
    assert event_id(1, chunks[0]) != event_id(2, chunks[0])
    assert event_id(1, chunks[0]).startswith("c1-")
    assert (source_kind("csv:/a.csv"), source_kind("/data/a.csv")) == ("csv", "csv")


def test_multichannel_batch_is_a_real_function_that_imports_cleanly() -> None:
    from aicmo.cam import auto

    assert inspect.isfunction(auto.multichannel_batch)
    assert list(inspect.signature(auto.multichannel_batch).parameters)[:2] == ["db", "campaign_id"]
