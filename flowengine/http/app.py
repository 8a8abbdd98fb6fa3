"""The Starlette app built from a loaded ``App``: one route per endpoint, one error shape.

Routes are built once at start-up. A request's path is matched by Starlette; its handler
reads and validates the declared inputs, resolves the session when the endpoint wants
one, runs the flow under the endpoint's time limit and answers with the ``Reply`` the flow
ended with. Nothing per request re-reads or re-checks the app.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.datastructures import Headers, MutableHeaders
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from flowengine.context import Services
from flowengine.errors import FlowError
from flowengine.graph import Endpoint, Flow, seconds
from flowengine.http import errors
from flowengine.http.inputs import Inputs
from flowengine.http.responses import FlowJSON
from flowengine.http.requests import DEFAULT_BODY_LIMIT, parse_query, read_json
from flowengine.interpreter import DEFAULT_STEP_LIMIT, run_flow
from flowengine.spec.app import App
from flowengine.types import Reply

log = logging.getLogger("flowengine.http")

DEFAULT_TIMEOUT = 30.0
#: Paths a browser opens by itself (email links, files, dev tools): no client key is asked for.
KEYLESS_PATHS = ("/_auth/", "/_storage/", "/_dev/", "/openapi.json")
ALWAYS_ALLOWED_HEADERS = ["Content-Type", "X-Client", "X-Client-Key", "Session", "Authorization"]
#: The Altogic client sends DELETE bodies (``cache.delete``, ``endpoint.delete``); GET ones are ignored.
_NO_BODY = {"GET"}


def build_app(
    app: App,
    services: Services,
    *,
    dev: bool = False,
    extra_routes: list[BaseRoute] | None = None,
) -> Starlette:
    """Serve ``app``'s endpoints with ``services``."""
    limits = app.settings.get("limits", {})
    runner = _Runner(app, services, limits)
    # The app's own routes first: they are what most requests are for, and the built-in
    # APIs live under /_ paths that flows may not use, so the order changes no match.
    routes: list[BaseRoute] = []
    for flow in app.flows.values():
        inputs = Inputs(flow.input_models)
        for endpoint in flow.endpoints:
            routes.append(Route(endpoint.path, runner.handler(flow, endpoint, inputs), methods=[endpoint.method]))
    routes.extend(extra_routes or [])
    routes.append(Route("/openapi.json", _openapi(app), methods=["GET"]))
    if dev:
        from flowengine.http.dev import dev_routes

        routes.extend(dev_routes(app, services))
    starlette = Starlette(
        routes=routes,
        middleware=_middleware(app.settings),
        exception_handlers=errors.HANDLERS,  # type: ignore[arg-type]
    )
    starlette.state.app = app
    starlette.state.services = services
    return starlette


class _Runner:
    """Turns a flow and one of its endpoints into a request handler."""

    def __init__(self, app: App, services: Services, limits: dict[str, Any]) -> None:
        self.services = services
        self.env = app.settings.get("env", {})
        self.body_limit = limits.get("body_bytes", DEFAULT_BODY_LIMIT)
        self.step_limit = limits.get("steps", DEFAULT_STEP_LIMIT)
        self.timeout = seconds(limits.get("timeout")) or DEFAULT_TIMEOUT

    def handler(self, flow: Flow, endpoint: Endpoint, inputs: Inputs) -> Callable[[Request], Awaitable[Response]]:
        timeout = flow.timeout or self.timeout
        reads_body = endpoint.method not in _NO_BODY

        async def handle(request: Request) -> Response:
            # Who is asking comes before what they sent: an expired session must get the 401
            # that makes the client drop it, even when the input is also wrong.
            session, user = await self.session(request, endpoint.session)
            asgi = request.scope
            client = asgi.get("client")
            params = {
                "query": parse_query(asgi["query_string"]),
                "path": dict(request.path_params),
                # ASGI header names are already lower-case bytes; the first of repeated ones wins
                "headers": {k.decode("latin-1"): v.decode("latin-1") for k, v in reversed(asgi["headers"])},
                "client": {"ip": client[0] if client else None},
                "body": await read_json(request, self.body_limit) if reads_body else None,
            }
            inputs.validate(params)
            scope = {"params": params, "session": session, "user": user, "env": self.env}
            try:
                async with asyncio.timeout(timeout):
                    result = await run_flow(flow, self.services, scope, step_limit=self.step_limit)
            except TimeoutError:
                raise FlowError("timeout", f"The endpoint did not answer within {timeout:g}s", status=504) from None
            return _respond(result)

        handle.__name__ = flow.name
        return handle

    async def session(self, request: Request, mode: str) -> tuple[Any, Any]:
        if mode == "none":
            return None, None
        auth = self.services.auth
        if auth is not None:
            if mode == "fresh":  # signed in within auth.session.fresh, else 401 reauth_required
                found = await auth.authenticate(request, required=True, fresh=True)
            else:
                found = await auth.authenticate(request, required=mode == "required")
            return found if found is not None else (None, None)
        if mode != "optional":
            raise FlowError(
                "missing_session_token", "A session token is required", status=401, origin="session_token_error"
            )
        return None, None


def _respond(result: Any) -> Response:
    if isinstance(result, Reply):
        return FlowJSON(result.body, status_code=result.status, headers=dict(result.headers) or None)
    return FlowJSON(result)


def _middleware(settings: dict[str, Any]) -> list[Middleware]:
    """CORS outermost (so even a refused client key is readable by the browser), then client keys."""
    keys = frozenset(settings.get("client_keys") or ())
    checks = [Middleware(_ClientKeys, keys=keys)] if keys else []  # type: ignore[arg-type]
    cors = settings.get("cors")
    if not cors or not cors.get("origins"):
        return checks
    headers = list(dict.fromkeys([*ALWAYS_ALLOWED_HEADERS, *cors.get("headers", [])]))
    return [
        Middleware(
            _CORS,  # type: ignore[arg-type]
            allow_origins=cors["origins"],
            allow_credentials=cors.get("credentials", True),
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
            allow_headers=headers,
            max_age=cors.get("max_age", 600),
        ),
        *checks,
    ]


class _ClientKeys:
    """The one place client keys are checked: when the app lists some, every API request
    (flow endpoints, ``/_api/...``) without one gets 401 ``invalid_client_key``.

    Exempt are the paths a browser opens by itself, which cannot carry the header: the
    links in auth emails, files in ``<img>`` tags, and the dev tools.
    """

    def __init__(self, app: ASGIApp, keys: frozenset[str]) -> None:
        self.app = app
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope["path"].startswith(KEYLESS_PATHS):
            if Headers(scope=scope).get("x-client-key") not in self.keys:
                refused = FlowError("invalid_client_key", "Missing or invalid client key (X-Client-Key)", status=401)
                await errors.error_response(refused)(scope, receive, send)
                return
        await self.app(scope, receive, send)


class _CORS(CORSMiddleware):
    """Starlette's CORS, except that a refused preflight is answered in the JSON error shape,
    and that a request without ``Origin`` (no browser asking across origins) only gets the
    ``Vary: Origin`` every answer needs, without Starlette's per-response header rewriting."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or any(name == b"origin" for name, _ in scope["headers"]):
            await super().__call__(scope, receive, send)
            return

        async def vary_origin(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = message.setdefault("headers", [])
                if any(name.lower() == b"vary" for name, _ in headers):
                    MutableHeaders(scope=message).add_vary_header("Origin")  # rare: join the existing one
                else:
                    headers.append((b"vary", b"Origin"))
            await send(message)

        await self.app(scope, receive, vary_origin)

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code < 400:
            return response
        headers = {k: v for k, v in response.headers.items() if k not in ("content-length", "content-type")}
        refused = FlowError("cors_refused", bytes(response.body).decode(), status=response.status_code)
        return errors.error_response(refused, headers)


def _openapi(app: App) -> Callable[[Request], Awaitable[Response]]:
    document: dict[str, Any] = {}

    async def openapi(request: Request) -> Response:
        if not document:
            from flowengine.http.openapi import describe

            document.update(describe(app))
        return JSONResponse(document)

    return openapi
