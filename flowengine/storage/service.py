"""The app's file storage: buckets declared in ``app.yaml``, one backend behind them.

``Storage`` is what the HTTP API and the file nodes use. It applies every rule before the
backend sees a byte: the bucket exists (or may be created), the name is safe, the type is
allowed and matches the bytes, the size stays under the bucket's limit while streaming.
Who may read or delete a file is the bucket's policy (``Bucket.may_read``/``may_delete``),
checked by the HTTP API; flows act for the app and are trusted.

``open_storage`` picks the backend from ``storage.url``: empty for local disk under the
app's ``data/files/``, ``file:///path`` for local disk elsewhere, ``s3://bucket/prefix``
for an S3-compatible store.
"""

from __future__ import annotations

import posixpath
import secrets
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Mapping
from urllib.parse import quote, unquote, urlsplit

from flowengine.errors import FlowError
from flowengine.storage.backend import Backend, Chunks, FileRecord, not_found
from flowengine.storage.safety import BUCKET_NAME, capped, check_name, peek, settle_type, type_allowed

#: Where files are served: ``/_storage/<bucket>/<name>``.
FILES_PATH = "/_storage"
DEFAULT_MAX_BYTES = 10 * 1024 * 1024


@dataclass(frozen=True)
class Bucket:
    """A bucket's policy, from ``storage.buckets.<name>`` in app.yaml."""

    name: str
    public: bool = False
    #: Allowed content types (``image/*`` allowed); empty allows every type.
    types: frozenset[str] = frozenset()
    max_bytes: int = DEFAULT_MAX_BYTES
    #: Who may delete a file: ``owner`` (its uploader) or ``any`` signed-in user.
    delete: str = "owner"

    @classmethod
    def from_settings(cls, name: str, settings: Mapping[str, Any]) -> Bucket:
        if not BUCKET_NAME.match(name):
            raise ValueError(f"storage bucket name {name!r}: use letters, digits, '_' and '-' (at most 63)")
        return cls(
            name=name,
            public=bool(settings.get("public", False)),
            types=frozenset(settings.get("types") or ()),
            max_bytes=int(settings.get("max_bytes", DEFAULT_MAX_BYTES)),
            delete=settings.get("delete", "owner"),
        )

    def may_read(self, record: FileRecord, user_id: str | None) -> bool:
        """Anyone, for a public file of a bucket that is public now; else only its uploader."""
        return (self.public and record.public) or (user_id is not None and record.owner == user_id)

    def may_delete(self, record: FileRecord, user_id: str | None) -> bool:
        return user_id is not None and (self.delete == "any" or record.owner == user_id)


class Storage:
    """Buckets of files with their rules, on one backend."""

    def __init__(
        self,
        backend: Backend,
        buckets: Mapping[str, Bucket] | None = None,
        *,
        create_buckets: bool = False,
        defaults: Bucket | None = None,
        base_url: str = "",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.backend = backend
        self.buckets = dict(buckets or {})
        self.create_buckets = create_buckets
        self.defaults = defaults or Bucket("")
        self.base_url = base_url.rstrip("/")
        self.clock = clock

    def bucket(self, name: str) -> Bucket:
        """The policy of bucket ``name``: declared, or the defaults where buckets may be created."""
        if isinstance(name, str) and name in self.buckets:
            return self.buckets[name]
        if self.create_buckets and isinstance(name, str) and BUCKET_NAME.match(name):
            return replace(self.defaults, name=name)
        raise FlowError("bucket_not_found", f"No bucket '{name}' in this app", status=404, details={"bucket": name})

    async def put(
        self,
        bucket: str,
        name: str,
        chunks: Chunks | bytes,
        *,
        content_type: str | None = None,
        owner: str | None = None,
        private: bool = False,
        create_bucket: bool = False,
    ) -> FileRecord:
        """Store a file from a byte stream; a taken name gets a random suffix (names stay unique).

        A file is public when its bucket is, unless ``private``; no file of a private bucket is public.
        Every check fails before anything is kept: bad name (400), unknown bucket (404),
        type refused (415), too large (413, raised as soon as the stream passes the limit).
        """
        policy = self.bucket(bucket)
        check_name(name)
        if bucket not in self.buckets and not create_bucket and not await self.backend.names(bucket, count=1):
            raise FlowError(
                "bucket_not_found",
                f"No bucket '{bucket}' yet; upload with createBucket to create it",
                status=404,
                details={"bucket": bucket},
            )
        head, chunks = await peek(_stream(chunks))
        kind = settle_type(name, content_type, head)
        if not type_allowed(kind, policy.types):
            raise FlowError(
                "file_type_not_allowed",
                f"Bucket '{bucket}' does not take {kind} files",
                status=415,
                details={"type": kind, "allowed": sorted(policy.types)},
            )
        record = FileRecord(
            id=secrets.token_hex(12),
            bucket=bucket,
            name=await self._free_name(bucket, name),
            content_type=kind,
            owner=owner,
            public=policy.public and not private,
            uploaded_at=self.clock(),
        )
        return await self.backend.write(record, capped(chunks, policy.max_bytes))

    async def _free_name(self, bucket: str, name: str) -> str:
        """``name``, or ``name`` with a random suffix before its extension when it is taken.

        Two uploads racing for one free name both keep it and the last one wins, as in S3.
        """
        if await self.backend.stat(bucket, name) is None:
            return name
        stem, extension = posixpath.splitext(name)
        return check_name(f"{stem[: 180 - len(extension)]}-{secrets.token_hex(4)}{extension}")

    async def stat(self, bucket: str, name: str) -> FileRecord | None:
        """The file's record (size, content type, etag, owner, privacy), or None."""
        self.bucket(bucket)
        check_name(name)
        return await self.backend.stat(bucket, name)

    async def exists(self, bucket: str, name: str) -> bool:
        return await self.stat(bucket, name) is not None

    async def stream(self, record: FileRecord, start: int = 0, end: int | None = None) -> Chunks:
        """The bytes of a file ``stat`` found, ``start``..``end`` inclusive."""
        return await self.backend.read(record.bucket, record.name, start, end)

    async def get(self, bucket: str, name: str) -> tuple[FileRecord, bytes]:
        """A whole file in memory (for flows; bounded by its bucket's size limit)."""
        record = await self.stat(bucket, name)
        if record is None:
            raise not_found(bucket, name)
        return record, b"".join([chunk async for chunk in await self.stream(record)])

    async def delete(self, bucket: str, name: str) -> bool:
        """Remove a file; whether it existed. Its URL answers 404 from now on."""
        self.bucket(bucket)
        check_name(name)
        return await self.backend.remove(bucket, name)

    async def list(self, bucket: str, prefix: str = "", after: str | None = None, count: int = 100) -> list[str]:
        """File names in ``bucket``, in order: pass the last name back as ``after`` for the next page."""
        self.bucket(bucket)
        return await self.backend.names(bucket, prefix, after, count)

    def path(self, bucket: str, name: str) -> str:
        return f"{FILES_PATH}/{quote(bucket, safe='')}/{quote(name, safe='')}"

    def url(self, bucket: str, name: str, base_url: str | None = None) -> str:
        """The file's public URL: ``storage.base_url`` if set, else ``base_url`` (the request's)."""
        return (self.base_url or (base_url or "").rstrip("/")) + self.path(bucket, name)

    def record_json(self, record: FileRecord, base_url: str | None = None) -> dict[str, Any]:
        return record.to_json(self.url(record.bucket, record.name, base_url))

    def locate(self, url: Any) -> tuple[str, str]:
        """``(bucket, name)`` of a file URL (absolute or a path), as ``url`` made it."""
        path = urlsplit(url).path if isinstance(url, str) else ""
        _, found, rest = path.rpartition(FILES_PATH + "/")
        bucket, _, name = rest.partition("/")
        if not found or not bucket or not name or "/" in name:
            raise FlowError(
                "invalid_file_url", f"Not a file URL of this app: {url!r}", status=400, details={"field": "fileUrl"}
            )
        return unquote(bucket), unquote(name)

    async def close(self) -> None:
        await self.backend.close()


async def _stream(content: Chunks | bytes) -> AsyncIterator[bytes]:
    if isinstance(content, (bytes, bytearray)):
        yield bytes(content)
        return
    async for chunk in content:
        yield chunk


def open_storage(settings: Mapping[str, Any] | None, files_dir: Path) -> Storage:
    """The storage ``app.yaml``'s ``storage:`` section asks for (local disk when it is empty)."""
    settings = settings or {}
    url = settings.get("url") or ""
    scheme = urlsplit(url).scheme
    backend: Backend
    if not url:
        from flowengine.storage.local import LocalBackend

        backend = LocalBackend(files_dir)
    elif scheme == "file":
        from flowengine.storage.local import LocalBackend

        backend = LocalBackend(Path(unquote(urlsplit(url).path)))
    elif scheme == "s3":
        from flowengine.storage.s3 import S3Backend

        backend = S3Backend.from_settings(url, settings)
    else:
        raise ValueError(f"storage.url {url!r}: use an empty value (local disk), file:///path or s3://bucket/prefix")
    buckets = {name: Bucket.from_settings(name, spec or {}) for name, spec in (settings.get("buckets") or {}).items()}
    return Storage(
        backend,
        buckets,
        create_buckets=bool(settings.get("create_buckets", False)),
        defaults=Bucket.from_settings("defaults", settings.get("defaults") or {}),
        base_url=settings.get("base_url") or "",
    )
