"""Pick the MetricsSource (``aicmo.gateways.ports``) for a channel.

Proof mode gets the proof source (no provider numbers; our own counts are the metrics).
Live mode: a social channel with a connected account asks its platform for the numbers of
each post the campaign published that day (:class:`SocialMetricsSource`); any other channel
has no provider integration: :class:`RealRunUnconfigured`, which CAMPAIGN_FETCH_METRICS
records per channel while still storing our own counts.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date

from aicmo.gateways.factory import native_gateway
from aicmo.gateways.ports import MetricsReport, MetricsSource
from aicmo.gateways.proof import ProofMetricsSource
from aicmo.gateways.social import NativeGateway
from aicmo.orchestration.artifacts import ArtifactWriter
from aicmo.orchestration.errors import RealRunUnconfigured

# (campaign id, local date) -> the external ids of the posts published that day.
PostsOf = Callable[[int, date], list[str]]


class SocialMetricsSource:
    """Per-post numbers from the platform, and their sums (plus ``posts``: how many)."""

    def __init__(self, gateway: NativeGateway, posts_of: PostsOf) -> None:
        self.gateway = gateway
        self.posts_of = posts_of

    def fetch(self, campaign_id: int, day: date, idempotency_key: str) -> MetricsReport:
        ids = [i for i in self.posts_of(campaign_id, day) if i]
        per_post = self.gateway.post_metrics(ids) if ids else {}
        totals: dict[str, float] = {"posts": float(len(ids))}
        for numbers in per_post.values():
            for name, value in numbers.items():
                totals[name] = totals.get(name, 0.0) + value
        return MetricsReport(campaign_id, day, totals, self.gateway.provider, per_item=per_post)


def metrics_source(
    channel: str,
    proof_mode: bool,
    artifacts: ArtifactWriter,
    *,
    campaign_id: int | None = None,
    posts_of: PostsOf | None = None,
) -> MetricsSource:
    if proof_mode:
        return ProofMetricsSource(artifacts)
    if posts_of is not None:
        gateway = native_gateway(channel, campaign_id=campaign_id)
        if gateway is not None:
            return SocialMetricsSource(gateway, posts_of)
    raise RealRunUnconfigured(f"live mode: no metrics source is configured for {channel!r}")
