"""What a storage backend does, and the record it keeps for every file.

A backend only stores and reads bytes with their metadata; every rule (names, types, sizes,
owners) is checked before it is called, by ``Storage``. Both backends keep one meaning:
a file exists once its metadata is written, and a failed write leaves nothing behind.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any, AsyncIterator

from flowengine.errors import FlowError
from flowengine.models import iso

Chunks = AsyncIterator[bytes]

#: Bytes read from a backend at a time while a file is served.
READ_CHUNK = 256 * 1024


@dataclass(frozen=True)
class FileRecord:
    """One stored file: what its metadata says."""

    id: str
    bucket: str
    name: str
    content_type: str
    owner: str | None
    public: bool
    uploaded_at: float
    size: int = 0
    #: Opaque tag of the content (no quotes), changed by every new upload.
    etag: str = ""

    def stored(self, size: int, etag: str) -> FileRecord:
        return replace(self, size=size, etag=etag)

    def to_json(self, url: str) -> dict[str, Any]:
        """The file record as the Altogic client reads it (``publicPath`` is ``url``)."""
        uploaded = iso(datetime.fromtimestamp(self.uploaded_at, timezone.utc))
        return {
            "_id": self.id,
            "bucketId": self.bucket,
            "bucket": self.bucket,
            "fileName": self.name,
            "size": self.size,
            "mimeType": self.content_type,
            "isPublic": self.public,
            "publicPath": url,
            "uploadedAt": uploaded,
            "updatedAt": uploaded,
            "uploadedBy": self.owner,
        }

    def meta(self) -> dict[str, Any]:
        """The metadata a backend keeps beside the bytes."""
        return {
            "id": self.id,
            "type": self.content_type,
            "owner": self.owner,
            "public": self.public,
            "uploaded": self.uploaded_at,
            "size": self.size,
            "etag": self.etag,
        }

    @classmethod
    def from_meta(cls, bucket: str, name: str, meta: dict[str, Any]) -> FileRecord:
        return cls(
            id=meta["id"],
            bucket=bucket,
            name=name,
            content_type=meta["type"],
            owner=meta.get("owner"),
            public=bool(meta.get("public")),
            uploaded_at=float(meta["uploaded"]),
            size=int(meta["size"]),
            etag=meta["etag"],
        )


class Backend(abc.ABC):
    """Bytes and metadata under ``bucket/name``."""

    @abc.abstractmethod
    async def write(self, record: FileRecord, chunks: Chunks) -> FileRecord:
        """Store ``chunks`` as ``record``'s file; return it with its size and etag.

        When ``chunks`` raises (too large, client gone), nothing is kept and the error
        propagates.
        """

    @abc.abstractmethod
    async def stat(self, bucket: str, name: str) -> FileRecord | None: ...

    @abc.abstractmethod
    async def read(self, bucket: str, name: str, start: int = 0, end: int | None = None) -> Chunks:
        """The bytes ``start``..``end`` (inclusive; None: to the end). Opening happens now,
        so a missing file raises ``not_found`` before the first chunk is awaited."""

    @abc.abstractmethod
    async def remove(self, bucket: str, name: str) -> bool:
        """Delete a file; whether it existed."""

    @abc.abstractmethod
    async def names(self, bucket: str, prefix: str = "", after: str | None = None, count: int = 100) -> list[str]:
        """Up to ``count`` names in ``bucket`` starting with ``prefix``, in order, after ``after``."""

    async def close(self) -> None:
        return None


def not_found(bucket: str, name: str) -> FlowError:
    return FlowError(
        "file_not_found",
        f"No file '{name}' in bucket '{bucket}'",
        status=404,
        details={"bucket": bucket, "fileName": name},
    )


def unavailable(reason: str) -> FlowError:
    return FlowError("storage_unavailable", f"The file storage is unavailable: {reason}", status=503)
