"""LinkedIn: the versioned Posts API, ``POST /rest/posts`` (member or organisation author).

LinkedIn takes no idempotency key, so a retry reads before it writes: the author's recent posts
(``GET /rest/posts?q=author``), and a post with our commentary made since the action was
created is taken as ours. A retry that LinkedIn refuses as a duplicate of a post it names is
answered with that post. Access tokens expire (60 days); with a refresh token and the app's
client credentials the gateway refreshes under the account's lease, else a 401 flags it.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx

from aicmo.gateways.errors import BadCredentials
from aicmo.gateways.platforms import LINKEDIN
from aicmo.gateways.ports import SendResult, SocialPost
from aicmo.gateways.social import NativeGateway, Refreshed

DEFAULT_API = "https://api.linkedin.com"
DEFAULT_TOKEN_URL = "https://www.linkedin.com/oauth/v2/accessToken"
LOOKUP_COUNT = 20
_URN = r"urn:li:(?:share|ugcPost):\d+"
# LinkedIn's "little text format" reserves these in commentary; unescaped, a post is cut
# or misread (a "(" may end the text), so each is escaped with a backslash.
_RESERVED = re.compile(r"([\\|{}@\[\]()<>#*_~])")


_HASHTAG = re.compile(r"\\#(\w+)")


def little_text(content: str) -> str:
    """``content`` as Posts API commentary: reserved characters escaped, ``#word`` as a
    hashtag (``{hashtag|\\#|word}``)."""
    return _HASHTAG.sub(r"{hashtag|\\#|\1}", _RESERVED.sub(r"\\\1", content))


class LinkedInGateway(NativeGateway):
    platform = LINKEDIN

    def _url(self, path: str) -> str:
        return (self.account.base_url or DEFAULT_API).rstrip("/") + path

    def auth_headers(self) -> dict[str, str]:
        return {
            **super().auth_headers(),
            "LinkedIn-Version": self.settings.linkedin_api_version,
            "X-Restli-Protocol-Version": "2.0.0",
        }

    def _author(self) -> str:
        author = self.account.config.get("author")
        if not author:
            raise BadCredentials(self.provider, "the account has no author URN (config 'author')")
        return str(author)

    def can_refresh(self) -> bool:
        s = self.account.secrets
        return bool(
            s.get("refresh_token")
            and s.get("client_secret")
            and self.account.config.get("client_id")
        )

    def is_expired(self, response: httpx.Response) -> bool:
        return (
            response.status_code == 401
            and self.can_refresh()
            and "revoked" not in self.message(response)
        )

    def is_auth_refusal(self, response: httpx.Response) -> bool:
        return response.status_code in (401, 403)

    def refresh_tokens(self) -> Refreshed:
        response = self.send(
            "POST",
            str(self.account.config.get("token_url") or DEFAULT_TOKEN_URL),
            auth=False,
            data={
                "grant_type": "refresh_token",
                "refresh_token": self.account.secrets["refresh_token"],
                "client_id": self.account.config["client_id"],
                "client_secret": self.account.secrets["client_secret"],
            },
        )
        return self.oauth_refreshed(response)

    def message(self, response: httpx.Response) -> str:
        try:
            document = response.json()
        except ValueError:
            return response.text.strip()[:300] or response.reason_phrase
        if isinstance(document, dict):
            return str(
                document.get("message")
                or document.get("error_description")
                or document.get("error")
                or ""
            )
        return response.reason_phrase

    def create(self, post: SocialPost, idempotency_key: str) -> SendResult:
        if post.attempt > 1:
            found = self._find_own(post.content, post.created_at)
            if found is not None:
                return SendResult(
                    found, detail="found: posted by an earlier attempt", provider=self.provider
                )
        body = {
            "author": self._author(),
            "commentary": little_text(post.content),
            "visibility": "PUBLIC",
            "distribution": {
                "feedDistribution": "MAIN_FEED",
                "targetEntities": [],
                "thirdPartyDistributionChannels": [],
            },
            "lifecycleState": "PUBLISHED",
            "isReshareDisabledByAuthor": False,
        }
        response = self.authorized("POST", self._url("/rest/posts"), json=body)
        if response.status_code == 201:
            urn = response.headers.get("x-restli-id") or response.headers.get("x-linkedin-id")
            return SendResult(urn, detail="HTTP 201", provider=self.provider)
        if response.status_code == 422 and post.attempt > 1:
            named = re.search(_URN, self.message(response))
            if named and "duplicate" in self.message(response).lower():
                return SendResult(
                    named.group(0), detail="duplicate of an earlier attempt", provider=self.provider
                )
        raise self.fail(response)

    def _find_own(self, content: str, since: datetime | None) -> str | None:
        response = self.authorized(
            "GET",
            self._url("/rest/posts"),
            params={
                "q": "author",
                "author": self._author(),
                "count": LOOKUP_COUNT,
                "sortBy": "CREATED",
            },
            headers={"X-RestLi-Method": "FINDER"},
        )
        if not response.is_success:
            raise self.fail(response)
        floor = (since - timedelta(seconds=5)).timestamp() * 1000 if since else 0
        for element in response.json().get("elements", []):
            created = float(element.get("createdAt") or 0)
            if created >= floor and str(element.get("commentary", "")) == little_text(content):
                return str(element["id"])
        return None

    def post_metrics(self, external_ids: list[str]) -> dict[str, dict[str, float]]:
        numbers: dict[str, dict[str, float]] = {}
        for urn in external_ids:
            response = self.authorized(
                "GET", self._url(f"/rest/socialMetadata/{quote(urn, safe='')}")
            )
            if not response.is_success:
                raise self.fail(response)
            document: dict[str, Any] = response.json()
            reactions = document.get("reactionSummaries") or {}
            numbers[urn] = {
                "reactions": float(sum(int(r.get("count", 0)) for r in reactions.values())),
                "comments": float((document.get("commentSummary") or {}).get("count", 0)),
            }
        return numbers

    def whoami(self) -> str:
        self._find_own("", None)
        return f"can read the posts of {self._author()}"
