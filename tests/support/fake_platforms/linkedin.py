"""LinkedIn's versioned Posts API as documented (learn.microsoft.com, Community Management):
``POST /rest/posts`` -> 201 with the post URN in ``x-restli-id``, the LinkedIn-Version and
X-Restli-Protocol-Version headers required, ``GET /rest/posts?q=author``, socialMetadata,
errors ``{"message", "status", "serviceErrorCode"}`` (401 expired / revoked, 422 duplicate),
and the OAuth refresh at /oauth/v2/accessToken."""

from __future__ import annotations

import itertools
import time
from typing import Any
from urllib.parse import unquote

from tests.support.fake_platforms.base import FakePlatform, Reply, Request

MAX_COMMENTARY = 3000


def error(status: int, message: str, code: int | None = None) -> Reply:
    document: dict[str, Any] = {"message": message, "status": status}
    if code is not None:
        document["serviceErrorCode"] = code
    return Reply(status, document)


class FakeLinkedIn(FakePlatform):
    def __init__(self) -> None:
        super().__init__()
        self.tokens = {"li-access-1": "urn:li:organization:2414183"}
        self.expired: set[str] = set()
        self.revoked: set[str] = set()
        self.refresh_tokens = {"li-refresh-1": "urn:li:organization:2414183"}
        self.clients = {"li-client": "li-client-secret"}
        self.posts: dict[str, dict[str, Any]] = {}
        self._ids = itertools.count(7_100_000_000_000_000_001)
        self._n = itertools.count(2)

    def route(self, request: Request) -> Reply:
        if request.method == "POST" and request.path == "/oauth/v2/accessToken":
            return self._token(request.form())
        token = request.bearer or ""
        if token in self.revoked:
            return error(401, "The token used in the request has been revoked by the user", 65601)
        if token in self.expired:
            return error(401, "The token used in the request has expired", 65602)
        if token not in self.tokens:
            return error(401, "Invalid access token", 65600)
        if not request.headers.get("linkedin-version"):
            return error(
                400,
                "A version must be present. Please specify a version by adding the "
                "LinkedIn-Version header.",
            )
        if request.headers.get("x-restli-protocol-version") != "2.0.0":
            return error(400, "X-Restli-Protocol-Version 2.0.0 is required")
        author = self.tokens[token]
        if request.method == "POST" and request.path == "/rest/posts":
            return self._create(request.json(), author)
        if request.method == "GET" and request.path == "/rest/posts":
            wanted = request.query.get("author", [""])[0]
            own = sorted(
                (p for p in self.posts.values() if p["author"] == wanted),
                key=lambda p: p["createdAt"],
                reverse=True,
            )
            count = int(request.query.get("count", ["10"])[0])
            return Reply(200, {"elements": own[:count], "paging": {"start": 0, "count": count}})
        if request.method == "GET" and request.path.startswith("/rest/socialMetadata/"):
            urn = unquote(request.path.removeprefix("/rest/socialMetadata/"))
            post = self.posts.get(urn)
            if post is None:
                return error(404, f"Not found: {urn}")
            return Reply(200, post["_metadata"] | {"entity": urn})
        return error(404, "Resource not found")

    def _token(self, form: dict[str, str]) -> Reply:
        if self.clients.get(form.get("client_id", "")) != form.get("client_secret"):
            return Reply(
                401,
                {"error": "invalid_client", "error_description": "Client authentication failed"},
            )
        author = self.refresh_tokens.get(form.get("refresh_token", ""))
        if form.get("grant_type") != "refresh_token" or author is None:
            return Reply(
                400,
                {
                    "error": "invalid_grant",
                    "error_description": "The provided refresh token is invalid",
                },
            )
        access = f"li-access-{next(self._n)}"
        self.tokens[access] = author
        return Reply(
            200,
            {
                "access_token": access,
                "expires_in": 5_184_000,
                "refresh_token": form["refresh_token"],
                "refresh_token_expires_in": 31_536_000,
            },
        )

    def _create(self, body: dict[str, Any], author: str) -> Reply:
        if body.get("author") != author:
            return error(403, f"Not enough permissions to post as {body.get('author')}", 100)
        commentary = str(body.get("commentary", ""))
        if len(commentary) > MAX_COMMENTARY:
            return error(422, f"/commentary :: length {len(commentary)} exceeds {MAX_COMMENTARY}")
        for urn, post in self.posts.items():
            if post["author"] == author and post["commentary"] == commentary:
                return error(422, f"Content is a duplicate of {urn}")
        urn = f"urn:li:share:{next(self._ids)}"
        self.posts[urn] = {
            "id": urn,
            "author": author,
            "commentary": commentary,
            "visibility": body.get("visibility"),
            "lifecycleState": body.get("lifecycleState"),
            "createdAt": int(time.time() * 1000),
            "_metadata": {
                "reactionSummaries": {},
                "commentSummary": {"count": 0, "topLevelCount": 0},
            },
        }
        return Reply(201, None, {"x-restli-id": urn})

    def posts_with(self, text: str) -> list[dict[str, Any]]:
        with self.lock:
            return [p for p in self.posts.values() if p["commentary"] == text]
