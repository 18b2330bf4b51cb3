"""Mastodon (and compatible servers): ``POST /api/v1/statuses`` with a native Idempotency-Key.

Mastodon keeps an Idempotency-Key for an hour and answers a repeat with the status it already
made, so a retry within the hour never posts twice. Past the hour (a long backoff), a retry
first looks among the account's own recent statuses for one with our text made since the
action was created. Tokens do not expire: a 401 means revoked, and the account is flagged.
Rate limits: 429 with ``X-RateLimit-Reset`` (an ISO 8601 time).
"""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime, timedelta

from aicmo.gateways.platforms import MASTODON
from aicmo.gateways.ports import SendResult, SocialPost
from aicmo.gateways.social import NativeGateway

# Mastodon's own retention of an Idempotency-Key.
NATIVE_WINDOW = timedelta(minutes=55)
_TAG = re.compile(r"<[^>]+>")


def plain(content_html: str) -> str:
    """A status's HTML content as text (paragraphs and breaks as newlines)."""
    text = re.sub(r"<br\s*/?>|</p>\s*<p>", "\n", content_html)
    return html.unescape(_TAG.sub("", text)).strip()


class MastodonGateway(NativeGateway):
    platform = MASTODON

    def _url(self, path: str) -> str:
        return self.account.base_url.rstrip("/") + path

    def create(self, post: SocialPost, idempotency_key: str) -> SendResult:
        # Past Mastodon's hour the key is forgotten: look before posting again.
        late = post.created_at is not None and datetime.now(UTC) - post.created_at > NATIVE_WINDOW
        if post.attempt > 1 and post.created_at is not None and late:
            found = self._find_own(post.content, post.created_at)
            if found is not None:
                return self._result(found, "found: posted by an earlier attempt")
        response = self.authorized(
            "POST",
            self._url("/api/v1/statuses"),
            json={
                "status": post.content,
                "visibility": self.account.config.get("visibility", "public"),
            },
            headers={"Idempotency-Key": idempotency_key},
        )
        if not response.is_success:
            raise self.fail(response)
        return self._result(response.json(), f"HTTP {response.status_code}")

    def _result(self, status: dict[str, object], detail: str) -> SendResult:
        return SendResult(
            external_id=str(status["id"]),
            detail=f"{detail} {status.get('url') or ''}".strip(),
            provider=self.provider,
        )

    def _account_id(self) -> str:
        known = self.account.config.get("account_id")
        if known:
            return str(known)
        response = self.authorized("GET", self._url("/api/v1/accounts/verify_credentials"))
        if not response.is_success:
            raise self.fail(response)
        return str(response.json()["id"])

    def _find_own(self, content: str, since: datetime) -> dict[str, object] | None:
        response = self.authorized(
            "GET",
            self._url(f"/api/v1/accounts/{self._account_id()}/statuses"),
            params={"limit": 40, "exclude_reblogs": "true", "exclude_replies": "true"},
        )
        if not response.is_success:
            raise self.fail(response)
        for status in response.json():
            created = datetime.fromisoformat(str(status["created_at"]).replace("Z", "+00:00"))
            if (
                created >= since - timedelta(seconds=5)
                and plain(str(status.get("content", ""))) == content.strip()
            ):
                found: dict[str, object] = status
                return found
        return None

    def post_metrics(self, external_ids: list[str]) -> dict[str, dict[str, float]]:
        numbers: dict[str, dict[str, float]] = {}
        for status_id in external_ids:
            response = self.authorized("GET", self._url(f"/api/v1/statuses/{status_id}"))
            if response.status_code == 404:
                numbers[status_id] = {"deleted": 1.0}
                continue
            if not response.is_success:
                raise self.fail(response)
            status = response.json()
            numbers[status_id] = {
                "favourites": float(status.get("favourites_count", 0)),
                "reblogs": float(status.get("reblogs_count", 0)),
                "replies": float(status.get("replies_count", 0)),
            }
        return numbers

    def whoami(self) -> str:
        response = self.authorized("GET", self._url("/api/v1/accounts/verify_credentials"))
        if not response.is_success:
            raise self.fail(response)
        found = response.json()
        return f"@{found.get('acct') or found.get('username')} (id {found.get('id')})"
