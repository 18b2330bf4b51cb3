"""A Bluesky PDS as documented (XRPC, docs.bsky.app): createSession / refreshSession (the
refresh JWT is single-use: refreshing rotates it), createRecord / getRecord with TID record
keys, app.bsky.feed.getPosts, XRPC errors ``{"error", "message"}`` (ExpiredToken,
InvalidToken, AuthenticationRequired, InvalidRequest, RecordNotFound), and RateLimit-*
headers (Reset in epoch seconds)."""

from __future__ import annotations

import hashlib
import itertools
import re
import time
from typing import Any

from tests.support.fake_platforms.base import FakePlatform, Reply, Request

TID = re.compile(r"^[234567abcdefghij][234567abcdefghijklmnopqrstuvwxyz]{12}$")
MAX_GRAPHEMES = 300
COLLECTION = "app.bsky.feed.post"


def rate_headers(remaining: int = 4999, reset_in: float = 300.0) -> dict[str, str]:
    return {
        "RateLimit-Limit": "5000",
        "RateLimit-Remaining": str(remaining),
        "RateLimit-Reset": str(int(time.time() + reset_in)),
        "RateLimit-Policy": "5000;w=3600",
    }


def error(status: int, name: str, message: str) -> Reply:
    return Reply(status, {"error": name, "message": message}, rate_headers())


class FakeBluesky(FakePlatform):
    def __init__(self) -> None:
        super().__init__()
        self.passwords = {
            "ada.bsky.social": ("app-pass-ada-1234", "did:plc:ada000000000000000000000")
        }
        self.access: dict[str, str] = {}  # accessJwt -> did
        self.expired: set[str] = set()
        self.refresh: dict[str, str] = {}  # live refreshJwt -> did (single use)
        self.records: dict[tuple[str, str], dict[str, Any]] = {}  # (did, rkey) -> record
        self.counts: dict[str, dict[str, int]] = {}
        self._n = itertools.count(1)
        self.refresh_delay = 0.0  # seconds refreshSession takes (to race two refreshers)

    def rate_limited(self, reset_in: float) -> Reply:
        return Reply(
            429,
            {"error": "RateLimitExceeded", "message": "Rate Limit Exceeded"},
            rate_headers(0, reset_in),
        )

    def _session(self, did: str) -> dict[str, Any]:
        n = next(self._n)
        access, refresh = f"access-{n}-{did[-6:]}", f"refresh-{n}-{did[-6:]}"
        self.access[access] = did
        self.refresh[refresh] = did
        handle = next(h for h, (_, d) in self.passwords.items() if d == did)
        return {
            "accessJwt": access,
            "refreshJwt": refresh,
            "handle": handle,
            "did": did,
            "active": True,
        }

    def revoke_app_password(self, handle: str) -> None:
        """The user revoked the app password: its sessions die with it."""
        with self.lock:
            password, did = self.passwords[handle]
            self.passwords[handle] = (password + "-revoked", did)
            for tokens in (self.access, self.refresh):
                for token in [t for t, d in tokens.items() if d == did]:
                    del tokens[token]

    def expire_all_access_tokens(self) -> None:
        with self.lock:
            self.expired.update(self.access)

    def route(self, request: Request) -> Reply:
        method, name = request.method, request.path.removeprefix("/xrpc/")
        if method == "POST" and name == "com.atproto.server.createSession":
            body = request.json()
            found = self.passwords.get(str(body.get("identifier")))
            if found is None or found[0] != body.get("password"):
                return error(401, "AuthenticationRequired", "Invalid identifier or password")
            return Reply(200, self._session(found[1]), rate_headers())
        if method == "POST" and name == "com.atproto.server.refreshSession":
            time.sleep(self.refresh_delay)
            token = request.bearer or ""
            did = self.refresh.pop(token, None)
            if did is None:
                return error(400, "ExpiredToken", "Token has been revoked")
            return Reply(200, self._session(did), rate_headers())
        token = request.bearer or ""
        if token in self.expired:
            return error(400, "ExpiredToken", "Token has expired")
        did = self.access.get(token)
        if did is None:
            return error(401, "AuthenticationRequired", "Authentication Required")
        if method == "GET" and name == "com.atproto.server.getSession":
            handle = next(h for h, (_, d) in self.passwords.items() if d == did)
            return Reply(200, {"handle": handle, "did": did}, rate_headers())
        if method == "POST" and name == "com.atproto.repo.createRecord":
            return self._create(request, did)
        if method == "GET" and name == "com.atproto.repo.getRecord":
            rkey = request.query.get("rkey", [""])[0]
            record = self.records.get((request.query.get("repo", [""])[0], rkey))
            if record is None:
                return error(400, "RecordNotFound", f"Could not locate record: {rkey}")
            return Reply(200, record, rate_headers())
        if method == "GET" and name == "app.bsky.feed.getPosts":
            posts = [self._view(uri) for uri in request.query.get("uris", [])]
            return Reply(200, {"posts": [p for p in posts if p]}, rate_headers())
        return error(501, "MethodNotImplemented", f"Method Not Implemented: {name}")

    def _create(self, request: Request, did: str) -> Reply:
        body = request.json()
        if body.get("repo") != did:
            return error(400, "InvalidRequest", "Input/repo must be the authenticated account")
        rkey = str(body.get("rkey") or "")
        if body.get("collection") != COLLECTION or not TID.match(rkey):
            return error(400, "InvalidRequest", f"Invalid record key: {rkey}")
        record = body.get("record") or {}
        if len(str(record.get("text", ""))) > MAX_GRAPHEMES:
            return error(
                400,
                "InvalidRecord",
                "Invalid app.bsky.feed.post record: "
                f"Record/text must not be longer than {MAX_GRAPHEMES} graphemes",
            )
        if (did, rkey) in self.records:
            return error(400, "InvalidRequest", f"Record already exists at {COLLECTION}/{rkey}")
        uri = f"at://{did}/{COLLECTION}/{rkey}"
        cid = "bafyrei" + hashlib.sha256(uri.encode()).hexdigest()[:40]
        self.records[(did, rkey)] = {"uri": uri, "cid": cid, "value": record}
        self.counts[uri] = {"likeCount": 0, "repostCount": 0, "replyCount": 0, "quoteCount": 0}
        return Reply(
            200, {"uri": uri, "cid": cid, "commit": {"cid": cid, "rev": rkey}}, rate_headers()
        )

    def _view(self, uri: str) -> dict[str, Any] | None:
        found = next((r for r in self.records.values() if r["uri"] == uri), None)
        if found is None:
            return None
        return {"uri": uri, "cid": found["cid"], "record": found["value"], **self.counts[uri]}

    def posts_with(self, text: str) -> list[dict[str, Any]]:
        with self.lock:
            return [r for r in self.records.values() if r["value"].get("text") == text]

    def engage(self, uri: str, likes: int, reposts: int, replies: int) -> None:
        with self.lock:
            self.counts[uri].update(likeCount=likes, repostCount=reposts, replyCount=replies)
