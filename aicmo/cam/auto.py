"""``multichannel_batch``: draft and queue one batch across a campaign's channels now.

The seed called this from its automation scripts (its ``def`` line was missing, which broke
every import of the module). It runs the tick's own machinery (lease, halt checks, daily
limit, review gate) with the batch spread round-robin over the channels each lead can be
reached on, instead of each step's first reachable channel.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from aicmo.cam.orchestrator import UNSET, TickResult, tick
from aicmo.llm import TextGenerator


def multichannel_batch(
    db: Session,
    campaign_id: int,
    *,
    batch_size: int | None = None,
    now: datetime | None = None,
    generator: TextGenerator | None = UNSET,
    **_legacy: Any,
) -> TickResult:
    """Draft the next step for up to ``batch_size`` due leads (default: the campaign's),
    rotating channels, and queue what is approved. Runs in ``db``'s transaction; the caller
    commits. Unknown keyword arguments of the seed's signature are accepted and ignored."""
    return tick(
        db,
        campaign_id,
        now,
        generator=generator,
        batch_size=batch_size,
        rotate_channels=True,
    )
