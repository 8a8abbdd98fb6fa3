"""Link tokens and the cache's atomic ``take`` under them, on both cache backends."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from typing import AsyncIterator

import pytest

from auth_harness import Clock
from auth_harness import cache_url  # noqa: F401 (fixture: both caches)
from flowengine.auth.tokens import LinkTokens
from flowengine.cache import Cache, open_cache

pytestmark = pytest.mark.anyio

LIFETIMES = {"verify": 86400.0, "magic": 900.0, "reset": 900.0, "change-email": 3600.0, "grant": 300.0}


@pytest.fixture
async def cache(cache_url: str | None) -> AsyncIterator[Cache]:
    opened = open_cache(cache_url, f"auth-tokens-{secrets.token_hex(4)}")
    yield opened
    keys, _ = await opened.keys("*", None, 1000)
    if keys:
        await opened.delete(*keys)
    await opened.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def tokens(cache: Cache, clock: Clock) -> LinkTokens:
    return LinkTokens(cache, LIFETIMES, clock)


async def test_take_gives_the_value_once(cache: Cache) -> None:
    await cache.set("k", {"a": 1}, ttl=60)
    assert await cache.take("k") == {"a": 1}
    assert await cache.take("k") is None and not await cache.exists("k")
    assert await cache.take("never") is None


async def test_of_many_concurrent_takers_exactly_one_gets_the_value(cache: Cache) -> None:
    for round_ in range(5):
        await cache.set(f"k{round_}", round_, ttl=60)
        taken = await asyncio.gather(*(cache.take(f"k{round_}") for _ in range(200)))
        assert [value for value in taken if value is not None] == [round_]


async def test_take_refuses_a_list(cache: Cache) -> None:
    await cache.push("list", "x", keep=5)
    with pytest.raises(Exception) as caught:
        await cache.take("list")
    assert getattr(caught.value, "code", None) == "cache_wrong_type"


async def test_a_token_is_256_random_bits_kept_only_as_its_digest(tokens: LinkTokens, cache: Cache) -> None:
    token = await tokens.issue("magic", "u1")
    assert len(token) == 43
    keys, _ = await cache.keys("*")
    assert keys == [f"auth:token:magic:{hashlib.sha256(token.encode()).hexdigest()}"]
    assert token not in str(await cache.get(keys[0]))
    assert 899 <= await cache.ttl(keys[0]) <= 900


async def test_a_token_redeems_once_and_only_for_its_purpose(tokens: LinkTokens) -> None:
    token = await tokens.issue("reset", "u1", email="a@b.c")
    assert await tokens.redeem("magic", token) is None
    assert await tokens.peek("reset", token) == {"userId": "u1", "email": "a@b.c", "expires": pytest.approx(tokens.clock() + 900)}
    assert (await tokens.redeem("reset", token))["userId"] == "u1"
    assert await tokens.redeem("reset", token) is None


async def test_a_token_expires_by_the_apps_clock(tokens: LinkTokens, clock: Clock) -> None:
    token = await tokens.issue("grant", "u1")
    clock.advance(299)
    assert await tokens.peek("grant", token) is not None
    clock.advance(1)
    assert await tokens.redeem("grant", token) is None


async def test_a_newer_token_retires_the_older_one_of_the_same_user_and_purpose(tokens: LinkTokens) -> None:
    first = await tokens.issue("reset", "u1", replace=True)
    other = await tokens.issue("reset", "u2", replace=True)
    second = await tokens.issue("reset", "u1", replace=True)
    assert await tokens.peek("reset", first) is None
    assert await tokens.peek("reset", second) is not None and await tokens.peek("reset", other) is not None


@pytest.mark.parametrize("junk", [None, "", "short", "A" * 200, "with space and /slash/ 0123456789", 12345, ["x"]])
async def test_junk_never_reaches_the_cache(tokens: LinkTokens, junk: object) -> None:
    assert await tokens.redeem("magic", junk) is None and await tokens.peek("magic", junk) is None
