"""One error shape for every answer that is not a success.

Whatever goes wrong — a flow's ``return-error``, bad input, an unknown route, a wrong
method, an oversized body, a crash — the client gets JSON
``{"errors": [{"origin", "code", "message", "details"}]}``, which is what the Altogic client
reads (a non-JSON error body would leave its promise hanging). A crash is logged with an
error id and the client sees only that id, never a stack trace.
"""

from __future__ import annotations

import logging
import secrets

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from flowengine.errors import FlowError

log = logging.getLogger("flowengine.http")

_HTTP_CODES = {
    400: ("bad_request", "The request is malformed"),
    401: ("unauthorized", "Authentication is required"),
    403: ("forbidden", "This action is not allowed"),
    404: ("not_found", "No endpoint matches this path"),
    405: ("method_not_allowed", "This endpoint does not accept this method"),
    413: ("payload_too_large", "The request body is too large"),
    415: ("unsupported_media_type", "The request body must be JSON (Content-Type: application/json)"),
    429: ("too_many_requests", "Too many requests"),
}


def error_response(error: FlowError, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse(error.body(), status_code=error.status, headers=headers)


async def on_flow_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, FlowError)
    headers = {"Retry-After": str(exc.details["retryAfter"])} if exc.status == 429 and isinstance(exc.details, dict) and "retryAfter" in exc.details else None
    return error_response(exc, headers)


async def on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code, message = _HTTP_CODES.get(exc.status_code, ("http_error", exc.detail))
    if exc.status_code == 405:
        message = f"{request.method} is not allowed here; use {exc.headers.get('Allow', '?') if exc.headers else '?'}"
    return error_response(FlowError(code, message, status=exc.status_code), dict(exc.headers or {}))


async def on_crash(request: Request, exc: Exception) -> Response:
    error_id = secrets.token_hex(6)
    log.error("unhandled error %s on %s %s", error_id, request.method, request.url.path, exc_info=exc)
    error = FlowError(
        "internal_error",
        f"An internal error occurred (error id {error_id})",
        status=500,
        details={"errorId": error_id},
    )
    return error_response(error)


HANDLERS = {FlowError: on_flow_error, HTTPException: on_http_error, Exception: on_crash}
