"""nodes/cache.py: the cache node types, run the way the interpreter runs them."""

from __future__ import annotations

import socket

import pytest

from flowengine.cache import MemoryCache, RedisCache
from flowengine.context import RunContext, Services
from flowengine.errors import FlowError
from flowengine.registry import Registry
from flowengine_nodes.cache import cache_delete, cache_get, cache_increment, cache_set

pytestmark = pytest.mark.anyio


@pytest.fixture
def ctx() -> RunContext:
    return RunContext(Services(cache=MemoryCache("t")), scope={}, flow="t")


def test_the_module_declares_the_four_cache_types():
    registry = Registry()
    registry.add_module("flowengine_nodes.cache")
    assert registry.names() == ["cache-delete", "cache-get", "cache-increment", "cache-set"]
    assert registry.get("cache-get").outputs == ("found", "not_found")
    assert registry.get("cache-set").outputs == ("next",)
    assert registry.get("cache-increment").params["amount"].default == 1
    assert registry.get("cache-set").params["key"].kind == "template"
    assert registry.get("cache-set").params["ttl"].schema == {"type": "integer", "minimum": 1}


async def test_set_then_get_finds_the_value(ctx):
    value = {"code": 123456, "userId": "u1"}
    assert await cache_set(ctx, {"key": "phone-code:+15550001", "value": value, "ttl": 60}) == ("next", value)
    assert await cache_get(ctx, {"key": "phone-code:+15550001"}) == ("found", value)
    assert 59 < await ctx.cache.ttl("phone-code:+15550001") <= 60


async def test_get_without_a_value_takes_not_found(ctx):
    assert await cache_get(ctx, {"key": "missing"}) == ("not_found", None)


@pytest.mark.parametrize("value", [0, "", False, []])
async def test_a_stored_falsy_value_is_found(ctx, value):
    await cache_set(ctx, {"key": "k", "value": value})
    assert await cache_get(ctx, {"key": "k"}) == ("found", value)
    assert await ctx.cache.ttl("k") is None


async def test_delete_says_whether_the_key_existed(ctx):
    await cache_set(ctx, {"key": "k", "value": 1})
    assert await cache_delete(ctx, {"key": "k"}) == ("next", True)
    assert await cache_delete(ctx, {"key": "k"}) == ("next", False)
    assert await cache_get(ctx, {"key": "k"}) == ("not_found", None)


async def test_increment_counts_and_sets_the_ttl_once(ctx):
    assert await cache_increment(ctx, {"key": "tries", "amount": 1, "ttl": 300}) == ("next", 1)
    assert await cache_increment(ctx, {"key": "tries", "amount": 4, "ttl": 300}) == ("next", 5)
    assert await cache_increment(ctx, {"key": "tries", "amount": -2}) == ("next", 3)
    assert 299 < await ctx.cache.ttl("tries") <= 300


async def test_increment_by_a_non_integer_takes_the_error_output(ctx):
    with pytest.raises(FlowError) as caught:
        await cache_increment(ctx, {"key": "tries", "amount": "2"})
    assert (caught.value.code, caught.value.status) == ("cache_invalid_amount", 400)


async def test_an_unreachable_cache_takes_the_error_output():
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    cache = RedisCache.from_url(f"redis://127.0.0.1:{port}/0", "t")
    ctx = RunContext(Services(cache=cache), scope={}, flow="t")
    try:
        with pytest.raises(FlowError) as caught:
            await cache_get(ctx, {"key": "k"})
        assert (caught.value.code, caught.value.status) == ("cache_unavailable", 503)
        assert caught.value.body()["errors"][0]["origin"] == "server_error"
    finally:
        await cache.close()
