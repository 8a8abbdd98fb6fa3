"""Test-only node types for the flow-language tests: slow, failing, flaky, observed nodes.

Module state lets a test read what happened: ``CALLS`` keeps the time of every ``flaky``
attempt per key, ``GAUGE`` the number of ``track`` nodes running now and at most.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict

from flowengine.errors import FlowError
from flowengine.registry import Param, node_type

#: key -> monotonic time of each ``flaky`` attempt.
CALLS: defaultdict[str, list[float]] = defaultdict(list)
#: ``track`` nodes running right now, and the most seen at once.
GAUGE = {"now": 0, "peak": 0}
#: Text a crash carries that must never reach a client.
SECRET = "s3cret-internal-detail"


@node_type("sleep", params={"seconds": Param.expression(required=True), "value": Param.expression()})
async def sleep(ctx, params):
    """Wait, then pass 'value' on (a slow service)."""
    await asyncio.sleep(params["seconds"])
    return "next", params.get("value")


@node_type(
    "fail",
    params={
        "code": Param.literal({"type": "string"}, default="failed"),
        "status": Param.literal({"type": "integer"}, default=400),
        "message": Param.template(default="it failed"),
    },
)
async def fail(ctx, params):
    """Raise a FlowError, as a node reporting an expected failure does."""
    raise FlowError(params["code"], params["message"], status=params["status"])


@node_type("boom")
async def boom(ctx, params):
    """Raise an unexpected exception (a bug in a node)."""
    raise RuntimeError(f"kaboom: {SECRET}")


@node_type(
    "flaky",
    params={
        "key": Param.template(required=True),
        "failures": Param.literal({"type": "integer", "minimum": 0}, required=True),
        "status": Param.literal({"type": "integer"}, default=503),
    },
)
async def flaky(ctx, params):
    """Fail with 'status' on the first 'failures' attempts per key, then succeed with the attempt number."""
    attempts = CALLS[params["key"]]
    attempts.append(time.monotonic())
    if len(attempts) <= params["failures"]:
        raise FlowError("unavailable", f"attempt {len(attempts)} failed", status=params["status"])
    return "next", len(attempts)


@node_type("track", params={"seconds": Param.expression(required=True), "value": Param.expression()})
async def track(ctx, params):
    """Count itself as running while it waits 'seconds', then pass 'value' on."""
    GAUGE["now"] += 1
    GAUGE["peak"] = max(GAUGE["peak"], GAUGE["now"])
    try:
        await asyncio.sleep(params["seconds"])
    finally:
        GAUGE["now"] -= 1
    return "next", params.get("value")


@node_type("scope-names")
async def scope_names(ctx, params):
    """The names this run can see (what a sub-flow would leak)."""
    return "next", sorted(ctx.scope)
