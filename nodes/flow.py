"""Control flow: branch, choose, compute, log."""

from __future__ import annotations

import logging

from flowengine.registry import Param, node_type

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


@node_type(
    "condition",
    outputs=("then", "else"),
    params={"if": Param.expression(required=True, description="true takes 'then', false takes 'else'")},
    description="Branch on a condition.",
)
async def condition(ctx, params):
    return ("then" if params["if"] else "else"), bool(params["if"])


@node_type(
    "switch",
    outputs=("default",),
    dynamic_outputs="cases",
    params={
        "cases": Param(
            "expression",
            {"type": "object", "minProperties": 1},
            required=True,
            description="output name -> condition; the first true one is taken, else 'default'",
        )
    },
    description="Choose among several outputs: each key of 'cases' is an output wired like 'next'.",
)
async def switch(ctx, params):
    for output, matched in params["cases"].items():
        if matched:
            return output, output
    return "default", "default"


@node_type(
    "set",
    params={"values": Param.expression(required=True, description="name -> expression")},
    description="Compute named values; later nodes read them as <node id>.<name>.",
)
async def set_values(ctx, params):
    return "next", params["values"]


@node_type(
    "log",
    params={
        "message": Param.template(required=True),
        "level": Param.literal({"enum": list(LEVELS)}, default="info"),
    },
    description="Write a line to the server log.",
)
async def log_message(ctx, params):
    ctx.log(params["message"], LEVELS[params["level"]])
    return "next", params["message"]
