"""Pick the MetricsSource (``aicmo.gateways.ports``) for a channel.

Proof mode gets the proof source (no provider numbers; our own counts are the metrics).
Live mode has no provider integration yet: :class:`RealRunUnconfigured`, which
CAMPAIGN_FETCH_METRICS records per channel while still storing our own counts.
"""

from __future__ import annotations

from aicmo.gateways.ports import MetricsSource
from aicmo.gateways.proof import ProofMetricsSource
from aicmo.orchestration.artifacts import ArtifactWriter
from aicmo.orchestration.errors import RealRunUnconfigured


def metrics_source(channel: str, proof_mode: bool, artifacts: ArtifactWriter) -> MetricsSource:
    if proof_mode:
        return ProofMetricsSource(artifacts)
    raise RealRunUnconfigured(f"live mode: no metrics source is configured for {channel!r}")
