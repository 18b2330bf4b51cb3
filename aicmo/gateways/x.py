"""X: API v2 ``POST /2/tweets`` with an OAuth 2.0 user token.

X takes no idempotency key, so a retry reads before it writes: the account's own tweets since
the action was created (``GET /2/users/:id/tweets``), and one with our text is taken as ours.
X also refuses duplicate text (403), which a retry meets with the same lookup. Access tokens
live two hours; with a refresh token the gateway refreshes (X rotates the refresh token:
hence the account's lease). Rate limits: 429 with ``x-rate-limit-reset`` (epoch seconds).
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from aicmo.gateways.platforms import X
from aicmo.gateways.ports import SendResult, SocialPost
from aicmo.gateways.social import ContentRefused, NativeGateway, Refreshed

DEFAULT_API = "https://api.x.com"
LOOKUP_MAX = 20
METRICS_BATCH = 100


def _basic(user: str, password: str) -> dict[str, str]:
    pair = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return {"Authorization": f"Basic {pair}"}


class XGateway(NativeGateway):
    platform = X

    def _url(self, path: str) -> str:
        return (self.account.base_url or DEFAULT_API).rstrip("/") + path

    def can_refresh(self) -> bool:
        return bool(
            self.account.secrets.get("refresh_token") and self.account.config.get("client_id")
        )

    def _duplicate(self, response: httpx.Response) -> bool:
        return response.status_code == 403 and "duplicate" in self.message(response).lower()

    def is_auth_refusal(self, response: httpx.Response) -> bool:
        return response.status_code == 401 or (
            response.status_code == 403 and not self._duplicate(response)
        )

    def refresh_tokens(self) -> Refreshed:
        secret = self.account.secrets.get("client_secret")
        client_id = str(self.account.config["client_id"])
        response = self.send(
            "POST",
            str(self.account.config.get("token_url") or self._url("/2/oauth2/token")),
            auth=False,
            data={
                "grant_type": "refresh_token",
                "refresh_token": self.account.secrets["refresh_token"],
                "client_id": client_id,
            },
            # A confidential client authenticates with Basic; a public one sends only its id.
            headers=_basic(client_id, secret) if secret else None,
        )
        return self.oauth_refreshed(response)

    def message(self, response: httpx.Response) -> str:
        try:
            document = response.json()
        except ValueError:
            return response.text.strip()[:300] or response.reason_phrase
        if isinstance(document, dict):
            errors = document.get("errors")
            if isinstance(errors, list) and errors and isinstance(errors[0], dict):
                return str(errors[0].get("message") or errors[0].get("detail") or "")
            return str(
                document.get("detail")
                or document.get("error_description")
                or document.get("title")
                or ""
            )
        return response.reason_phrase

    def _user_id(self) -> str:
        known = self.account.config.get("user_id")
        if known:
            return str(known)
        response = self.authorized("GET", self._url("/2/users/me"))
        if not response.is_success:
            raise self.fail(response)
        return str(response.json()["data"]["id"])

    def create(self, post: SocialPost, idempotency_key: str) -> SendResult:
        if post.attempt > 1:
            found = self._find_own(post.content, post.created_at)
            if found is not None:
                return SendResult(
                    found, detail="found: posted by an earlier attempt", provider=self.provider
                )
        response = self.authorized("POST", self._url("/2/tweets"), json={"text": post.content})
        if response.status_code in (200, 201):
            return SendResult(
                str(response.json()["data"]["id"]),
                detail=f"HTTP {response.status_code}",
                provider=self.provider,
            )
        if self._duplicate(response):
            if post.attempt > 1:
                found = self._find_own(post.content, None)
                if found is not None:
                    return SendResult(
                        found, detail="duplicate of an earlier attempt", provider=self.provider
                    )
            raise ContentRefused(self.provider, f"HTTP 403: {self.message(response)}", status=403)
        raise self.fail(response)

    def _find_own(self, content: str, since: datetime | None) -> str | None:
        params: dict[str, Any] = {
            "max_results": LOOKUP_MAX,
            "tweet.fields": "created_at",
            "exclude": "retweets,replies",
        }
        if since is not None:
            start = (since - timedelta(seconds=5)).astimezone(UTC)
            params["start_time"] = start.strftime("%Y-%m-%dT%H:%M:%SZ")
        response = self.authorized(
            "GET", self._url(f"/2/users/{self._user_id()}/tweets"), params=params
        )
        if not response.is_success:
            raise self.fail(response)
        for tweet in response.json().get("data", []) or []:
            if str(tweet.get("text", "")) == content:
                return str(tweet["id"])
        return None

    def post_metrics(self, external_ids: list[str]) -> dict[str, dict[str, float]]:
        numbers: dict[str, dict[str, float]] = {}
        for start in range(0, len(external_ids), METRICS_BATCH):
            batch = external_ids[start : start + METRICS_BATCH]
            response = self.authorized(
                "GET",
                self._url("/2/tweets"),
                params={"ids": ",".join(batch), "tweet.fields": "public_metrics"},
            )
            if not response.is_success:
                raise self.fail(response)
            for tweet in response.json().get("data", []) or []:
                metrics = tweet.get("public_metrics") or {}
                numbers[str(tweet["id"])] = {
                    name.removesuffix("_count"): float(value) for name, value in metrics.items()
                }
        return numbers

    def whoami(self) -> str:
        response = self.authorized("GET", self._url("/2/users/me"))
        if not response.is_success:
            raise self.fail(response)
        data = response.json()["data"]
        return f"@{data.get('username')} (id {data.get('id')})"
