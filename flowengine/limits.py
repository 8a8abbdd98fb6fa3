"""Fixed-window counters in the app's cache: the one way flowengine limits how often things happen.

Sign-in guesses, one-time code sends, the app's SMS budget and the ``rate-limit`` node all
count the same way. The first hit creates a counter that expires with its window (the TTL is
set once, when the counter is created, so later hits never extend it), and every hit is
counted *before* the work it guards. Counting first is what makes a limit exact under
concurrency: 50 parallel requests against a limit of 10 let 10 through, not 50.

The counters live in the app's cache, so a limit holds across server processes. If the
cache is down the hit fails with the cache's 503: nothing guarded ever runs unthrottled.
"""

from __future__ import annotations

import math
from typing import Any

from flowengine.errors import FlowError


async def hit(cache: Any, key: str, limit: int, window: float, message: str | None = None) -> int:
    """Count one hit on ``key``; over ``limit`` hits in the window, a 429 with ``retryAfter``."""
    count = await cache.increment(key, 1, ttl=window)
    if count > limit:
        raise await _refusal(cache, key, window, message)
    return count


async def peek(cache: Any, key: str, limit: int, window: float, message: str | None = None) -> None:
    """The 429 that the next hit on ``key`` would get, raised now and counting nothing."""
    count = await cache.get(key)
    if isinstance(count, int) and count >= limit:
        raise await _refusal(cache, key, window, message)


async def _refusal(cache: Any, key: str, window: float, message: str | None) -> FlowError:
    left = await cache.ttl(key)  # the counter's window ends when it expires
    return too_many(left if left is not None else window, message)


def too_many(retry_after: float, message: str | None = None) -> FlowError:
    """The 429 a limited request gets; the HTTP layer turns ``retryAfter`` into ``Retry-After``."""
    seconds = max(1, math.ceil(retry_after))
    return FlowError(
        "too_many_requests",
        message or f"Too many requests; try again in {seconds} seconds",
        status=429,
        details={"retryAfter": seconds},
    )
