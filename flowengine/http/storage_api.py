"""The Altogic storage API, and the files it serves.

``POST /_api/rest/v1/storage/bucket/upload-formdata?bucket=&fileName=&options=<json>`` takes
the multipart field ``file`` as the official client sends it (a Blob or File wrapped in
FormData). The body is parsed as it arrives, with python-multipart's streaming parser, and
the file's bytes flow straight into storage: the size limit stops an upload at the byte
that passes it, and no upload is ever held whole in memory. ``POST .../delete-file
{fileUrl}`` deletes by URL. Files are served at ``/_storage/<bucket>/<name>`` (the
``publicPath`` of the upload's answer) with ETag revalidation and single byte ranges.

Upload and delete need a session; a user deletes only what they uploaded unless the bucket
says ``delete: any``. A private file is served only to its uploader; in a private bucket a
request without a session gets its 401 before any name is looked up.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from email.utils import formatdate
from typing import Any, AsyncIterator

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from flowengine.context import Services
from flowengine.errors import FlowError, ValidationFailed
from flowengine.http.errors import error_response
from flowengine.http.requests import parse_query, read_json
from flowengine.storage.backend import FileRecord, not_found
from flowengine.storage.service import FILES_PATH, Storage

PREFIX = "/_api/rest/v1/storage"
#: Bytes of a multipart body outside the file part (other fields) before it is refused.
MAX_OTHER_BYTES = 64 * 1024
_RANGE = re.compile(r"^bytes=([0-9]{0,18})-([0-9]{0,18})$")
_FILE_HEADERS = {"X-Content-Type-Options": "nosniff", "Content-Security-Policy": "default-src 'none'; sandbox"}


def storage_routes(storage: Storage, services: Services) -> list[Route]:
    """The storage API's routes and the file route, with their full paths."""

    async def user_id(request: Request, required: bool) -> str | None:
        found = await services.auth.authenticate(request, required=required) if services.auth else None
        if found is None:
            if required:
                raise FlowError(
                    "missing_session_token", "A session token is required", status=401, origin="session_token_error"
                )
            return None
        return str(found[1]["_id"])

    async def upload(request: Request) -> Response:
        owner = await user_id(request, required=True)
        query = parse_query(request.scope["query_string"])
        options = _options(query.get("options"))
        part = await read_file_part(request)
        record = await storage.put(
            _text(query, "bucket"),
            query.get("fileName") or part.filename or "",
            part.chunks,
            content_type=part.content_type,
            owner=owner,
            private=options.get("isPublic") is False,
            create_bucket=options.get("createBucket") is True,
        )
        return JSONResponse(storage.record_json(record, str(request.base_url)))

    async def delete_file(request: Request) -> Response:
        who = await user_id(request, required=True)
        body = await read_json(request, MAX_OTHER_BYTES)
        bucket, name = storage.locate(_text(body if isinstance(body, dict) else {}, "fileUrl"))
        policy = storage.bucket(bucket)
        record = await storage.stat(bucket, name)
        if record is None or not policy.may_read(record, who):
            raise not_found(bucket, name)
        if not policy.may_delete(record, who):
            raise FlowError(
                "file_not_owned",
                f"Only the user who uploaded '{name}' may delete it",
                status=403,
                details={"bucket": bucket, "fileName": name},
            )
        await storage.delete(bucket, name)
        return JSONResponse(None)

    async def serve(request: Request) -> Response:
        bucket, name = request.path_params["bucket"], request.path_params["name"]
        policy = storage.bucket(bucket)
        # A private bucket asks who is there before looking: its file names do not leak.
        who = None if policy.public else await user_id(request, required=True)
        record = await storage.stat(bucket, name)
        if record is None:
            raise not_found(bucket, name)
        shared = policy.may_read(record, None)
        if not shared and not policy.may_read(record, who or await user_id(request, required=True)):
            raise not_found(bucket, name)  # someone else's private file
        return await _file_response(request, storage, record, shared)

    return [
        Route(PREFIX + "/bucket/upload-formdata", upload, methods=["POST"]),
        Route(PREFIX + "/delete-file", delete_file, methods=["POST"]),
        Route(FILES_PATH + "/{bucket}/{name}", serve, methods=["GET", "HEAD"]),
    ]


# --- serving --------------------------------------------------------------------------------


async def _file_response(request: Request, storage: Storage, record: FileRecord, shared: bool) -> Response:
    headers = {
        "ETag": f'"{record.etag}"',
        "Cache-Control": ("public" if shared else "private") + ", no-cache",
        "Last-Modified": formatdate(record.uploaded_at, usegmt=True),
        "Accept-Ranges": "bytes",
        **_FILE_HEADERS,
    }
    if _fresh(request.headers.get("if-none-match"), record.etag):
        return Response(status_code=304, headers=headers)
    if_range = request.headers.get("if-range")
    try:
        span = _span(request.headers.get("range"), record.size) if if_range in (None, headers["ETag"]) else None
    except FlowError as refused:
        return error_response(refused, {**headers, "Content-Range": f"bytes */{record.size}"})
    start, end = span or (0, record.size - 1)
    headers.update({"Content-Type": record.content_type, "Content-Length": str(end - start + 1)})
    if span:
        headers["Content-Range"] = f"bytes {start}-{end}/{record.size}"
    status = 206 if span else 200
    if request.method == "HEAD":
        return Response(status_code=status, headers=headers)
    chunks = await storage.stream(record, start, end if span else None)
    return StreamingResponse(chunks, status_code=status, headers=headers)


def _fresh(if_none_match: str | None, etag: str) -> bool:
    """Whether the client's copy is current (weak comparison, as If-None-Match wants)."""
    tags = {tag.strip().removeprefix("W/") for tag in (if_none_match or "").split(",")}
    return "*" in tags or f'"{etag}"' in tags


def _span(header: str | None, size: int) -> tuple[int, int] | None:
    """The one byte range asked for (inclusive), or None for the whole file.

    A missing or malformed Range, another unit, or several ranges get the whole file, as
    RFC 9110 allows; a range that starts past the end is refused with 416.
    """
    match = _RANGE.match((header or "").strip())
    if match is None or match.groups() == ("", ""):
        return None
    first, last = match.groups()
    if first:
        start, end = int(first), min(int(last), size - 1) if last else size - 1
        if last and int(last) < start:
            return None
    else:
        start, end = max(size - int(last), 0), size - 1
    if start >= size or end < start:
        raise FlowError(
            "range_not_satisfiable",
            f"The requested range is outside the file's {size} bytes",
            status=416,
            details={"size": size},
        )
    return start, end


# --- reading uploads ------------------------------------------------------------------------


@dataclass
class FilePart:
    """The file field of a multipart body: its headers, and its bytes as they arrive."""

    filename: str | None
    content_type: str | None
    chunks: AsyncIterator[bytes]


async def read_file_part(request: Request, field: str = "file") -> FilePart:
    """Read the body up to the start of ``field``'s bytes; the rest is read as ``chunks`` is."""
    media, options = parse_options_header(request.headers.get("content-type"))
    if media != b"multipart/form-data" or not options.get(b"boundary"):
        raise FlowError(
            "unsupported_media_type", "The upload must be multipart/form-data with a 'file' field", status=415
        )
    events = _events(request, options[b"boundary"])
    headers: dict[bytes, bytes] = {}
    name = value = b""
    other = 0
    async for kind, data in events:
        if kind == "field":
            name += data
        elif kind == "value":
            value += data
        elif kind == "header":
            headers[name.strip().lower()], name, value = value.strip(), b"", b""
        elif kind == "headers":
            _, disposition = parse_options_header(headers.get(b"content-disposition"))
            if disposition.get(b"name") == field.encode():
                filename = disposition.get(b"filename")
                return FilePart(
                    filename.decode("utf-8", "replace") if filename else None,
                    headers.get(b"content-type", b"").decode("latin-1") or None,
                    _part_bytes(events),
                )
            headers = {}
        elif kind == "data":
            other += len(data)
            if other > MAX_OTHER_BYTES:
                raise FlowError("payload_too_large", "Too many bytes outside the 'file' field", status=413)
    raise _missing(field, f"The multipart field '{field}' is required")


async def _part_bytes(events: AsyncIterator[tuple[str, bytes]]) -> AsyncIterator[bytes]:
    async for kind, data in events:
        if kind == "end":
            return
        if kind == "data" and data:
            yield data
    raise _bad_multipart("the body ended inside the file")


async def _events(request: Request, boundary: bytes) -> AsyncIterator[tuple[str, bytes]]:
    """The parser's callbacks as ``(kind, bytes)`` events, one request chunk at a time."""
    found: list[tuple[str, bytes]] = []

    def mark(kind: str) -> Any:
        return lambda: found.append((kind, b""))

    def piece(kind: str) -> Any:
        return lambda data, start, end: found.append((kind, data[start:end]))

    parser = MultipartParser(
        boundary,
        {
            "on_header_field": piece("field"),
            "on_header_value": piece("value"),
            "on_header_end": mark("header"),
            "on_headers_finished": mark("headers"),
            "on_part_data": piece("data"),
            "on_part_end": mark("end"),
        },
    )
    try:
        async for chunk in request.stream():
            parser.write(chunk)
            for event in found:  # the parser waits while these are taken
                yield event
            found.clear()
        parser.finalize()
    except MultipartParseError as exc:
        raise _bad_multipart(str(exc)) from None
    except ClientDisconnect:
        raise FlowError("upload_interrupted", "The client went away during the upload", status=400) from None
    for event in found:
        yield event


def _bad_multipart(reason: str) -> FlowError:
    return FlowError("invalid_multipart", f"The multipart body is malformed: {reason}", status=400)


# --- small readers --------------------------------------------------------------------------


def _options(raw: Any) -> dict[str, Any]:
    """The client's ``options`` query value: a JSON object (its contentType is the client's
    default, not the file's, so only ``createBucket`` and ``isPublic`` are read)."""
    if raw in (None, ""):
        return {}
    try:
        options = json.loads(raw) if isinstance(raw, str) else None
    except ValueError:
        options = None
    if not isinstance(options, dict):
        raise FlowError("invalid_options", "options must be a JSON object", status=400, details={"field": "options"})
    return options


def _text(values: dict[str, Any], field: str) -> str:
    value = values.get(field)
    if not isinstance(value, str) or not value:
        raise _missing(field, f"{field} is required")
    return value


def _missing(field: str, message: str) -> ValidationFailed:
    item = {"origin": "client_error", "code": "validation_error", "message": message, "details": {"field": field}}
    return ValidationFailed([item])
