"""Bluesky (AT Protocol): ``com.atproto.repo.createRecord`` with a record key derived from
the action, so a retry cannot make a second post.

The record key (rkey) is a TID - ``app.bsky.feed.post`` keys are TIDs - made from the action's
creation time and a hash of its idempotency key: the same on every attempt. A retry after a
post that went through is refused by the PDS (the key is taken); the gateway then reads the
record at that key (``com.atproto.repo.getRecord``) and, when it holds our text, reports that
post as the result.

Sessions: ``com.atproto.server.createSession`` with the account's app password gives an access
and a refresh JWT; an ``ExpiredToken`` answer is met with ``refreshSession`` (which rotates
the refresh JWT, hence the account's lease), and a refused refresh with a new session. A
refused app password flags the account. Rate limits: 429 with ``RateLimit-Reset`` (epoch s).
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from typing import Any

import httpx

from aicmo.gateways.errors import BadCredentials
from aicmo.gateways.platforms import BLUESKY
from aicmo.gateways.ports import SendResult, SocialPost
from aicmo.gateways.social import ContentRefused, NativeGateway, Refreshed

DEFAULT_PDS = "https://bsky.social"
POST_COLLECTION = "app.bsky.feed.post"
_S32 = "234567abcdefghijklmnopqrstuvwxyz"
_TOKEN_ERRORS = frozenset({"ExpiredToken", "InvalidToken", "AuthenticationRequired"})
GET_POSTS_BATCH = 25


def tid_for(idempotency_key: str, created_at: datetime | None) -> str:
    """A valid TID (13 base32-sortable characters: 53 bits of microseconds, 10 bits of
    clock id) that depends only on the action: its creation time and its key."""
    digest = hashlib.sha256(idempotency_key.encode("utf-8")).digest()
    if created_at is not None:
        micros = int(created_at.timestamp() * 1_000_000)
    else:
        micros = int.from_bytes(digest[2:9], "big") >> 3
    value = ((micros & ((1 << 53) - 1)) << 10) | (int.from_bytes(digest[:2], "big") & 0x3FF)
    return "".join(_S32[(value >> (5 * (12 - i))) & 31] for i in range(13))


# A URL, without the punctuation that ends the sentence around it.
_URL = re.compile(r"https?://[^\s<>\"]+[^\s<>\".,;:!?)\]}'\u2019]")


def link_facets(text: str) -> list[dict[str, Any]]:
    """Rich-text facets that make the URLs in ``text`` links (Bluesky does not detect them:
    a post's links are facets, indexed by UTF-8 byte offsets)."""
    facets = []
    for found in _URL.finditer(text):
        start = len(text[: found.start()].encode("utf-8"))
        end = start + len(found.group(0).encode("utf-8"))
        facets.append(
            {
                "index": {"byteStart": start, "byteEnd": end},
                "features": [{"$type": "app.bsky.richtext.facet#link", "uri": found.group(0)}],
            }
        )
    return facets


def xrpc_error(response: httpx.Response) -> tuple[str, str]:
    try:
        document = response.json()
    except ValueError:
        return "", response.text.strip()[:300]
    if not isinstance(document, dict):
        return "", ""
    return str(document.get("error") or ""), str(document.get("message") or "")


class BlueskyGateway(NativeGateway):
    platform = BLUESKY

    def _url(self, method: str) -> str:
        return (self.account.base_url or DEFAULT_PDS).rstrip("/") + f"/xrpc/{method}"

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.account.secrets.get('access_jwt', '')}"}

    def message(self, response: httpx.Response) -> str:
        error, message = xrpc_error(response)
        return ": ".join(part for part in (error, message) if part) or response.reason_phrase

    def can_refresh(self) -> bool:
        return bool(self.account.secrets.get("app_password"))

    def is_expired(self, response: httpx.Response) -> bool:
        if response.status_code not in (400, 401):
            return False
        return xrpc_error(response)[0] in _TOKEN_ERRORS or response.status_code == 401

    def is_auth_refusal(self, response: httpx.Response) -> bool:
        return response.status_code == 401 or (
            response.status_code == 400 and xrpc_error(response)[0] in _TOKEN_ERRORS
        )

    def authorized(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        self._ensure_session()
        return super().authorized(method, url, **kwargs)

    def _ensure_session(self) -> None:
        if not self.account.secrets.get("access_jwt"):
            self.refresh()  # no session yet: make one (it tells us the DID too)

    def _session(self, response: httpx.Response) -> Refreshed:
        document = response.json()
        secrets = {
            **self.account.secrets,
            "access_jwt": document["accessJwt"],
            "refresh_jwt": document["refreshJwt"],
        }
        config = {**self.account.config, "did": document["did"]}
        return Refreshed(secrets, None, config)

    def refresh_tokens(self) -> Refreshed:
        refresh_jwt = self.account.secrets.get("refresh_jwt")
        if refresh_jwt:
            response = self.send(
                "POST",
                self._url("com.atproto.server.refreshSession"),
                auth=False,
                headers={"Authorization": f"Bearer {refresh_jwt}"},
            )
            if response.is_success:
                return self._session(response)
            if not self.is_auth_refusal(response):
                raise self.fail(response)
            # The refresh JWT expired or was revoked: the app password makes a new session.
        response = self.send(
            "POST",
            self._url("com.atproto.server.createSession"),
            auth=False,
            json={
                "identifier": self.account.config.get("identifier") or self.account.handle,
                "password": self.account.secrets.get("app_password", ""),
            },
        )
        if response.is_success:
            return self._session(response)
        if response.status_code in (400, 401) and self.is_auth_refusal(response):
            raise BadCredentials(
                self.provider,
                f"app password refused (HTTP {response.status_code}: {self.message(response)})",
                status=response.status_code,
            )
        raise self.fail(response)

    def _did(self) -> str:
        return str(self.account.config.get("did") or self.account.handle)

    def create(self, post: SocialPost, idempotency_key: str) -> SendResult:
        self._ensure_session()
        rkey = tid_for(idempotency_key, post.created_at)
        record = {
            "$type": POST_COLLECTION,
            "text": post.content,
            "createdAt": datetime.now(UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
        }
        response = self.authorized(
            "POST",
            self._url("com.atproto.repo.createRecord"),
            json={
                "repo": self._did(),
                "collection": POST_COLLECTION,
                "rkey": rkey,
                "record": record,
            },
        )
        if response.is_success:
            return self._result(response.json(), rkey, f"HTTP {response.status_code}")
        if response.status_code == 400:
            # The key may be taken by our own earlier attempt: read it before giving up.
            existing = self._get_record(rkey)
            if existing is not None:
                if str(existing.get("value", {}).get("text", "")) == post.content:
                    return self._result(existing, rkey, "found: posted by an earlier attempt")
                raise ContentRefused(
                    self.provider,
                    f"record key {rkey} already holds another post ({existing.get('uri')})",
                    status=400,
                )
        raise self.fail(response)

    def _get_record(self, rkey: str) -> dict[str, Any] | None:
        response = self.authorized(
            "GET",
            self._url("com.atproto.repo.getRecord"),
            params={"repo": self._did(), "collection": POST_COLLECTION, "rkey": rkey},
        )
        if response.is_success:
            found: dict[str, Any] = response.json()
            return found
        if response.status_code in (400, 404):  # RecordNotFound
            return None
        raise self.fail(response)

    def _result(self, document: dict[str, Any], rkey: str, detail: str) -> SendResult:
        return SendResult(
            external_id=str(document["uri"]),
            detail=f"{detail} rkey={rkey}",
            provider=self.provider,
        )

    def post_metrics(self, external_ids: list[str]) -> dict[str, dict[str, float]]:
        numbers: dict[str, dict[str, float]] = {}
        for start in range(0, len(external_ids), GET_POSTS_BATCH):
            batch = external_ids[start : start + GET_POSTS_BATCH]
            response = self.authorized(
                "GET", self._url("app.bsky.feed.getPosts"), params=[("uris", uri) for uri in batch]
            )
            if not response.is_success:
                raise self.fail(response)
            for found in response.json().get("posts", []):
                numbers[str(found["uri"])] = {
                    "likes": float(found.get("likeCount", 0)),
                    "reposts": float(found.get("repostCount", 0)),
                    "replies": float(found.get("replyCount", 0)),
                    "quotes": float(found.get("quoteCount", 0)),
                }
        return numbers

    def whoami(self) -> str:
        response = self.authorized("GET", self._url("com.atproto.server.getSession"))
        if not response.is_success:
            raise self.fail(response)
        found = response.json()
        return f"@{found.get('handle')} ({found.get('did')})"
