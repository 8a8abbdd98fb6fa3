"""The auth service's named limits (``signin_ip``, ``email_address``...), counted per subject.

Each is a fixed window counted before the work it guards (``flowengine.limits``). Counter
keys hold a digest of what they count (an address, an IP), never the text itself.
"""

from __future__ import annotations

import hashlib
from typing import Any, Mapping

from flowengine import limits
from flowengine.auth.config import RateLimit


class RateLimiter:
    """The app's named limits over one cache."""

    def __init__(self, cache: Any, limits: Mapping[str, RateLimit]) -> None:
        self.cache = cache
        self.limits = limits

    async def hit(self, name: str, subject: str) -> None:
        """Count one hit of ``subject`` against limit ``name``; 429 when over it."""
        rule = self.limits[name]
        await limits.hit(self.cache, _key(name, subject), rule.limit, rule.window)

    async def clear(self, name: str, subject: str) -> None:
        """Forget ``subject``'s hits (a successful sign-in ends a run of failures)."""
        await self.cache.delete(_key(name, subject))


def _key(name: str, subject: str) -> str:
    digest = hashlib.sha256(subject.strip().lower().encode()).hexdigest()[:32]
    return f"auth:limit:{name}:{digest}"
