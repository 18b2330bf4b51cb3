"""POST_SOCIAL: post content to a social platform (proof: a JSON artifact)."""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, ClassVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    StringConstraints,
    field_validator,
    model_validator,
)
from sqlalchemy.orm import Session

from aicmo.gateways.factory import social_poster
from aicmo.gateways.platforms import length_problem
from aicmo.gateways.ports import SocialPost
from aicmo.orchestration.adapters._common import original_keys, run_number
from aicmo.orchestration.context import ActionContext
from aicmo.orchestration.direct import run_direct
from aicmo.orchestration.errors import RealRunUnconfigured
from aicmo.orchestration.registry import registry

__all__ = [
    "PostSocialPayload",
    "RealRunUnconfigured",
    "audience_text",
    "handle_post_social",
    "normalise_platform",
    "post_social",
]

_NOT_A_NAME_CHAR = re.compile(r"[^a-z0-9]+")


def normalise_platform(value: object) -> object:
    """A platform name as people write it, in the form it is stored and configured under:
    lower case, runs of spaces and punctuation as one ``_`` ("LinkedIn Page" ->
    "linkedin_page", "X (Twitter)" -> "x_twitter")."""
    if not isinstance(value, str):
        return value
    return _NOT_A_NAME_CHAR.sub("_", value.strip().lower()).strip("_")


Platform = Annotated[
    str, BeforeValidator(normalise_platform), StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,31}$")
]
# The original's payloads carried the audience as text or as an object ({"segment": ..}).
Audience = str | dict[str, Any] | None
MAX_AUDIENCE_CHARS = 500


def audience_text(audience: str | dict[str, Any] | None) -> str | None:
    """The audience as the posting gateways take it: text (an object as compact JSON)."""
    if audience is None or isinstance(audience, str):
        return audience
    return json.dumps(audience, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


class PostSocialPayload(BaseModel):
    model_config = ConfigDict(extra="forbid")

    social_platform: Platform
    content: Annotated[str, StringConstraints(min_length=1, max_length=10_000)]
    audience: Audience = None

    accept_original_keys: ClassVar[Any] = original_keys()

    @field_validator("audience")
    @classmethod
    def _audience_fits(cls, value: str | dict[str, Any] | None) -> str | dict[str, Any] | None:
        text = audience_text(value)
        if text is not None and len(text) > MAX_AUDIENCE_CHARS:
            raise ValueError(f"audience is {len(text)} characters, over {MAX_AUDIENCE_CHARS}")
        return value

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
)
def post_social(ctx: ActionContext, payload: PostSocialPayload) -> dict[str, Any]:
    """Post content to a social platform."""
    poster = social_poster(payload.social_platform, ctx.proof_mode, ctx.artifacts)
    sent = poster.post(
        SocialPost(
            payload.social_platform,
            payload.content,
            audience_text(payload.audience),
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
    """The original's entry point: run the POST_SOCIAL action ``action_id`` now, as a worker
    would, and record its outcome (see :mod:`aicmo.orchestration.direct`; it commits
    ``session`` first). Returns the result, with the artifact's path and sha256 in proof mode.

    Live mode with no configured poster records FAILED and raises
    :class:`RealRunUnconfigured`; a payload missing required keys records FAILED and raises
    a ``ValueError``.
    """
    return run_direct(session, "POST_SOCIAL", action_id, payload, proof_mode)
