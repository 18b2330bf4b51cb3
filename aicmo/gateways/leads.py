"""CSV lead source: the ``LeadSource`` port (``aicmo.gateways.ports``) over a local file.

The file is read and parsed once per source object; ``fetch`` pages through its rows with a
cursor (the next row's index). A file is local, so proof and live mode read it alike.
Column names are normalised the way spreadsheets spell them ("E-mail", "First Name", ...).
"""

from __future__ import annotations

import csv
import errno
import io
import os
import stat
from pathlib import Path
from typing import Any

from aicmo.gateways.ports import LeadBatch, LeadSource
from aicmo.orchestration.errors import PermanentError, RealRunUnconfigured

MAX_CSV_BYTES = 50 * 1024 * 1024

# Column names as spreadsheets spell them -> lead fields.
ALIASES = {
    "e_mail": "email",
    "email_address": "email",
    "mail": "email",
    "linkedin": "linkedin_url",
    "linkedin_profile": "linkedin_url",
    "phone_number": "phone",
    "mobile": "phone",
    "firstname": "first_name",
    "given_name": "first_name",
    "lastname": "last_name",
    "surname": "last_name",
    "family_name": "last_name",
    "organisation": "company",
    "organization": "company",
    "job_title": "title",
}


def column_name(header: str) -> str:
    name = "_".join(header.strip().lower().replace("-", "_").split())
    return ALIASES.get(name, name)


class CsvLeadSource:
    """Leads from a CSV file with a header row (UTF-8, optional BOM).

    With ``root`` (FETCH_LEADS: the import folder), ``path`` must be the resolved path of a
    file inside it, and it is opened one folder at a time without following any symlink: a
    symlink planted after the path was checked cannot lead the read outside the folder.
    """

    def __init__(self, path: Path, *, root: Path | None = None) -> None:
        self.path = Path(path)
        self.root = None if root is None else Path(root)
        self._rows: list[dict[str, Any]] | None = None

    @property
    def name(self) -> str:
        return f"csv:{self.path}"

    def _open(self) -> int:
        # O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer forever.
        flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC
        if self.root is None:
            return os.open(self.path, flags)
        try:
            parts = self.path.relative_to(self.root).parts
        except ValueError:
            raise PermanentError(f"lead file {self.path} is outside {self.root}") from None
        if not parts:
            raise PermanentError(f"lead file {self.path} is a folder")
        folder = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for part in parts[:-1]:
                inner = os.open(
                    part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=folder
                )
                os.close(folder)
                folder = inner
            return os.open(parts[-1], flags | os.O_NOFOLLOW, dir_fd=folder)
        finally:
            os.close(folder)

    def _read(self) -> bytes:
        try:
            fd = self._open()
        except FileNotFoundError:
            raise PermanentError(f"lead file {self.path} does not exist") from None
        except PermissionError:
            raise PermanentError(f"lead file {self.path} is not readable") from None
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise PermanentError(
                    f"lead file {self.path}: a symlink is in its path (it changed after it was "
                    "checked, or points elsewhere): not followed"
                ) from None
            raise
        try:
            info = os.fstat(fd)
            if stat.S_ISDIR(info.st_mode):
                raise PermanentError(f"lead file {self.path} is a folder")
            if not stat.S_ISREG(info.st_mode):
                raise PermanentError(f"lead file {self.path} is not a regular file")
            if info.st_size > MAX_CSV_BYTES:
                raise PermanentError(
                    f"lead file {self.path} is {info.st_size} bytes, over the limit of "
                    f"{MAX_CSV_BYTES}"
                )
        except BaseException:
            os.close(fd)
            raise
        with os.fdopen(fd, "rb") as handle:
            data = handle.read(MAX_CSV_BYTES + 1)
        if len(data) > MAX_CSV_BYTES:  # it grew while being read
            raise PermanentError(f"lead file {self.path} is over the limit of {MAX_CSV_BYTES}")
        return data

    def rows(self) -> list[dict[str, Any]]:
        """Every non-empty row as a dict of its non-empty cells."""
        if self._rows is not None:
            return self._rows
        try:
            text = self._read().decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise PermanentError(f"lead file {self.path} is not UTF-8: {exc}") from None
        reader = csv.reader(io.StringIO(text, newline=""))
        header = next(reader, None)
        if not header:
            raise PermanentError(f"lead file {self.path} has no header row")
        columns = [column_name(cell) for cell in header]
        rows = []
        for cells in reader:
            lead = {
                column: value.strip()
                for column, value in zip(columns, cells, strict=False)
                if column and value.strip()
            }
            if lead:
                rows.append(lead)
        self._rows = rows
        return rows

    def fetch(
        self, idempotency_key: str, *, cursor: str | None = None, limit: int = 500
    ) -> LeadBatch:
        rows = self.rows()
        try:
            start = int(cursor or 0)
        except ValueError:
            raise PermanentError(f"bad cursor {cursor!r} for {self.name}") from None
        end = start + max(1, limit)
        return LeadBatch(
            source=self.name,
            leads=rows[start:end],
            next_cursor=str(end) if end < len(rows) else None,
        )


def lead_source(source: str, *, root: Path | None = None) -> LeadSource:
    """``csv:<path>`` (or a path ending in .csv), read only inside ``root`` when given. Other
    kinds have no implementation yet."""
    if source.startswith("csv:"):
        return CsvLeadSource(Path(source.removeprefix("csv:")), root=root)
    if source.lower().endswith(".csv") and ":" not in source.split("/")[0]:
        return CsvLeadSource(Path(source), root=root)
    raise RealRunUnconfigured(f"no lead source for {source!r} (supported: csv:<path>)")
