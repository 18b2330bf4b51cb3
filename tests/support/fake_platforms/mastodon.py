"""Mastodon's statuses API as documented (docs.joinmastodon.org/methods/statuses): the
Idempotency-Key header, the Error entity ``{"error": ...}``, 422 on validation, 401 for a
bad or revoked token, and X-RateLimit-* headers (Reset is an ISO 8601 time)."""

from __future__ import annotations

import html
import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.support.fake_platforms.base import FakePlatform, Reply, Request

MAX_CHARACTERS = 500


def rate_headers(remaining: int = 299, reset_in: float = 300.0) -> dict[str, str]:
    reset = datetime.now(UTC) + timedelta(seconds=reset_in)
    return {
        "X-RateLimit-Limit": "300",
        "X-RateLimit-Remaining": str(remaining),
        "X-RateLimit-Reset": reset.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
    }


class FakeMastodon(FakePlatform):
    def __init__(self) -> None:
        super().__init__()
        self.tokens = {"mastodon-token-ada": "1"}  # token -> account id
        self.revoked: set[str] = set()
        self.statuses: dict[str, dict[str, Any]] = {}
        self.by_key: dict[tuple[str, str], str] = {}
        self._ids = itertools.count(109_000_000_000_000_001)

    def rate_limited(self, reset_in: float) -> Reply:
        return Reply(429, {"error": "Too many requests"}, rate_headers(0, reset_in))

    def route(self, request: Request) -> Reply:
        token = request.bearer or ""
        if token in self.revoked:
            return Reply(401, {"error": "The access token was revoked"}, rate_headers())
        if token not in self.tokens:
            return Reply(401, {"error": "The access token is invalid"}, rate_headers())
        account = self.tokens[token]
        path, method = request.path, request.method
        if method == "POST" and path == "/api/v1/statuses":
            return self._create(request, account)
        if method == "GET" and path == "/api/v1/accounts/verify_credentials":
            return Reply(200, {"id": account, "username": "ada", "acct": "ada"}, rate_headers())
        if method == "GET" and path.startswith("/api/v1/accounts/") and path.endswith("/statuses"):
            own = [s for s in self.statuses.values() if s["account"]["id"] == path.split("/")[4]]
            return Reply(200, sorted(own, key=lambda s: s["id"], reverse=True), rate_headers())
        if method == "GET" and path.startswith("/api/v1/statuses/"):
            found = self.statuses.get(path.rsplit("/", 1)[1])
            if found is None:
                return Reply(404, {"error": "Record not found"}, rate_headers())
            return Reply(200, found, rate_headers())
        return Reply(404, {"error": "Record not found"})

    def _create(self, request: Request, account: str) -> Reply:
        body = (
            request.json() if "json" in request.headers.get("content-type", "") else request.form()
        )
        text = str(body.get("status") or "")
        key = request.headers.get("idempotency-key")
        if key and (account, key) in self.by_key:
            return Reply(200, self.statuses[self.by_key[(account, key)]], rate_headers())
        if not text.strip():
            return Reply(422, {"error": "Validation failed: Text can't be blank"})
        if len(text) > MAX_CHARACTERS:
            return Reply(
                422,
                {"error": f"Validation failed: Text character limit of {MAX_CHARACTERS} exceeded"},
            )
        status_id = str(next(self._ids))
        status = {
            "id": status_id,
            "created_at": datetime.now(UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "content": f"<p>{html.escape(text)}</p>",
            "visibility": body.get("visibility", "public"),
            "url": f"{self.url}/@ada/{status_id}",
            "account": {"id": account, "username": "ada"},
            "favourites_count": 0,
            "reblogs_count": 0,
            "replies_count": 0,
        }
        self.statuses[status_id] = status
        if key:
            self.by_key[(account, key)] = status_id
        return Reply(200, status, rate_headers())

    def posts_with(self, text: str) -> list[dict[str, Any]]:
        with self.lock:
            return [
                s for s in self.statuses.values() if s["content"] == f"<p>{html.escape(text)}</p>"
            ]

    def engage(self, status_id: str, favourites: int, reblogs: int, replies: int) -> None:
        with self.lock:
            self.statuses[status_id].update(
                favourites_count=favourites, reblogs_count=reblogs, replies_count=replies
            )
