"""Running other flows: once (``call``) or once per item of a list (``for-each``)."""

from __future__ import annotations

import asyncio

from flowengine.errors import FlowError
from flowengine.registry import Param, node_type


@node_type(
    "call",
    params={
        "flow": Param.reference("service", description="the service to run"),
        "inputs": Param.expression(default={}, description="name -> expression; the service's params.body"),
    },
    description="Run another service with explicit inputs and continue with its answer.",
)
async def call(ctx, params):
    return "next", await ctx.call(params["flow"], params["inputs"])


@node_type(
    "for-each",
    params={
        "items": Param.expression(required=True, description="the list to go through"),
        "flow": Param.reference("service", description="run once per item with inputs {item, index}"),
        "concurrency": Param.literal({"type": "integer", "minimum": 1, "maximum": 100}, default=1),
    },
    description="Run a service for every item of a list; the result is the list of its answers, in order.",
)
async def for_each(ctx, params):
    items = params["items"]
    if not isinstance(items, list):
        raise FlowError("not_a_list", f"for-each needs a list, got {type(items).__name__}", status=500)
    limit = asyncio.Semaphore(params["concurrency"])

    async def one(index, item):
        async with limit:
            return await ctx.call(params["flow"], {"item": item, "index": index})

    return "next", list(await asyncio.gather(*(one(i, item) for i, item in enumerate(items))))
