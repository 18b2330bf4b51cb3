"""Proof-mode artifacts: files under AICMO_ARTIFACT_DIR, each logged with its sha256.

File names derive from the action's idempotency key, so a re-run after a crash overwrites
the same file instead of leaving a second one.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class Artifact:
    path: Path
    sha256: str
    size: int

    @property
    def ref(self) -> str:
        return str(self.path)


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(text: str, limit: int = 80) -> str:
    cleaned = _UNSAFE.sub("_", text).strip("._") or "artifact"
    if len(cleaned) > limit or cleaned != text:
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]
        cleaned = f"{cleaned[:limit]}-{digest}"
    return cleaned


def artifact_fields(written: list[Artifact]) -> dict[str, Any]:
    """How artifacts appear in an action's result_json."""
    return {"artifacts": [{"path": a.ref, "sha256": a.sha256, "bytes": a.size} for a in written]}


class ArtifactWriter:
    def __init__(self, root: Path, action_type: str, idempotency_key: str) -> None:
        self.root = Path(root)
        self.action_type = action_type
        self.idempotency_key = idempotency_key
        self.written: list[Artifact] = []

    @property
    def folder(self) -> Path:
        return self.root.resolve() / self.action_type.lower()

    def write(
        self, content: str | bytes, *, suffix: str = ".txt", name: str | None = None
    ) -> Artifact:
        data = content.encode("utf-8") if isinstance(content, str) else content
        folder = self.folder
        folder.mkdir(parents=True, exist_ok=True)
        stem = safe_name(name if name else self.idempotency_key)
        path = self.folder / f"{stem}{suffix}"
        # Write then rename: a reader never sees half a file, a crash leaves no partial one.
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        artifact = Artifact(path=path, sha256=hashlib.sha256(data).hexdigest(), size=len(data))
        self.written.append(artifact)
        return artifact
