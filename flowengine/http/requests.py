"""Reading what a client sent: query strings as the Altogic client writes them, bounded bodies."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote

from starlette.requests import Request

from flowengine.errors import FlowError

DEFAULT_BODY_LIMIT = 1024 * 1024


def parse_query(raw: bytes) -> dict[str, Any]:
    """Decode a query string without turning '+' into a space.

    The Altogic client leaves ``email``, ``key`` and ``code`` unencoded, so
    ``?email=x+y@z.com`` means the address with a plus. A key given twice becomes a list.
    """
    values: dict[str, Any] = {}
    if not raw:
        return values
    for pair in raw.decode("latin-1").split("&"):
        if not pair:
            continue
        key, _, value = pair.partition("=")
        key, value = _decode(key), _decode(value)
        if key in values:
            existing = values[key]
            values[key] = [*existing, value] if isinstance(existing, list) else [existing, value]
        else:
            values[key] = value
    return values


def _decode(text: str) -> str:
    return unquote(text, encoding="utf-8", errors="replace")


async def read_body(request: Request, limit: int = DEFAULT_BODY_LIMIT) -> bytes:
    """The request body, refusing it with 413 as soon as it passes ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared == "0" or (declared is None and "transfer-encoding" not in request.headers):
        return b""  # HTTP/1.1: an empty body, or none announced, is nothing to wait for
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(limit: int) -> FlowError:
    return FlowError(
        "payload_too_large",
        f"The request body is larger than {limit} bytes",
        status=413,
        details={"limit": limit},
    )


async def read_json(request: Request, limit: int = DEFAULT_BODY_LIMIT) -> Any:
    """The JSON body, or None when there is none (the client sends no body on many POSTs)."""
    body = await read_body(request, limit)
    if not body.strip():
        return None
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/json" and not media.endswith("+json"):
        raise FlowError(
            "unsupported_media_type",
            "The request body must be JSON (Content-Type: application/json)",
            status=415,
        )
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise FlowError("invalid_json", f"The request body is not valid JSON: {exc}", status=400) from None
