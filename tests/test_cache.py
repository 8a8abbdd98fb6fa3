"""flowengine.cache: one suite run against both backends, so they keep one meaning.

The Redis runs use the shared server (``redis_url``, DB 15) under a fresh namespace per test
and delete their keys afterwards. The outage tests start a redis-server of their own, so
they can stall and kill it without disturbing anyone.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from flowengine.cache import MemoryCache, RedisCache, open_cache
from flowengine.errors import FlowError

pytestmark = pytest.mark.anyio


def _namespace() -> str:
    return f"fe-test-{uuid.uuid4().hex[:12]}"


async def _forget(cache: RedisCache) -> None:
    async for name in cache.redis.scan_iter(match=f"{cache.namespace}:*"):
        await cache.redis.delete(name)


@pytest.fixture(params=["memory", "redis"])
async def cache(request):
    if request.param == "memory":
        yield MemoryCache(_namespace())
        return
    redis = RedisCache.from_url(request.getfixturevalue("redis_url"), _namespace())
    try:
        yield redis
    finally:
        await _forget(redis)
        await redis.close()


def _sibling(cache, namespace: str):
    """The same backend under another namespace (sharing the Redis client)."""
    if isinstance(cache, RedisCache):
        return RedisCache(cache.redis, namespace)
    return MemoryCache(namespace)


async def _fails(code: str, call, status: int | None = None) -> FlowError:
    with pytest.raises(FlowError) as caught:
        await call
    assert caught.value.code == code
    if status is not None:
        assert caught.value.status == status
    return caught.value


# -- values ----------------------------------------------------------------------------


async def test_values_round_trip_through_json_as_fresh_copies(cache):
    value = {"user": {"id": 7, "tags": ["a", "ü"], "score": 1.5, "ok": True, "none": None}}
    await cache.set("profile", value)
    value["user"]["tags"].append("changed after set")
    stored = await cache.get("profile")
    assert stored == {"user": {"id": 7, "tags": ["a", "ü"], "score": 1.5, "ok": True, "none": None}}
    stored["user"]["id"] = 8
    assert (await cache.get("profile"))["user"]["id"] == 7


async def test_a_missing_key_reads_as_none(cache):
    assert await cache.get("nothing") is None
    assert await cache.get_many(["nothing", "else"]) == [None, None]


@pytest.mark.parametrize("value", [{1, 2}, object(), float("nan"), {"when": b"bytes"}])
async def test_values_json_cannot_hold_are_refused_and_not_stored(cache, value):
    error = await _fails("cache_value_not_json", cache.set("bad", value))
    assert "Cannot cache 'bad'" in error.message
    assert not await cache.exists("bad")


async def test_get_many_reads_values_in_order(cache):
    await cache.set("a", 1)
    await cache.set("b", {"x": 2})
    await cache.push("list", 3, keep=2)
    assert await cache.get_many(["b", "missing", "a", "list"]) == [{"x": 2}, None, 1, None]


# -- expiry ----------------------------------------------------------------------------


async def test_a_value_expires_after_its_ttl(cache):
    await cache.set("code", "123456", ttl=0.3)
    assert await cache.get("code") == "123456"
    assert 0 < await cache.ttl("code") <= 0.3
    await asyncio.sleep(0.45)
    assert await cache.get("code") is None
    assert not await cache.exists("code")
    assert await cache.ttl("code") is None


async def test_set_without_ttl_drops_the_previous_expiry(cache):
    await cache.set("k", 1, ttl=0.3)
    await cache.set("k", 2)
    assert await cache.ttl("k") is None
    await asyncio.sleep(0.45)
    assert await cache.get("k") == 2


@pytest.mark.parametrize("ttl", [0, -1, "60", True, float("inf"), float("nan"), 2.0**40])
async def test_bad_ttls_are_refused(cache, ttl):
    await _fails("cache_invalid_ttl", cache.set("k", 1, ttl=ttl), status=400)
    await cache.set("k", 1)
    await _fails("cache_invalid_ttl", cache.expire("k", ttl))
    await _fails("cache_invalid_ttl", cache.increment("n", ttl=ttl))
    assert await cache.ttl("k") is None and not await cache.exists("n")


async def test_expire_and_ttl(cache):
    assert await cache.expire("missing", 10) is False
    await cache.set("k", "v")
    assert await cache.ttl("k") is None
    assert await cache.expire("k", 0.3) is True
    assert 0 < await cache.ttl("k") <= 0.3
    await asyncio.sleep(0.45)
    assert not await cache.exists("k")


# -- delete / exists -------------------------------------------------------------------


async def test_delete_counts_the_keys_that_existed(cache):
    await cache.set("a", 1)
    await cache.push("b", 2, keep=5)
    assert await cache.exists("a") and await cache.exists("b")
    assert await cache.delete("a", "b", "c", "a") == 2
    assert await cache.delete() == 0
    assert not await cache.exists("a")
    assert await cache.items("b") == []


# -- counters --------------------------------------------------------------------------


async def test_counters_start_at_zero(cache):
    assert await cache.increment("n") == 1
    assert await cache.increment("n", 5) == 6
    assert await cache.decrement("n", 2) == 4
    assert await cache.decrement("m") == -1
    assert await cache.get("n") == 4
    await cache.set("preset", 10)
    assert await cache.increment("preset") == 11


async def test_an_increment_ttl_is_set_only_when_the_key_is_created(cache):
    assert await cache.increment("tries", ttl=0.5) == 1
    await asyncio.sleep(0.2)
    assert await cache.increment("tries", ttl=60) == 2
    assert await cache.ttl("tries") <= 0.3  # still the first window
    await asyncio.sleep(0.45)
    assert await cache.increment("tries", ttl=60) == 1
    assert await cache.ttl("tries") > 30


async def test_concurrent_increments_are_exact(cache):
    counts = await asyncio.gather(*(cache.increment("hits", ttl=30) for _ in range(200)))
    assert sorted(counts) == list(range(1, 201))
    assert await cache.get("hits") == 200
    assert 0 < await cache.ttl("hits") <= 30


@pytest.mark.parametrize("stored", [1.5, "7", True, {"n": 1}, 2**63 - 1])
async def test_increment_refuses_what_is_not_a_64_bit_integer(cache, stored):
    await cache.set("k", stored)
    await _fails("cache_not_integer", cache.increment("k"), status=409)
    assert await cache.get("k") == stored


@pytest.mark.parametrize("amount", [1.5, "2", True, None])
async def test_increments_are_whole_numbers(cache, amount):
    await _fails("cache_invalid_amount", cache.increment("k", amount), status=400)
    await _fails("cache_invalid_amount", cache.decrement("k", amount), status=400)
    assert not await cache.exists("k")


# -- lists -----------------------------------------------------------------------------


async def test_push_keeps_the_newest_first_and_caps_the_list(cache):
    for n in range(1, 6):
        await cache.push("outbox", {"n": n}, keep=3)
    assert await cache.items("outbox") == [{"n": 5}, {"n": 4}, {"n": 3}]
    assert await cache.items("empty") == []


async def test_lists_and_values_do_not_mix(cache):
    await cache.push("list", 1, keep=3)
    await cache.set("value", 1)
    await _fails("cache_wrong_type", cache.get("list"), status=409)
    await _fails("cache_wrong_type", cache.increment("list"))
    await _fails("cache_wrong_type", cache.push("value", 2, keep=3))
    await _fails("cache_wrong_type", cache.items("value"))
    await cache.set("list", "replaced")  # set replaces whatever was there, as in Redis
    assert await cache.get("list") == "replaced"


async def test_push_refuses_a_cap_below_one(cache):
    with pytest.raises(ValueError, match="keep must be at least 1"):
        await cache.push("list", 1, keep=0)


# -- keys, stats, namespaces -----------------------------------------------------------


async def test_keys_match_redis_globs(cache):
    for key in ["hello", "hallo", "hxllo", "hllo", "heeello", "user:1", "a*b"]:
        await cache.set(key, 1)

    async def matching(pattern):
        keys, cursor = await cache.keys(pattern, count=1000)
        assert cursor is None
        return sorted(keys)

    assert await matching("h?llo") == ["hallo", "hello", "hxllo"]
    assert await matching("h*llo") == ["hallo", "heeello", "hello", "hllo", "hxllo"]
    assert await matching("h[ae]llo") == ["hallo", "hello"]
    assert await matching("h[^e]llo") == ["hallo", "hxllo"]
    assert await matching("h[a-b]llo") == ["hallo"]
    assert await matching("user:*") == ["user:1"]
    assert await matching("a\\*b") == ["a*b"]


async def test_keys_page_through_every_key(cache):
    names = {f"k:{n:03}" for n in range(250)}
    for name in names:
        await cache.set(name, 1)
    seen: list[str] = []
    keys, cursor = await cache.keys("k:*", count=40)
    seen += keys
    while cursor is not None:
        keys, cursor = await cache.keys("k:*", cursor, count=40)
        seen += keys
    assert set(seen) == names


async def test_expired_keys_are_neither_listed_nor_counted(cache):
    await cache.set("short", 1, ttl=0.2)
    await cache.set("long", 1)
    await asyncio.sleep(0.35)
    assert (await cache.keys())[0] == ["long"]
    assert (await cache.stats())["keys"] == 1


async def test_stats_count_this_namespace_only(cache):
    other = _sibling(cache, cache.namespace + "-other")
    await other.set("elsewhere", 1)
    try:
        for key in "abc":
            await cache.set(key, 1)
        stats = await cache.stats()
        assert stats["keys"] == 3
        assert stats["backend"] in ("memory", "redis")
    finally:
        await other.delete("elsewhere")


async def test_namespaces_keep_apps_apart(cache):
    other = _sibling(cache, cache.namespace + "-other")
    await cache.set("code", "mine")
    await other.set("code", "theirs")
    try:
        assert await cache.get("code") == "mine"
        assert await other.get("code") == "theirs"
        assert (await other.keys())[0] == ["code"]
        assert await cache.delete("code") == 1
        assert await other.get("code") == "theirs"
    finally:
        await other.delete("code")


async def test_redis_keys_carry_the_namespace(redis_url):
    cache = RedisCache.from_url(redis_url, _namespace())
    try:
        await cache.set("code", {"n": 1})
        assert await cache.redis.get(f"{cache.namespace}:code") == b'{"n":1}'
        assert (await cache.keys())[0] == ["code"]
    finally:
        await _forget(cache)
        await cache.close()


# -- the in-process backend's bound ----------------------------------------------------


async def test_memory_evicts_the_least_recently_used_when_full():
    cache = MemoryCache("t", max_entries=3)
    for key in "abc":
        await cache.set(key, key)
    await cache.get("a")  # a is now the most recently used
    await cache.set("d", "d")
    assert sorted((await cache.keys())[0]) == ["a", "c", "d"]


async def test_memory_evicts_expired_entries_before_live_ones():
    cache = MemoryCache("t", max_entries=3)
    await cache.set("a", 1)
    await cache.set("b", 1, ttl=0.1)
    await cache.set("c", 1)
    await asyncio.sleep(0.2)
    await cache.set("d", 1)
    assert sorted((await cache.keys())[0]) == ["a", "c", "d"]


async def test_memory_rewriting_a_key_with_a_ttl_stays_bounded():
    cache = MemoryCache("t", max_entries=10)
    for n in range(10_000):
        await cache.set("code", n, ttl=60)
    assert len(cache._deadlines) < 100
    assert await cache.get("code") == 9_999


def test_memory_needs_room_for_one_entry():
    with pytest.raises(ValueError, match="max_entries must be at least 1, not 0"):
        MemoryCache("t", max_entries=0)


# -- choosing a backend ----------------------------------------------------------------


async def test_open_cache_picks_the_backend_by_url():
    for url in (None, ""):
        cache = open_cache(url, "app")
        assert isinstance(cache, MemoryCache) and cache.namespace == "app"
    cache = open_cache("redis://127.0.0.1:6379/15", "app")
    assert isinstance(cache, RedisCache) and cache.namespace == "app"
    await cache.close()
    with pytest.raises(ValueError, match="cache url 'memcached://x' is neither empty nor"):
        open_cache("memcached://x", "app")


# -- Redis going away and coming back --------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class OwnRedis:
    """A redis-server this test controls: stall it, kill it, start it on the same port."""

    def __init__(self, binary: str, directory: Path) -> None:
        self.binary, self.directory, self.port = binary, directory, _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.directory)],
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not self._answers():
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.05)

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def pause(self) -> None:
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.process.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        self.process.kill()  # SIGKILL works on a stopped process too
        self.process.wait()


@pytest.fixture
def own_redis(tmp_path):
    binary = shutil.which("redis-server")
    if binary is None:
        reason = "redis-server is not installed, so the outage tests cannot run their own"
        if os.environ.get("FLOWENGINE_REQUIRE_REDIS") == "1":
            pytest.fail(f"{reason}, and FLOWENGINE_REQUIRE_REDIS=1 makes it required")
        pytest.skip(reason)
    server = OwnRedis(binary, tmp_path)
    server.start()
    yield server
    server.kill()


async def _unavailable_quickly(call) -> None:
    started = time.monotonic()
    await _fails("cache_unavailable", call(), status=503)
    assert time.monotonic() - started < 3.5


async def test_a_stalled_redis_fails_fast_then_serves_again(own_redis):
    cache = RedisCache.from_url(own_redis.url, "outage")
    try:
        await cache.set("k", 1)
        own_redis.pause()
        try:
            # Reads only: a write that timed out may still run when Redis wakes up.
            for call in (lambda: cache.get("k"), lambda: cache.exists("k"), lambda: cache.keys()):
                await _unavailable_quickly(call)
        finally:
            own_redis.resume()
        assert await cache.get("k") == 1
        assert await cache.increment("n") == 1
    finally:
        await cache.close()


async def test_a_burst_against_a_stalled_redis_fails_within_bounded_time(own_redis):
    cache = RedisCache.from_url(own_redis.url, "outage", connections=2)
    try:
        await cache.set("k", 1)
        own_redis.pause()
        started = time.monotonic()
        try:
            results = await asyncio.gather(*(cache.get("k") for _ in range(8)), return_exceptions=True)
        finally:
            own_redis.resume()
        assert time.monotonic() - started < 4
        assert {(e.code, e.status) for e in results} == {("cache_unavailable", 503)}
        assert await asyncio.gather(*(cache.get("k") for _ in range(8))) == [1] * 8
    finally:
        await cache.close()


async def test_a_restarted_redis_serves_again_without_a_new_cache(own_redis):
    cache = RedisCache.from_url(own_redis.url, "outage")
    try:
        await cache.set("k", 1)
        own_redis.kill()
        own_redis.start()  # the pooled connection is now stale: the first call must cope
        assert await cache.get("k") is None  # no persistence: a fresh, empty server
        own_redis.kill()
        await _unavailable_quickly(lambda: cache.set("k", 2))
        await _unavailable_quickly(lambda: cache.increment("n", ttl=5))
        own_redis.start()
        await cache.set("k", 3)
        assert await cache.get("k") == 3
    finally:
        await cache.close()


def test_an_endpoint_needing_a_stalled_redis_answers_503_json_then_recovers(own_redis, tmp_path):
    """Through the real app: a flow's cache node meets the outage; nothing hangs; no restart needed."""
    from starlette.testclient import TestClient

    from flowengine.runtime import build

    (tmp_path / "flows").mkdir()
    (tmp_path / "app.yaml").write_text(f"name: outage\ncache: {{ url: '{own_redis.url}' }}\n")
    (tmp_path / "flows" / "visit.yaml").write_text(
        "service: visit\nendpoints: [{method: POST, path: /visits}]\nstart: count\nnodes:\n"
        "  count: {type: cache-increment, key: visits, next: done}\n"
        "  done: {type: return-success, body: {visits: count}}\n"
    )
    with TestClient(build(tmp_path)) as client:
        assert client.post("/visits").json() == {"visits": 1}
        own_redis.pause()
        try:
            started = time.monotonic()
            failed = client.post("/visits")
            assert time.monotonic() - started < 5
        finally:
            own_redis.resume()
        assert failed.status_code == 503
        assert failed.json()["errors"][0]["code"] == "cache_unavailable"
        assert client.post("/visits").status_code == 200


@pytest.mark.anyio
async def test_redis_that_may_evict_keys_is_reported_at_start(redis_url, caplog):
    cache = RedisCache.from_url(redis_url, _namespace())
    before = (await cache.redis.config_get("maxmemory-policy"))["maxmemory-policy"]
    await cache.redis.config_set("maxmemory-policy", "noeviction")
    await cache.start()
    assert "evicts keys" not in caplog.text  # noeviction: nothing to say
    await cache.redis.config_set("maxmemory-policy", "allkeys-lru")
    try:
        await cache.start()
    finally:
        await cache.redis.config_set("maxmemory-policy", before)
        await cache.close()
    assert "maxmemory-policy allkeys-lru" in caplog.text
