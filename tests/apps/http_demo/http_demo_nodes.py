"""Test-only node types: the misbehaviour the interpreter and the HTTP layer must contain.

Registered through ``node_modules`` in the test apps' ``app.yaml``, exactly as an app's
own node module is. ``ATTEMPTS`` counts ``flaky`` calls per key so a test can reset and
read it.
"""

from __future__ import annotations

import asyncio
from collections import Counter

from flowengine.errors import FlowError
from flowengine.registry import Param, node_type

#: key -> how many times a ``flaky`` node with that key has been called.
ATTEMPTS: Counter[str] = Counter()

#: Text that must never reach a client: a crash carries it in its exception message.
SECRET = "s3cret-internal-detail"


@node_type(
    "sleep",
    params={"seconds": Param.expression(required=True), "value": Param.expression()},
    description="Wait, then pass 'value' on (stands in for a slow service).",
)
async def sleep(ctx, params):
    await asyncio.sleep(params["seconds"])
    return "next", params.get("value")


CRASHES = {"RuntimeError": RuntimeError, "TimeoutError": TimeoutError}


@node_type(
    "boom",
    params={"raises": Param.literal({"enum": list(CRASHES)}, default="RuntimeError")},
    description="Raise an unexpected exception (a bug in a node, or a library's own timeout).",
)
async def boom(ctx, params):
    raise CRASHES[params["raises"]](f"kaboom: {SECRET}")


@node_type(
    "fail",
    params={
        "code": Param.literal({"type": "string"}, default="failed"),
        "status": Param.literal({"type": "integer"}, default=400),
        "message": Param.template(default="it failed"),
    },
    description="Raise a FlowError, as a node reporting an expected failure does.",
)
async def fail(ctx, params):
    raise FlowError(params["code"], params["message"], status=params["status"])


@node_type(
    "flaky",
    params={
        "key": Param.template(required=True),
        "failures": Param.literal({"type": "integer", "minimum": 0}, required=True),
        "status": Param.literal({"type": "integer"}, default=503),
    },
    description="Fail with 'status' on the first 'failures' calls per key, then succeed.",
)
async def flaky(ctx, params):
    ATTEMPTS[params["key"]] += 1
    attempt = ATTEMPTS[params["key"]]
    if attempt <= params["failures"]:
        raise FlowError("unavailable", f"attempt {attempt} failed", status=params["status"])
    return "next", attempt
