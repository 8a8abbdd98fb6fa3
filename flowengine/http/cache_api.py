"""The Altogic cache REST API, as the official client's ``CacheManager`` calls it.

Every route first calls ``authorize(request)`` (a session or an API key, checked by the app)
and raises ``FlowError`` for every failure; the app renders it as ``{"errors": [...]}``.

Any signed-in client may read and change any key it names (Altogic's contract), so the API
works in a space of the app's cache of its own (``client:``): what the engine and the flows
keep there (sessions, one-time codes, rate limits, the outbox) cannot be named from outside.
Bodies are small JSON objects, refused beyond ``MAX_BODY_BYTES``.
The routes carry their full paths: a Starlette ``Mount`` would answer the client's bare
``/_api/rest/v1/cache`` with a redirect.
"""

from __future__ import annotations

import functools
import json
from typing import Any, Awaitable, Callable
from urllib.parse import unquote_to_bytes

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from flowengine.cache import Cache, encode
from flowengine.errors import FlowError, ValidationFailed
from flowengine.http.requests import read_body

PREFIX = "/_api/rest/v1/cache"
MAX_KEY_LENGTH = 250
#: Altogic's free-plan limit per key.
MAX_VALUE_BYTES = 5 * 1024
PAGE_SIZE = 100
#: A key, a value and a ttl, with room to spare (or twice the value limit, when that is more).
MAX_BODY_BYTES = 16 * 1024
CLIENT_SPACE = "client"

Authorize = Callable[[Request], Awaitable[None]]
Handler = Callable[[Request], Awaitable[Any]]


def cache_routes(
    cache: Cache, authorize: Authorize, *, max_value_bytes: int = MAX_VALUE_BYTES, prefix: str = PREFIX
) -> list[Route]:
    """The cache API's routes; add them to the app's routes as they are (not under a Mount)."""
    cache = cache.space(CLIENT_SPACE)
    body_limit = max(MAX_BODY_BYTES, 2 * max_value_bytes)

    async def _body(request: Request) -> dict[str, Any]:
        return await _json_object(request, body_limit)

    def route(path: str, method: str, handler: Handler) -> Route:
        @functools.wraps(handler)
        async def endpoint(request: Request) -> JSONResponse:
            await authorize(request)
            return JSONResponse(await handler(request))

        return Route(prefix + path, endpoint, methods=[method])

    async def get(request: Request) -> Any:
        value = await cache.get(_key(_query_value(request, "key")))
        # The client's contract: objects and lists as stored, a bare primitive wrapped.
        return {"value": value} if isinstance(value, (str, int, float)) else value

    async def store(request: Request) -> None:
        body = await _body(request)
        key, value = _key(body.get("key")), body.get("value")
        if value is None:
            raise _invalid("value", "value is required")
        size = len(encode(key, value).encode())
        if size > max_value_bytes:
            raise FlowError(
                "cache_key_size_exceeded",
                f"The value of '{key}' takes {size} bytes; a cache value may take at most {max_value_bytes}",
                status=400,
                details={"size": size, "limit": max_value_bytes},
            )
        await cache.set(key, value, ttl=body.get("ttl") or None)  # the client leaves out a falsy ttl

    async def delete(request: Request) -> None:
        keys = (await _body(request)).get("keys")
        if isinstance(keys, str):
            keys = [keys]
        if not isinstance(keys, list) or not keys:
            raise _invalid("keys", "keys must be a non-empty list of cache keys")
        await cache.delete(*(_key(key, "keys") for key in keys))

    def counter(field: str, move: Callable[..., Awaitable[int]]) -> Handler:
        async def count(request: Request) -> dict[str, int]:
            body = await _body(request)
            key = _key(body.get("key"))
            return {"value": await move(key, body.get(field, 1), ttl=body.get("ttl") or None)}

        count.__name__ = field
        return count

    async def expire(request: Request) -> None:
        body = await _body(request)
        key = _key(body.get("key"))
        if body.get("ttl") is None:
            raise _invalid("ttl", "ttl is required")
        await cache.expire(key, body["ttl"])

    async def list_keys(request: Request) -> dict[str, Any]:
        body = await _body(request)
        pattern, cursor = body.get("pattern") or "*", body.get("next")
        if not isinstance(pattern, str):
            raise _invalid("pattern", "pattern must be a string")
        if cursor is not None and not isinstance(cursor, str):
            raise _invalid("next", "next must be a string or null")
        keys, cursor = await cache.keys(pattern, cursor, PAGE_SIZE)
        values = await cache.get_many(keys)
        # The Dart client reads each item as an object: keys with their values.
        return {"data": [{"key": k, "value": v} for k, v in zip(keys, values)], "next": cursor}

    async def stats(request: Request) -> dict[str, Any]:
        return await cache.stats()

    return [
        route("", "GET", get),
        route("", "POST", store),
        route("", "DELETE", delete),
        route("/increment", "POST", counter("increment", cache.increment)),
        route("/decrement", "POST", counter("decrement", cache.decrement)),
        route("/expire", "POST", expire),
        route("/list-keys", "POST", list_keys),
        route("/stats", "GET", stats),
    ]


def _query_value(request: Request, name: str) -> str | None:
    """A raw query value, percent-decoded only: the client does not encode keys, so a
    form decoder would turn a key's ``+`` into a space."""
    wanted = name.encode()
    for pair in request.scope["query_string"].split(b"&"):
        field, _, value = pair.partition(b"=")
        if field == wanted:
            return unquote_to_bytes(value).decode("utf-8", "replace")
    return None


async def _json_object(request: Request, limit: int) -> dict[str, Any]:
    try:
        body = json.loads(await read_body(request, limit))
    except ValueError:  # empty, not JSON, or not UTF-8
        body = None
    if not isinstance(body, dict):
        raise FlowError("invalid_body", "The request body must be a JSON object", status=400)
    return body


def _key(key: Any, field: str = "key") -> str:
    if key is None or key == "":
        raise _invalid(field, f"{field} is required")
    if not isinstance(key, str):
        raise _invalid(field, f"{field} must be a string")
    if len(key) > MAX_KEY_LENGTH:
        raise _invalid(field, f"{field} must be at most {MAX_KEY_LENGTH} characters, not {len(key)}")
    return key


def _invalid(field: str, message: str) -> ValidationFailed:
    item = {"origin": "client_error", "code": "validation_error", "message": message}
    return ValidationFailed([{**item, "details": {"field": field}}])
