"""flowengine.http.cache_api: the Altogic cache REST API through Starlette's whole stack.

Every test runs against both backends. Requests are written as the official client sends
them: raw keys in the query string, JSON bodies, a JSON body on DELETE.
"""

from __future__ import annotations

import uuid

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse

from flowengine.cache import MemoryCache, RedisCache
from flowengine.errors import FlowError
from flowengine.http.cache_api import CLIENT_SPACE, PREFIX, cache_routes

pytestmark = pytest.mark.anyio

AUTH = {"Authorization": "test-api-key"}


async def _authorize(request: Request) -> None:
    if request.headers.get("Authorization") != AUTH["Authorization"]:
        raise FlowError("missing_api_key", "A session or an API key is required", status=401)


async def _render(request: Request, exc: FlowError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status)


def _client(cache, **options) -> httpx.AsyncClient:
    routes = cache_routes(cache, _authorize, **options)
    app = Starlette(routes=routes, exception_handlers={FlowError: _render})
    transport = httpx.ASGITransport(app=app)
    return httpx.AsyncClient(transport=transport, base_url="http://testserver", headers=AUTH)


@pytest.fixture(params=["memory", "redis"])
async def root(request):
    """The app's whole cache, as the engine and the flows use it."""
    namespace = f"fe-api-test-{uuid.uuid4().hex[:12]}"
    if request.param == "memory":
        yield MemoryCache(namespace)
        return
    cache = RedisCache.from_url(request.getfixturevalue("redis_url"), namespace)
    try:
        yield cache
    finally:
        async for name in cache.redis.scan_iter(match=f"{namespace}:*"):
            await cache.redis.delete(name)
        await cache.close()


@pytest.fixture
def cache(root):
    """The part of the cache the API works in."""
    return root.space(CLIENT_SPACE)


@pytest.fixture
async def api(root):
    async with _client(root) as client:
        yield client


def _error(response: httpx.Response) -> dict:
    [item] = response.json()["errors"]
    return item


# -- authorization ---------------------------------------------------------------------

ROUTES = [
    ("GET", "?key=k", None),
    ("POST", "", {"key": "k", "value": 1}),
    ("DELETE", "", {"keys": ["k"]}),
    ("POST", "/increment", {"key": "k", "increment": 1}),
    ("POST", "/decrement", {"key": "k", "decrement": 1}),
    ("POST", "/expire", {"key": "k", "ttl": 10}),
    ("POST", "/list-keys", {"pattern": "*", "next": None}),
    ("GET", "/stats", None),
]


@pytest.mark.parametrize("method, path, body", ROUTES)
async def test_every_route_requires_a_session_or_an_api_key(api, cache, method, path, body):
    await cache.set("k", 5)
    response = await api.request(method, PREFIX + path, json=body, headers={"Authorization": "wrong"})
    assert response.status_code == 401
    assert _error(response)["code"] == "missing_api_key"
    assert await cache.get("k") == 5 and await cache.ttl("k") is None


@pytest.mark.parametrize("method, path, body", ROUTES)
async def test_every_route_answers_json_when_authorized(api, method, path, body):
    response = await api.request(method, PREFIX + path, json=body)
    assert response.status_code == 200
    response.json()


# -- values ----------------------------------------------------------------------------


async def test_set_then_get_returns_an_object_as_stored(api):
    profile = {"name": "Ada", "tags": ["x", "ü"], "nested": {"n": 1}}
    assert (await api.post(PREFIX, json={"key": "user:1", "value": profile})).status_code == 200
    response = await api.get(PREFIX + "?key=user:1")
    assert response.status_code == 200
    assert response.json() == profile


@pytest.mark.parametrize("value", ["text", 42, 0, 1.5, True, False])
async def test_get_wraps_a_primitive(api, value):
    await api.post(PREFIX, json={"key": "k", "value": value})
    assert (await api.get(PREFIX + "?key=k")).json() == {"value": value}


async def test_get_returns_a_list_as_stored(api):
    await api.post(PREFIX, json={"key": "k", "value": [1, {"a": 2}]})
    assert (await api.get(PREFIX + "?key=k")).json() == [1, {"a": 2}]


async def test_get_of_a_missing_key_is_null(api):
    response = await api.get(PREFIX + "?key=missing")
    assert response.status_code == 200
    assert response.content == b"null"


async def test_get_keeps_a_plus_in_the_raw_key_and_decodes_percent_escapes(api, cache):
    await cache.set("x+y@z.com", "plus")
    await cache.set("k 1", "space")
    assert (await api.get(PREFIX + "?key=x+y@z.com")).json() == {"value": "plus"}
    assert (await api.get(PREFIX + "?other=1&key=k%201")).json() == {"value": "space"}


async def test_set_with_a_ttl_expires_and_a_falsy_ttl_means_none(api, cache):
    await api.post(PREFIX, json={"key": "short", "value": 1, "ttl": 30})
    await api.post(PREFIX, json={"key": "forever", "value": 1, "ttl": 0})
    assert 29 < await cache.ttl("short") <= 30
    assert await cache.ttl("forever") is None


async def test_delete_removes_the_listed_keys(api, cache):
    for key in "abc":
        await cache.set(key, 1)
    response = await api.request("DELETE", PREFIX, json={"keys": ["a", "b", "missing"]})
    assert response.status_code == 200
    assert (await cache.keys())[0] == ["c"]
    await api.request("DELETE", PREFIX, json={"keys": "c"})  # a lone key as a string
    assert not await cache.exists("c")


# -- counters and expiry ---------------------------------------------------------------


async def test_increment_and_decrement_return_the_new_value(api, cache):
    response = await api.post(PREFIX + "/increment", json={"key": "n", "increment": 5, "ttl": 60})
    assert response.json() == {"value": 5}
    assert (await api.post(PREFIX + "/decrement", json={"key": "n", "decrement": 2})).json() == {"value": 3}
    assert (await api.post(PREFIX + "/increment", json={"key": "n"})).json() == {"value": 4}
    assert 59 < await cache.ttl("n") <= 60


async def test_expire_sets_a_ttl(api, cache):
    await cache.set("k", 1)
    assert (await api.post(PREFIX + "/expire", json={"key": "k", "ttl": 30})).status_code == 200
    assert 29 < await cache.ttl("k") <= 30


# -- keys and stats --------------------------------------------------------------------


async def test_list_keys_pages_through_keys_with_their_values(api, cache):
    for n in range(150):
        await cache.set(f"k:{n:03}", n)
    await cache.set("other", 1)
    found: dict[str, int] = {}
    cursor = None
    for _ in range(20):
        page = (await api.post(PREFIX + "/list-keys", json={"pattern": "k:*", "next": cursor})).json()
        found.update((item["key"], item["value"]) for item in page["data"])
        cursor = page["next"]
        if cursor is None:
            break
    assert found == {f"k:{n:03}": n for n in range(150)}


async def test_list_keys_without_a_pattern_lists_everything(api, cache):
    await cache.set("a", 1)
    page = (await api.post(PREFIX + "/list-keys", json={"pattern": None, "next": None})).json()
    assert page == {"data": [{"key": "a", "value": 1}], "next": None}


async def test_stats_count_the_keys(api, cache):
    for key in "ab":
        await cache.set(key, 1)
    stats = (await api.get(PREFIX + "/stats")).json()
    assert stats["keys"] == 2


# -- the client's space ------------------------------------------------------------------

ENGINE_KEYS = {"auth:token:magic:abc": {"userId": "victim"}, "otp-tries:ch1": 5, "sms-budget": 30, "rate:x": 9}


async def test_the_api_cannot_name_what_the_engine_keeps(api, root):
    for key, value in ENGINE_KEYS.items():
        await root.set(key, value)
    forged = {"key": "auth:token:magic:forged", "value": {"userId": "victim", "expires": 4e9}}
    assert (await api.post(PREFIX, json=forged)).status_code == 200
    for key in ENGINE_KEYS:
        assert (await api.get(PREFIX, params={"key": key})).json() is None
    await api.request("DELETE", PREFIX, json={"keys": list(ENGINE_KEYS)})
    await api.post(PREFIX + "/increment", json={"key": "otp-tries:ch1", "increment": -5})
    listed = (await api.post(PREFIX + "/list-keys", json={"pattern": "*", "next": None})).json()
    assert sorted(item["key"] for item in listed["data"]) == ["auth:token:magic:forged", "otp-tries:ch1"]
    assert (await api.get(PREFIX + "/stats")).json()["keys"] == 2
    assert {key: await root.get(key) for key in ENGINE_KEYS} == ENGINE_KEYS  # untouched
    assert await root.get("auth:token:magic:forged") is None  # the forgery went to the client's space


async def test_a_body_over_16_kib_is_refused_before_it_is_read_whole(api, cache):
    response = await api.post(PREFIX, content=b'{"key": "k", "value": "' + b"x" * 20_000 + b'"}',
                              headers={"Content-Type": "application/json"})  # fmt: skip
    assert response.status_code == 413
    assert await cache.get("k") is None


# -- bad requests ----------------------------------------------------------------------

LONG_KEY = "k" * 251

BAD_REQUESTS = [
    # method, path, body, status, code, message fragment
    ("GET", "", None, 400, "validation_error", "key is required"),
    ("GET", "?key=", None, 400, "validation_error", "key is required"),
    ("GET", f"?key={LONG_KEY}", None, 400, "validation_error", "key must be at most 250 characters, not 251"),
    ("POST", "", {"value": 1}, 400, "validation_error", "key is required"),
    ("POST", "", {"key": 5, "value": 1}, 400, "validation_error", "key must be a string"),
    ("POST", "", {"key": LONG_KEY, "value": 1}, 400, "validation_error", "at most 250 characters"),
    ("POST", "", {"key": "k"}, 400, "validation_error", "value is required"),
    ("POST", "", {"key": "k", "value": "x" * 6000}, 400, "cache_key_size_exceeded", "at most 5120"),
    ("POST", "", {"key": "k", "value": 1, "ttl": "soon"}, 400, "cache_invalid_ttl", "positive number"),
    ("POST", "", {"key": "k", "value": 1, "ttl": -5}, 400, "cache_invalid_ttl", "not -5"),
    ("POST", "", [1, 2], 400, "invalid_body", "must be a JSON object"),
    ("DELETE", "", {}, 400, "validation_error", "keys must be a non-empty list"),
    ("DELETE", "", {"keys": []}, 400, "validation_error", "keys must be a non-empty list"),
    ("DELETE", "", {"keys": ["a", 1]}, 400, "validation_error", "keys must be a string"),
    ("POST", "/increment", {"increment": 1}, 400, "validation_error", "key is required"),
    ("POST", "/increment", {"key": "k", "increment": "2"}, 400, "cache_invalid_amount", "not '2'"),
    ("POST", "/decrement", {"key": "k", "decrement": 1.5}, 400, "cache_invalid_amount", "not 1.5"),
    ("POST", "/increment", {"key": "k", "increment": 1, "ttl": "x"}, 400, "cache_invalid_ttl", "not 'x'"),
    ("POST", "/expire", {"key": "k"}, 400, "validation_error", "ttl is required"),
    ("POST", "/expire", {"key": "k", "ttl": 0}, 400, "cache_invalid_ttl", "not 0"),
    ("POST", "/list-keys", {"pattern": 5}, 400, "validation_error", "pattern must be a string"),
    ("POST", "/list-keys", {"next": 5}, 400, "validation_error", "next must be a string or null"),
]


@pytest.mark.parametrize("method, path, body, status, code, fragment", BAD_REQUESTS)
async def test_bad_requests_get_a_clear_error_and_change_nothing(
    api, cache, method, path, body, status, code, fragment
):
    response = await api.request(method, PREFIX + path, json=body)
    assert response.status_code == status
    error = _error(response)
    assert error["code"] == code
    assert fragment in error["message"]
    assert error["origin"] == "client_error"
    if code == "validation_error":
        assert error["details"]["field"] in ("key", "keys", "value", "ttl", "pattern", "next")
    assert (await cache.stats())["keys"] == 0  # nothing stored


@pytest.mark.parametrize("content", [b"", b"not json", b"\xff\xfe"])
async def test_a_body_that_is_not_json_is_refused(api, content):
    response = await api.post(PREFIX, content=content, headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert _error(response)["code"] == "invalid_body"


async def test_incrementing_a_non_number_is_a_conflict(api, cache):
    await cache.set("k", {"a": 1})
    response = await api.post(PREFIX + "/increment", json={"key": "k", "increment": 1})
    assert response.status_code == 409
    assert _error(response)["code"] == "cache_not_integer"


async def test_the_value_size_limit_is_configurable(root, cache):
    async with _client(root, max_value_bytes=12) as api:
        assert (await api.post(PREFIX, json={"key": "k", "value": "x" * 10})).status_code == 200  # 12 bytes
        response = await api.post(PREFIX, json={"key": "k", "value": "x" * 11})
        assert response.status_code == 400
        assert _error(response)["details"] == {"size": 13, "limit": 12}
    assert await cache.get("k") == "x" * 10


async def test_an_unreachable_cache_answers_503_in_json():
    cache = RedisCache.from_url("redis://127.0.0.1:1/0", "t")
    try:
        async with _client(cache) as api:
            response = await api.get(PREFIX + "?key=k")
        assert response.status_code == 503
        assert _error(response) == {
            "origin": "server_error",
            "code": "cache_unavailable",
            "message": "The cache service is unavailable",
        }
    finally:
        await cache.close()
