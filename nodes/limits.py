"""``rate-limit``: count events per key in a time window, shared by every server process."""

from __future__ import annotations

from flowengine import limits
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
    count = await limits.hit(ctx.cache, f"rate:{params['key']}", params["limit"], _window(params["window"]),
                             params["message"])  # fmt: skip
    return "next", {"count": count, "remaining": params["limit"] - count}


def _window(value):
    if isinstance(value, str) and value.endswith("h"):
        return float(value[:-1]) * 3600
    return seconds(value)
