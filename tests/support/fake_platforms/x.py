"""X API v2 as documented (docs.x.com): ``POST /2/tweets`` -> 201 ``{"data": {"id", "text"}}``,
403 for duplicate content, problem-JSON errors ``{"title", "detail", "type", "status"}``,
``GET /2/users/:id/tweets``, ``GET /2/tweets?ids=&tweet.fields=public_metrics``,
``x-rate-limit-*`` headers (reset in epoch seconds), and the OAuth 2.0 refresh at
/2/oauth2/token (the refresh token rotates)."""

from __future__ import annotations

import base64
import itertools
import time
from datetime import UTC, datetime
from typing import Any

from tests.support.fake_platforms.base import FakePlatform, Reply, Request

USER_ID = "1740000000000000001"


def rate_headers(remaining: int = 99, reset_in: float = 900.0) -> dict[str, str]:
    return {
        "x-rate-limit-limit": "100",
        "x-rate-limit-remaining": str(remaining),
        "x-rate-limit-reset": str(int(time.time() + reset_in)),
    }


def problem(status: int, title: str, detail: str) -> Reply:
    return Reply(
        status,
        {"title": title, "detail": detail, "type": "about:blank", "status": status},
        rate_headers(),
    )


class FakeX(FakePlatform):
    def __init__(self) -> None:
        super().__init__()
        self.tokens = {"x-access-1": USER_ID}
        self.expired: set[str] = set()
        self.refresh_tokens = {"x-refresh-1": USER_ID}
        self.client = ("x-client", "x-client-secret")
        self.tweets: dict[str, dict[str, Any]] = {}
        self._ids = itertools.count(1_860_000_000_000_000_001)
        self._n = itertools.count(2)

    def rate_limited(self, reset_in: float) -> Reply:
        reply = problem(429, "Too Many Requests", "Too Many Requests")
        reply.headers = rate_headers(0, reset_in)
        return reply

    def route(self, request: Request) -> Reply:
        if request.method == "POST" and request.path == "/2/oauth2/token":
            return self._token(request)
        token = request.bearer or ""
        user = self.tokens.get(token)
        if user is None or token in self.expired:
            return problem(401, "Unauthorized", "Unauthorized")
        if request.method == "POST" and request.path == "/2/tweets":
            text = str(request.json().get("text", ""))
            if any(t["text"] == text and t["author_id"] == user for t in self.tweets.values()):
                return problem(
                    403,
                    "Forbidden",
                    "You are not allowed to create a Tweet with duplicate content.",
                )
            tweet_id = str(next(self._ids))
            self.tweets[tweet_id] = {
                "id": tweet_id,
                "text": text,
                "author_id": user,
                "created_at": datetime.now(UTC)
                .isoformat(timespec="milliseconds")
                .replace("+00:00", "Z"),
                "public_metrics": {
                    "retweet_count": 0,
                    "reply_count": 0,
                    "like_count": 0,
                    "quote_count": 0,
                    "bookmark_count": 0,
                    "impression_count": 0,
                },
            }
            return Reply(
                201,
                {"data": {"id": tweet_id, "text": text, "edit_history_tweet_ids": [tweet_id]}},
                rate_headers(),
            )
        if request.method == "GET" and request.path == "/2/users/me":
            return Reply(
                200, {"data": {"id": user, "name": "Ada", "username": "ada"}}, rate_headers()
            )
        if request.method == "GET" and request.path == f"/2/users/{user}/tweets":
            start = request.query.get("start_time", [""])[0]
            own = [
                {"id": t["id"], "text": t["text"], "created_at": t["created_at"]}
                for t in sorted(self.tweets.values(), key=lambda t: t["id"], reverse=True)
                if t["author_id"] == user and (not start or t["created_at"] >= start)
            ]
            return Reply(
                200,
                {"data": own, "meta": {"result_count": len(own)}}
                if own
                else {"meta": {"result_count": 0}},
                rate_headers(),
            )
        if request.method == "GET" and request.path == "/2/tweets":
            ids = request.query.get("ids", [""])[0].split(",")
            data = [
                {
                    "id": i,
                    "text": self.tweets[i]["text"],
                    "public_metrics": self.tweets[i]["public_metrics"],
                }
                for i in ids
                if i in self.tweets
            ]
            return Reply(200, {"data": data}, rate_headers())
        return problem(404, "Not Found Error", f"Could not find {request.path}")

    def _token(self, request: Request) -> Reply:
        expected = base64.b64encode(f"{self.client[0]}:{self.client[1]}".encode()).decode()
        if request.headers.get("authorization") != f"Basic {expected}":
            return Reply(
                401,
                {
                    "error": "unauthorized_client",
                    "error_description": "Missing valid authorization header",
                },
            )
        form = request.form()
        user = self.refresh_tokens.pop(form.get("refresh_token", ""), None)
        if form.get("grant_type") != "refresh_token" or user is None:
            return Reply(
                400,
                {
                    "error": "invalid_request",
                    "error_description": "Value passed for the token was invalid.",
                },
            )
        n = next(self._n)
        access, refresh = f"x-access-{n}", f"x-refresh-{n}"
        self.tokens[access] = user
        self.refresh_tokens[refresh] = user
        return Reply(
            200,
            {
                "token_type": "bearer",
                "expires_in": 7200,
                "access_token": access,
                "scope": "tweet.read tweet.write users.read offline.access",
                "refresh_token": refresh,
            },
        )

    def posts_with(self, text: str) -> list[dict[str, Any]]:
        with self.lock:
            return [t for t in self.tweets.values() if t["text"] == text]
