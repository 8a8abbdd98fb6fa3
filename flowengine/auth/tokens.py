"""Link tokens: the one-time keys in auth emails and in the redirect's ``access_token``.

A token is 256 random bits (``secrets.token_urlsafe(32)``) handed out once; the cache keeps
only its SHA-256, under a key that also names its purpose (``verify``, ``magic``, ``reset``,
``change-email``, ``grant``), so a reset token is no magic link. Redeeming takes the record
out of the cache in one atomic step (``GETDEL``): of any number of concurrent redemptions
exactly one gets it. The record carries its own deadline, read against the app's clock,
and the cache's expiry removes it soon after.

Issuing a token for a user and purpose can retire the previous one (``replace=True``): only
the newest reset or sign-in link in someone's inbox works.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from typing import Any, Callable, Mapping

#: What ``secrets.token_urlsafe`` makes, with room for tokens of other lengths.
_SHAPE = re.compile(r"^[A-Za-z0-9_-]{20,128}$")


class LinkTokens:
    """Issues and redeems single-use tokens in the app's cache."""

    def __init__(self, cache: Any, lifetimes: Mapping[str, float], clock: Callable[[], float]) -> None:
        self.cache = cache
        self.lifetimes = lifetimes
        self.clock = clock

    async def issue(self, purpose: str, user_id: str, replace: bool = False, **data: Any) -> str:
        """A new token for ``purpose`` that redeems to ``{userId, **data}``."""
        token = secrets.token_urlsafe(32)
        lifetime = self.lifetimes[purpose]
        record = {"userId": user_id, **data, "expires": self.clock() + lifetime}
        await self.cache.set(_key(purpose, token), record, ttl=lifetime)
        if replace:
            latest = f"auth:latest:{purpose}:{user_id}"
            previous = await self.cache.get(latest)
            await self.cache.set(latest, _digest(token), ttl=lifetime)
            if previous:
                await self.cache.delete(f"auth:token:{purpose}:{previous}")
        return token

    async def redeem(self, purpose: str, token: Any) -> dict[str, Any] | None:
        """The token's record, taken so that nobody can redeem it again; None if invalid."""
        if not _plausible(token):
            return None
        return self._live(await self.cache.take(_key(purpose, token)))

    async def peek(self, purpose: str, token: Any) -> dict[str, Any] | None:
        """The token's record, left in place (a link that only leads to a form)."""
        if not _plausible(token):
            return None
        return self._live(await self.cache.get(_key(purpose, token)))

    def _live(self, record: Any) -> dict[str, Any] | None:
        if not isinstance(record, dict) or record.get("expires", 0) <= self.clock():
            return None
        return record


def _plausible(token: Any) -> bool:
    return isinstance(token, str) and _SHAPE.match(token) is not None


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _key(purpose: str, token: str) -> str:
    return f"auth:token:{purpose}:{_digest(token)}"
