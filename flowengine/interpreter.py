"""Runs a compiled flow: node after node from its start, until a node ends the run.

The loop is deliberately plain: evaluate the node's compiled params against the run's
names, await its ``run``, store the result under the node's id, follow the named output.
Everything costly (parsing, checking, resolving edges) happened at load time. A failing
node takes its ``error`` edge, else the flow's ``on_error`` node, else the run fails with
the error; an unexpected exception becomes a 500 whose id is in the log. Each run leaves a
trace (node, type, output, duration, error) in a bounded buffer on the flow.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from dataclasses import dataclass, replace
from typing import Any, Awaitable, Callable, Mapping

import anyio

from flowengine.context import RunContext, Services
from flowengine.errors import FlowError
from flowengine.expressions import ExpressionError
from flowengine.graph import Flow, Node
from flowengine.types import Scope

log = logging.getLogger("flowengine.interpreter")

DEFAULT_STEP_LIMIT = 1000
#: A run yields to the event loop every this many steps: nodes that never await (condition,
#: set) would otherwise let a loop hold the worker, deaf to its time limit and to other requests.
YIELD_EVERY = 64


#: A node's stand-in in a flow test: ``async (ctx, params) -> (output, value)``, like a type's ``run``.
Stub = Callable[[RunContext, Mapping[str, Any]], Awaitable[tuple[str | None, Any]]]


@dataclass(slots=True)
class Step:
    """One line of a run's trace."""

    node: str
    type: str
    output: str | None
    micros: int
    error: str | None = None


@dataclass(slots=True)
class Trace:
    flow: str
    started: float
    steps: list[Step]
    result: str = "running"


async def run_flow(
    flow: Flow,
    services: Services,
    scope: Scope,
    *,
    step_limit: int = DEFAULT_STEP_LIMIT,
    depth: int = 0,
    stubs: Mapping[str, Stub] | None = None,
) -> Any:
    """Run ``flow`` with the given names; returns the value its final node ended with.

    ``stubs`` (flow tests) maps node ids to stand-ins run instead of those nodes' types.
    """
    run_node = _run_node if stubs is None else _stubbed(stubs)
    ctx = RunContext(services, scope, flow.name, depth)
    trace = Trace(flow.name, time.time(), [])
    flow.traces.append(trace)
    node = flow.start
    steps = 0
    while node is not None:
        steps += 1
        if steps > step_limit:
            trace.result = "step limit"
            raise FlowError("step_limit_exceeded", f"The flow ran more than {step_limit} steps", status=500)
        ctx.node = node.id
        began = time.perf_counter()
        try:
            if steps % YIELD_EVERY == 0:
                await asyncio.sleep(0)
            if node.plain and run_node is _run_node:  # the common case, one coroutine less
                output, value = await node.type.run(ctx, _evaluate(node, scope))
            else:
                output, value = await run_node(node, ctx, scope)
        except FlowError as exc:
            node = _on_error(flow, node, scope, trace, exc, began)
            continue
        except ExpressionError as exc:
            node = _on_error(flow, node, scope, trace, _expression_failed(node, exc), began)
            continue
        except Exception as exc:
            node = _on_error(flow, node, scope, trace, _crashed(node, exc), began)
            continue
        except asyncio.CancelledError:  # the caller's time limit: the trace must not say "ok"
            trace.steps.append(Step(node.id, node.type.name, None, _micros(began), "cancelled"))
            trace.result = "cancelled"
            raise
        trace.steps.append(Step(node.id, node.type.name, output, _micros(began)))
        scope[node.id] = value
        if output is None:
            trace.result = "ok"
            return value
        node = node.edges[output]
    trace.result = "no response"
    raise FlowError("no_response", f"The flow '{flow.name}' ended without a response", status=500)


async def _run_node(node: Node, ctx: RunContext, scope: Scope) -> tuple[str | None, Any]:
    try:
        if node.blocking:  # e.g. ECOMPARE: bcrypt must not stall the event loop
            params = await anyio.to_thread.run_sync(_evaluate, node, scope)
        else:
            params = _evaluate(node, scope)
        if node.timeout is None and node.retry is None:
            return await node.type.run(ctx, params)
        return await _guarded(node, ctx, params)
    except FlowError:
        raise
    except ExpressionError as exc:
        raise _expression_failed(node, exc) from exc
    except Exception as exc:
        raise _crashed(node, exc) from exc


def _expression_failed(node: Node, exc: ExpressionError) -> FlowError:
    return FlowError("expression_error", str(exc), status=500, details={"node": node.id})


def _crashed(node: Node, exc: Exception) -> FlowError:
    """An unexpected exception: the log gets the traceback, the client only an error id."""
    error_id = secrets.token_hex(6)
    log.error("node '%s' (%s) failed; error id %s", node.id, node.type.name, error_id, exc_info=exc)
    return FlowError(
        "internal_error", f"An internal error occurred (error id {error_id})", status=500, details={"errorId": error_id}
    )


def _stubbed(stubs: Mapping[str, Stub]) -> Callable[[Node, RunContext, Scope], Awaitable[tuple[str | None, Any]]]:
    """``_run_node``, except that a stubbed node runs its stub in place of its type's ``run``.

    The stub gets the node's evaluated params and is guarded like the node (errors, retry,
    timeout), so a flow test sees exactly what the flow would do with that result.
    """

    async def run_node(node: Node, ctx: RunContext, scope: Scope) -> tuple[str | None, Any]:
        stub = stubs.get(node.id)
        if stub is not None:
            node = replace(node, type=replace(node.type, run=stub))
        return await _run_node(node, ctx, scope)

    return run_node


def _evaluate(node: Node, scope: Scope) -> dict[str, Any]:
    params = node.constants.copy()
    for name, value in node.dynamic:
        params[name] = value.evaluate(scope)
    return params


async def _guarded(node: Node, ctx: RunContext, params: dict[str, Any]) -> tuple[str | None, Any]:
    """Run a node under its timeout, retrying as its ``retry`` says."""
    attempts = node.retry.attempts if node.retry else 1
    delay = node.retry.backoff if node.retry else 0.0
    for attempt in range(1, attempts + 1):
        try:
            if node.timeout is None:
                return await node.type.run(ctx, params)
            async with asyncio.timeout(node.timeout):
                return await node.type.run(ctx, params)
        except TimeoutError:
            if node.timeout is None:  # the node's own TimeoutError: a crash like any other
                raise
            failure: FlowError = FlowError(
                "node_timeout", f"Node '{node.id}' took longer than {node.timeout:g}s", status=504
            )
        except FlowError as exc:
            failure = exc
        if attempt == attempts or not failure.retryable:
            raise failure
        await asyncio.sleep(delay)
        delay = min(delay * 2, node.retry.max_delay if node.retry else delay)
    raise AssertionError("unreachable")


def _on_error(flow: Flow, node: Node, scope: Scope, trace: Trace, exc: FlowError, began: float) -> Node:
    """Where a failure goes: the node's error edge, the flow's on_error, or out."""
    trace.steps.append(Step(node.id, node.type.name, "error", _micros(began), exc.code))
    handler = node.error or (flow.on_error if node is not flow.on_error else None)
    if handler is None:
        trace.result = f"error: {exc.code}"
        raise exc
    scope["error"] = {
        "code": exc.code,
        "message": exc.message,
        "status": exc.status,
        "node": node.id,
        "details": exc.details,
    }
    scope[node.id] = None
    return handler


def _micros(began: float) -> int:
    return int((time.perf_counter() - began) * 1_000_000)
