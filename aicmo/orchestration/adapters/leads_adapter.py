"""FETCH_LEADS: pull leads from a LeadSource and enqueue CAMPAIGN_CAPTURE_LEADS per batch.

The captures are enqueued in the handler's transaction, so they exist exactly when this
action succeeds. A batch's event id is its campaign and the digest of its leads, so fetching
the same data again (another FETCH_LEADS, a retry) enqueues nothing new, and a file whose
rows changed yields new events only for the batches that changed.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from aicmo.cam import keys
from aicmo.cam.campaigns import get_campaign
from aicmo.cam.leads import MAX_LEADS_PER_CAPTURE, enqueue_capture_batches
from aicmo.config import get_settings
from aicmo.gateways.leads import lead_source
from aicmo.orchestration.context import ActionContext
from aicmo.orchestration.errors import PermanentError
from aicmo.orchestration.registry import registry

__all__ = ["FetchLeadsPayload", "fetch_leads"]

# A capture payload stays well under AICMO_MAX_PAYLOAD_BYTES (256 KiB by default).
MAX_CAPTURE_BYTES = 192 * 1024
MAX_PAGES = 100_000
_KIND = re.compile(r"^([a-z][a-z0-9_]{0,31}):")


class FetchLeadsPayload(BaseModel):
    model_config = ConfigDict(extra="forbid")

    campaign_id: int = Field(gt=0, lt=2**63)
    # What aicmo.gateways.leads.lead_source accepts, e.g. "csv:leads.csv"; a CSV must lie
    # inside AICMO_CAM_LEAD_IMPORT_DIR (relative paths are taken from it).
    source: Annotated[str, StringConstraints(min_length=1, max_length=4096)]
    batch_size: int | None = Field(default=None, ge=1, le=MAX_LEADS_PER_CAPTURE)


def source_kind(source: str) -> str:
    found = _KIND.match(source)
    return found.group(1) if found else "csv"


def _confined(source: str, import_dir: Path) -> str:
    """A CSV path (relative ones are taken from the import folder) must resolve inside
    AICMO_CAM_LEAD_IMPORT_DIR: ``..`` and symlinks are followed before the check, and the
    resolved path is what gets read."""
    if source_kind(source) != "csv":
        return source  # no other kind reads local files (lead_source refuses them)
    root = Path(import_dir).resolve()
    raw = Path(source.removeprefix("csv:"))
    path = (raw if raw.is_absolute() else root / raw).resolve()
    if not path.is_relative_to(root):
        raise PermanentError(f"lead file {raw} is outside the import folder {root}")
    return f"csv:{path}"


def _chunks(leads: list[dict[str, Any]], size: int) -> list[list[dict[str, Any]]]:
    chunks: list[list[dict[str, Any]]] = []
    current: list[dict[str, Any]] = []
    used = 0
    for lead in leads:
        cost = len(json.dumps(lead, ensure_ascii=False, default=str).encode())
        if current and (len(current) >= size or used + cost > MAX_CAPTURE_BYTES):
            chunks.append(current)
            current, used = [], 0
        current.append(lead)
        used += cost
    if current:
        chunks.append(current)
    return chunks


def event_id(campaign_id: int, leads: list[dict[str, Any]]) -> str:
    canonical = json.dumps(leads, sort_keys=True, ensure_ascii=False, default=str)
    return f"c{campaign_id}-{hashlib.sha256(canonical.encode()).hexdigest()[:32]}"


@registry.action(
    keys.FETCH_LEADS,
    payload=FetchLeadsPayload,
)
def fetch_leads(ctx: ActionContext, payload: FetchLeadsPayload) -> dict[str, Any]:
    """Pull leads from a source and enqueue their capture in batches."""
    settings = get_settings()
    campaign = get_campaign(ctx.session, payload.campaign_id)
    spec = _confined(payload.source, settings.cam_lead_import_dir)
    source = lead_source(spec, root=settings.cam_lead_import_dir)
    size = payload.batch_size or settings.cam_capture_batch_size
    batches: list[tuple[str, list[dict[str, Any]]]] = []
    cursor: str | None = None
    for _ in range(MAX_PAGES):
        page = source.fetch(ctx.idempotency_key, cursor=cursor, limit=size)
        for chunk in _chunks(page.leads, size):
            batches.append((event_id(campaign.id, chunk), chunk))
        if page.next_cursor is None:
            break
        if page.next_cursor == cursor:
            raise PermanentError(f"lead source {spec!r} returned the same cursor twice")
        cursor = page.next_cursor
    else:
        raise PermanentError(f"lead source {spec!r} has more than {MAX_PAGES} pages")
    kind = source_kind(spec)
    enqueued = enqueue_capture_batches(ctx.session, campaign.id, kind, batches)
    return {
        "campaign_id": campaign.id,
        "source": kind,
        "batches": len(batches),
        "leads": sum(len(leads) for _, leads in batches),
        "new_captures": sum(1 for item in enqueued if item.created),
        "capture_action_ids": [item.action_id for item in enqueued],
    }
