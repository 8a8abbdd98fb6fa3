"""Rate limits in the cache: fixed windows, counted before the work, keyed by digests."""

from __future__ import annotations

import asyncio
import secrets

import pytest

from auth_harness import cache_url  # noqa: F401 (fixture: both caches)
from flowengine.auth.config import RateLimit
from flowengine.auth.limits import RateLimiter
from flowengine.cache import open_cache
from flowengine.errors import FlowError

pytestmark = pytest.mark.anyio


@pytest.fixture
async def limiter(cache_url):
    cache = open_cache(cache_url, f"auth-limits-{secrets.token_hex(4)}")
    yield RateLimiter(cache, {"signin_account": RateLimit(3, 60.0)})
    keys, _ = await cache.keys("*", None, 1000)
    if keys:
        await cache.delete(*keys)
    await cache.close()


async def test_the_hit_over_the_limit_is_a_429_saying_when_to_come_back(limiter: RateLimiter) -> None:
    for _ in range(3):
        await limiter.hit("signin_account", "Ann@Example.com")
    with pytest.raises(FlowError) as caught:
        await limiter.hit("signin_account", "ann@example.com ")  # the same subject, however written
    error = caught.value
    assert (error.status, error.code) == (429, "too_many_requests")
    assert error.details == {"retryAfter": 60} and error.message == "Too many requests; try again in 60 seconds"


async def test_hits_never_extend_the_window_and_a_clear_resets(limiter: RateLimiter) -> None:
    await limiter.hit("signin_account", "ann@example.com")
    (key,), _ = await limiter.cache.keys("*")
    assert "ann" not in key and key.startswith("auth:limit:signin_account:")
    await limiter.cache.expire(key, 5)
    await limiter.hit("signin_account", "ann@example.com")
    assert await limiter.cache.ttl(key) <= 5
    await limiter.clear("signin_account", "ann@example.com")
    assert await limiter.cache.keys("*") == ([], None)


async def test_concurrent_hits_pass_exactly_the_limit(limiter: RateLimiter) -> None:
    results = await asyncio.gather(*(limiter.hit("signin_account", "bob@example.com") for _ in range(40)), return_exceptions=True)
    assert sum(result is None for result in results) == 3
