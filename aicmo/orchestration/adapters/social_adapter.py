"""POST_SOCIAL: post content to a social platform (proof: a JSON artifact)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, StringConstraints, model_validator
from sqlalchemy.orm import Session

from aicmo.gateways.factory import social_poster
from aicmo.gateways.platforms import length_problem
from aicmo.gateways.ports import SocialPost
from aicmo.orchestration.adapters._common import artifact_fields, context_for, run_number
from aicmo.orchestration.context import ActionContext
from aicmo.orchestration.errors import RealRunUnconfigured
from aicmo.orchestration.registry import registry
from aicmo.orchestration.retry import RetryPolicy

__all__ = ["PostSocialPayload", "RealRunUnconfigured", "handle_post_social", "post_social"]


def _normalise(value: object) -> object:
    return value.strip().lower() if isinstance(value, str) else value


Platform = Annotated[
    str, BeforeValidator(_normalise), StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,31}$")
]


class PostSocialPayload(BaseModel):
    model_config = ConfigDict(extra="forbid")

    social_platform: Platform
    content: Annotated[str, StringConstraints(min_length=1, max_length=10_000)]
    audience: Annotated[str, StringConstraints(max_length=500)] | None = None

    @model_validator(mode="after")
    def _fits_the_platform(self) -> PostSocialPayload:
        # Refused at enqueue, not by the platform after a worker picked it up.
        problem = length_problem(self.social_platform, self.content)
        if problem:
            raise ValueError(f"content is too long for {self.social_platform}: {problem}")
        return self


@registry.action(
    "POST_SOCIAL",
    payload=PostSocialPayload,
    retry=RetryPolicy(max_attempts=5, base_delay=5, max_delay=900),
    soft_time_limit=60,
    time_limit=90,
)
def post_social(ctx: ActionContext, payload: PostSocialPayload) -> dict[str, Any]:
    """Post content to a social platform."""
    poster = social_poster(payload.social_platform, ctx.proof_mode, ctx.artifacts)
    sent = poster.post(
        SocialPost(
            payload.social_platform,
            payload.content,
            payload.audience,
            created_at=ctx.action.created_at_utc,
            attempt=run_number(ctx),
        ),
        ctx.idempotency_key,
    )
    return {
        "platform": payload.social_platform,
        "external_id": sent.external_id,
        "proof_mode": ctx.proof_mode,
    }


def handle_post_social(
    session: Session, action_id: int, payload: dict[str, Any], proof_mode: bool = False
) -> dict[str, Any]:
    """The seed's entry point: run POST_SOCIAL for an existing action in ``session``.

    Live mode with no configured poster raises :class:`RealRunUnconfigured`.
    """
    model = PostSocialPayload.model_validate(payload)
    ctx = context_for(session, action_id, proof_mode)
    result = post_social(ctx, model)
    return {**(result or {}), **artifact_fields(ctx.artifacts.written)}
