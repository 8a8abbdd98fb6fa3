"""Dev-mode routes for looking inside a running app: its flows, their graphs, recent traces.

``GET /_dev/flows`` lists the services; ``GET /_dev/flows/{name}/traces`` shows the last runs
of one, newest first, node by node (which output each node took, how long it ran, what
failed); ``GET /_dev/flows/{name}/graph`` draws it (Mermaid, or ``?format=dot``). A builder
reads why a request answered what it did without adding a single log line. The app mounts
these routes only in dev mode: traces carry no request data, but they show how flows run.
"""

from __future__ import annotations

import difflib
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from flowengine.context import Services
from flowengine.drawing import dot, mermaid
from flowengine.errors import FlowError
from flowengine.graph import Flow
from flowengine.interpreter import Trace
from flowengine.spec.app import App

DRAWINGS = {"mermaid": mermaid, "dot": dot}


def dev_routes(app: App, services: Services) -> list[Route]:
    """The ``/_dev/flows`` routes for ``app`` (``services`` is the dev tools' common signature)."""

    def flow_of(request: Request) -> Flow:
        name = request.path_params["name"]
        if name not in app.flows:
            close = difflib.get_close_matches(name, list(app.flows), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise FlowError("flow_not_found", f"No flow named '{name}'{hint}", status=404)
        return app.flows[name]

    async def flows(request: Request) -> Response:
        return JSONResponse([_summary(flow) for flow in app.flows.values()])

    async def traces(request: Request) -> Response:
        flow = flow_of(request)
        return JSONResponse([_trace(trace) for trace in reversed(list(flow.traces))])

    async def graph(request: Request) -> Response:
        flow = flow_of(request)
        form = request.query_params.get("format", "mermaid")
        if form not in DRAWINGS:
            raise FlowError("bad_format", f"format must be one of {', '.join(DRAWINGS)}, got '{form}'", status=400)
        return PlainTextResponse(DRAWINGS[form](flow))

    return [
        Route("/_dev/flows", flows, methods=["GET"]),
        Route("/_dev/flows/{name}/traces", traces, methods=["GET"]),
        Route("/_dev/flows/{name}/graph", graph, methods=["GET"]),
    ]


def _summary(flow: Flow) -> dict[str, Any]:
    return {
        "service": flow.name,
        "description": flow.description,
        "file": flow.file,
        "endpoints": [
            {"method": endpoint.method, "path": endpoint.path, "session": endpoint.session}
            for endpoint in flow.endpoints
        ],
        "nodes": len(flow.nodes),
        "traces": len(flow.traces),
    }


def _trace(trace: Trace) -> dict[str, Any]:
    return {
        "started": datetime.fromtimestamp(trace.started, UTC).isoformat(timespec="milliseconds"),
        "result": trace.result,
        "micros": sum(step.micros for step in trace.steps),
        "steps": [
            {"node": step.node, "type": step.type, "output": step.output, "micros": step.micros, "error": step.error}
            for step in trace.steps
        ],
    }
