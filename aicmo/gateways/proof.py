"""Proof implementations: write what would have been sent, as artifact files with sha256."""

from __future__ import annotations

import json
from datetime import date

from aicmo.gateways.messages import build_email
from aicmo.gateways.ports import MetricsReport, OutgoingEmail, SendResult, SocialPost
from aicmo.orchestration.artifacts import ArtifactWriter


class ProofEmailSender:
    def __init__(self, artifacts: ArtifactWriter) -> None:
        self.artifacts = artifacts

    def send(self, email: OutgoingEmail, idempotency_key: str) -> SendResult:
        message = build_email(email, idempotency_key)
        artifact = self.artifacts.write(message.as_bytes(), suffix=".eml")
        return SendResult(
            external_id=str(message["Message-ID"]),
            detail="proof: .eml written",
            artifact=artifact,
            provider="proof",
        )


class ProofSocialPoster:
    def __init__(self, artifacts: ArtifactWriter) -> None:
        self.artifacts = artifacts

    def post(self, post: SocialPost, idempotency_key: str) -> SendResult:
        document = {
            "platform": post.platform,
            "content": post.content,
            "audience": post.audience,
            "idempotency_key": idempotency_key,
        }
        artifact = self.artifacts.write(
            json.dumps(document, indent=2, ensure_ascii=False, sort_keys=True), suffix=".json"
        )
        return SendResult(
            external_id=f"proof-{post.platform}-{artifact.sha256[:16]}",
            detail="proof: post written",
            artifact=artifact,
            provider="proof",
        )


class ProofMetricsSource:
    """No provider in proof mode: it reports no numbers of its own (the campaign layer counts
    from its tables) and leaves an artifact saying so."""

    def __init__(self, artifacts: ArtifactWriter) -> None:
        self.artifacts = artifacts

    def fetch(self, campaign_id: int, day: date, idempotency_key: str) -> MetricsReport:
        document = {
            "campaign_id": campaign_id,
            "date": day.isoformat(),
            "metrics": {},
            "source": "proof",
            "idempotency_key": idempotency_key,
        }
        artifact = self.artifacts.write(
            json.dumps(document, indent=2, sort_keys=True), suffix=".metrics.json"
        )
        return MetricsReport(campaign_id, day, {}, "proof", artifact)
