"""File nodes: store files in the app's buckets, read them, delete them, link to them.

They reach storage only through ``ctx.storage``, so a flow runs the same on local disk and
on S3. A file is named either by its URL (the ``publicPath`` an upload answered, as the
tutorial keeps in ``users.profilePicture``) or by its file record. ``store-file`` passes
the same checks as an upload over HTTP (name, type against the bytes, bucket size limit)
and records the signed-in user, if any, as the file's owner. Flows act for the app: these
nodes do not apply the owner rules the HTTP API enforces for clients.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, Mapping

from flowengine.errors import FlowError
from flowengine.registry import Param, node_type

_FILE = Param.expression(required=True, description="the file: its URL (publicPath) or its file record")
_ENCODINGS = {"type": "string", "enum": ["text", "base64"]}


@node_type(
    "store-file",
    description="Store a file in a bucket; the node's result is its file record (with publicPath). "
    "A taken name gets a random suffix.",
    params={
        "bucket": Param.template(required=True, description="a bucket declared in app.yaml"),
        "name": Param.template(required=True, description="the file name, e.g. 'photo{{ user._id }}.png'"),
        "content": Param.expression(
            required=True, description="text, bytes, or a file record holding 'content' (and 'mimeType')"
        ),
        "content_type": Param.template(description="the content type (default: from the bytes, else the name)"),
        "encoding": Param.literal(
            _ENCODINGS, default="text", description="text content as 'text' (stored as UTF-8) or 'base64' (decoded)"
        ),
    },
)
async def store_file(ctx, params):
    data, declared = _content(params["content"], params["encoding"])
    user = ctx.scope.get("user") or {}
    record = await ctx.storage.put(
        params["bucket"],
        params["name"],
        data,
        content_type=params.get("content_type") or declared,
        owner=str(user["_id"]) if user.get("_id") is not None else None,
    )
    return "next", ctx.storage.record_json(record)


@node_type(
    "get-file",
    outputs=("found", "not_found"),
    description="Look up a file; the node's result is its record, with 'content' when 'read' asks for it.",
    params={
        "file": _FILE,
        "read": Param.literal(
            {"type": "string", "enum": ["none", "text", "base64"]},
            default="none",
            description="also read the bytes, as UTF-8 text or base64 (bounded by the bucket's size limit)",
        ),
    },
)
async def get_file(ctx, params):
    if params["file"] is None:
        return "not_found", None
    bucket, name = _locate(ctx, params["file"])
    record = await ctx.storage.stat(bucket, name)
    if record is None:
        return "not_found", None
    result = ctx.storage.record_json(record)
    if params["read"] != "none":
        _, data = await ctx.storage.get(bucket, name)
        result["content"] = _encode(data, params["read"], name)
    return "found", result


@node_type(
    "delete-file",
    description="Delete a file (its URL answers 404 from then on); the node's result says whether it existed.",
    params={"file": _FILE},
)
async def delete_file(ctx, params):
    if params["file"] is None:
        return "next", False
    return "next", await ctx.storage.delete(*_locate(ctx, params["file"]))


@node_type(
    "file-url",
    description="The public URL of a file in a bucket (absolute when storage.base_url is set).",
    params={"bucket": Param.template(required=True), "name": Param.template(required=True)},
)
async def file_url(ctx, params):
    ctx.storage.bucket(params["bucket"])
    return "next", ctx.storage.url(params["bucket"], params["name"])


def _locate(ctx: Any, file: Any) -> tuple[str, str]:
    if isinstance(file, Mapping) and isinstance(file.get("fileName"), str):
        return str(file.get("bucket") or file.get("bucketId")), file["fileName"]
    return ctx.storage.locate(file)


def _content(value: Any, encoding: str) -> tuple[bytes, str | None]:
    declared = None
    if isinstance(value, Mapping):
        declared = value.get("mimeType") or value.get("contentType")
        value = value.get("content")
    if isinstance(value, (bytes, bytearray)):
        return bytes(value), declared
    if isinstance(value, str) and encoding == "base64":
        try:
            return base64.b64decode(value, validate=True), declared
        except binascii.Error:
            raise FlowError("invalid_file_content", "The file content is not valid base64", status=400) from None
    if isinstance(value, str):
        return value.encode(), declared
    raise FlowError(
        "invalid_file_content",
        f"A file's content must be text, bytes or a file record with content, not {type(value).__name__}",
        status=400,
    )


def _encode(data: bytes, read: str, name: str) -> str:
    if read == "base64":
        return base64.b64encode(data).decode("ascii")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise FlowError("file_not_text", f"'{name}' is not UTF-8 text; read it as base64", status=415) from None
