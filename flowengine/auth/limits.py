"""Rate limits kept in the app's cache, so they hold across server processes.

A limit is a fixed window: the first hit creates a counter that expires with the window
(set once, when the counter is created, so hits never extend it), and every hit is
counted *before* the work it guards. Counting first is what makes a limit exact under
concurrency: 50 parallel guesses against a limit of 10 run 10 password checks, not 50.

Counter keys hold a digest of what they count (an address, an IP), never the text itself.
If the cache is down the limit cannot be checked, and the request fails with the cache's
503: an auth endpoint never runs unthrottled.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any, Mapping

from flowengine.auth.config import RateLimit
from flowengine.errors import FlowError


class RateLimiter:
    """The app's named limits (``signin_ip``, ``email_address``...) over one cache."""

    def __init__(self, cache: Any, limits: Mapping[str, RateLimit]) -> None:
        self.cache = cache
        self.limits = limits

    async def hit(self, name: str, subject: str) -> None:
        """Count one hit of ``subject`` against limit ``name``; 429 when over it."""
        rule, key = self.limits[name], _key(name, subject)
        count = await self.cache.increment(key, 1, ttl=rule.window)
        if count > rule.limit:
            left = await self.cache.ttl(key)
            raise too_many(math.ceil(left if left is not None else rule.window))

    async def clear(self, name: str, subject: str) -> None:
        """Forget ``subject``'s hits (a successful sign-in ends a run of failures)."""
        await self.cache.delete(_key(name, subject))


def too_many(retry_after: int) -> FlowError:
    """The 429 a limited request gets; the HTTP layer turns ``retryAfter`` into ``Retry-After``."""
    retry_after = max(1, retry_after)
    return FlowError(
        "too_many_requests",
        f"Too many requests; try again in {retry_after} seconds",
        status=429,
        details={"retryAfter": retry_after},
    )


def _key(name: str, subject: str) -> str:
    digest = hashlib.sha256(subject.strip().lower().encode()).hexdigest()[:32]
    return f"auth:limit:{name}:{digest}"
