"""``rate-limit``: count events per key in a time window, shared by every server process."""

from __future__ import annotations

import math

from flowengine.errors import FlowError
from flowengine.graph import seconds
from flowengine.registry import Param, node_type

_DURATION = {"oneOf": [{"type": "number", "exclusiveMinimum": 0},
                       {"type": "string", "pattern": "^[0-9]+(\\.[0-9]+)?(ms|s|m|h)$"}]}  # fmt: skip


@node_type(
    "rate-limit",
    params={
        "key": Param.template(required=True, description="what is counted, e.g. 'sign-in:{{ params.body.email }}'"),
        "limit": Param.literal({"type": "integer", "minimum": 1}, required=True, description="events allowed per window"),
        "window": Param.literal(_DURATION, required=True, description="the window, e.g. 60, '10m', '1h'"),
        "message": Param.template(default="Too many requests; try again later"),
    },
    description="Allow at most 'limit' events per key per window; beyond it the request fails with 429 and Retry-After.",
)
async def rate_limit(ctx, params):
    window = _window(params["window"])
    key = f"rate:{params['key']}"
    count = await ctx.cache.increment(key, ttl=window)
    if count > params["limit"]:
        retry = max(1, math.ceil(await ctx.cache.ttl(key) or window))
        raise FlowError("too_many_requests", params["message"], status=429, details={"retryAfter": retry})
    return "next", {"count": count, "remaining": params["limit"] - count}


def _window(value):
    if isinstance(value, str) and value.endswith("h"):
        return float(value[:-1]) * 3600
    return seconds(value)
