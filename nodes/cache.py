"""Cache nodes: keep short-lived values (codes, counters, lookups) between requests.

They reach the cache only through ``ctx.cache``, so the same flow runs on the in-process
cache in development and on Redis in production. Values are JSON; ``ttl`` is in seconds.
"""

from __future__ import annotations

from flowengine.registry import Param, node_type

_TTL = Param.literal({"type": "integer", "minimum": 1}, description="seconds until the key expires")
_KEY = Param.template(required=True, description="the cache key, e.g. 'phone-code:{{ params.query.phone }}'")


@node_type(
    "cache-set",
    description="Store a value in the cache; the node's result is the value.",
    params={"key": _KEY, "value": Param.expression(required=True), "ttl": _TTL},
)
async def cache_set(ctx, params):
    await ctx.cache.set(params["key"], params["value"], ttl=params.get("ttl"))
    return "next", params["value"]


@node_type(
    "cache-get",
    outputs=("found", "not_found"),
    description="Read a value from the cache; the node's result is the value.",
    params={"key": _KEY},
)
async def cache_get(ctx, params):
    value = await ctx.cache.get(params["key"])
    # A stored 0, "" or false is still found: only a missing key goes to not_found.
    return ("not_found", None) if value is None else ("found", value)


@node_type(
    "cache-delete",
    description="Remove a key from the cache; the node's result says whether it existed.",
    params={"key": _KEY},
)
async def cache_delete(ctx, params):
    return "next", await ctx.cache.delete(params["key"]) > 0


@node_type(
    "cache-increment",
    description="Add to a counter atomically (a missing key starts at 0 and gets the ttl); "
    "the node's result is the new count.",
    params={
        "key": _KEY,
        "amount": Param.expression(default=1, description="an integer; negative counts down"),
        "ttl": _TTL,
    },
)
async def cache_increment(ctx, params):
    return "next", await ctx.cache.increment(params["key"], params["amount"], ttl=params.get("ttl"))
