"""Read the outbox over HTTP in development: ``GET /_dev/outbox`` and the latest message.

Front-end developers and end-to-end tests fetch the code or link a flow just texted or
mailed, e.g. ``GET /_dev/outbox/sms/latest?to=+15551234567``. The app mounts these routes only
in dev mode. The only Starlette-aware module of ``messaging``, kept apart so the providers
stay free of HTTP.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from flowengine.errors import FlowError
from flowengine.messaging.outbox import latest, messages, message_text


def outbox_routes(cache: Any) -> list[Route]:
    """The dev-only routes reading the outbox kept in ``cache``."""

    async def listing(request: Request) -> Response:
        return JSONResponse(await messages(cache))

    def newest(channel: str):
        async def endpoint(request: Request) -> Response:
            to = raw_query_param(request, "to")
            record = await latest(cache, channel, to)
            if record is None:
                return _not_found(channel, to)
            return PlainTextResponse(message_text(record))

        return endpoint

    return [
        Route("/_dev/outbox", listing, methods=["GET"]),
        Route("/_dev/outbox/sms/latest", newest("sms"), methods=["GET"]),
        Route("/_dev/outbox/email/latest", newest("email"), methods=["GET"]),
    ]


def raw_query_param(request: Request, name: str) -> str | None:
    """A query parameter decoded without turning '+' into a space.

    Clients paste ``?to=+15551234567`` unencoded; form decoding would read " 15551234567".
    """
    for pair in request.scope["query_string"].decode("latin-1").split("&"):
        key, _, value = pair.partition("=")
        if unquote(key) == name:
            return unquote(value)
    return None


def _not_found(channel: str, to: str | None) -> Response:
    recipient = f" to {to}" if to else ""
    error = FlowError("outbox_empty", f"No {channel} message{recipient} in the outbox", status=404)
    return JSONResponse(error.body(), status_code=error.status)
