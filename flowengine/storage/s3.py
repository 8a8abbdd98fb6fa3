"""Files in an S3-compatible object store (AWS S3, MinIO, Ceph, ...), through boto3.

boto3 rather than aiobotocore: it is AWS's own client, released with every API change, and
aiobotocore pins narrow botocore ranges that fight whatever boto3 an app also installs. Its
calls block, so they run on a private thread pool sized like its connection pool: storage
traffic can neither stall the event loop nor starve the threads bcrypt and disk reads use.

One S3 bucket holds the whole app (``s3://bucket/prefix``); the app's buckets are key
prefixes inside it, so their names need not follow S3's bucket-name rules and no bucket
has to be created per app bucket. Uploads stream: parts of ``PART_SIZE`` go out as they
fill (multipart upload, aborted on failure), so memory per upload stays bounded. Metadata
(id, owner, privacy) rides in the object's own ``x-amz-meta-*`` headers.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any, AsyncIterator, Callable, Mapping
from urllib.parse import urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from flowengine.storage.backend import READ_CHUNK, Backend, Chunks, FileRecord, not_found, unavailable

log = logging.getLogger("flowengine.storage")

#: Bytes per multipart part (S3's minimum is 5 MiB for all but the last part).
PART_SIZE = 8 * 1024 * 1024
WORKERS = 16
_MISSING = {"404", "NoSuchKey", "NotFound"}


class _Missing(Exception):
    """The object is not there (S3's 404)."""


class S3Backend(Backend):
    def __init__(self, client: Any, bucket: str, prefix: str = "") -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.executor = ThreadPoolExecutor(WORKERS, thread_name_prefix="flowengine-s3")

    @classmethod
    def from_settings(cls, url: str, settings: Mapping[str, Any]) -> S3Backend:
        """``url`` is ``s3://bucket[/prefix]``; ``endpoint``, ``region``, ``access_key`` and
        ``secret_key`` come from settings (empty keys: boto3's own chain, e.g. an IAM role)."""
        parts = urlsplit(url)
        if not parts.netloc:
            raise ValueError(f"storage.url {url!r} names no bucket; write s3://bucket[/prefix]")
        endpoint = settings.get("endpoint") or None
        config = Config(
            connect_timeout=5,
            read_timeout=30,
            retries={"max_attempts": 3, "mode": "standard"},
            max_pool_connections=WORKERS,
            # Custom endpoints (MinIO, Ceph, moto) are addressed by path, which all of them serve.
            s3={"addressing_style": "path" if endpoint else "auto"},
            # boto3's default CRC checksums are not understood by every S3-compatible store.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        client = boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint,
            region_name=settings.get("region") or None,
            aws_access_key_id=settings.get("access_key") or None,
            aws_secret_access_key=settings.get("secret_key") or None,
            config=config,
        )
        return cls(client, parts.netloc, parts.path)

    async def write(self, record: FileRecord, chunks: Chunks) -> FileRecord:
        target = {"Bucket": self.bucket, "Key": self._key(record.bucket, record.name)}
        extra = {"ContentType": record.content_type, "Metadata": _metadata(record)}
        pending: list[bytes] = []
        parts: list[dict[str, Any]] = []
        size = buffered = 0
        upload: str | None = None
        try:
            async for chunk in chunks:
                pending.append(chunk)
                size, buffered = size + len(chunk), buffered + len(chunk)
                if buffered >= PART_SIZE:
                    upload = upload or (await self._call("create_multipart_upload", **target, **extra))["UploadId"]
                    parts.append(await self._part(target, upload, len(parts) + 1, b"".join(pending)))
                    pending, buffered = [], 0
            if upload is None:
                answer = await self._call("put_object", **target, **extra, Body=b"".join(pending))
            else:
                if pending:
                    parts.append(await self._part(target, upload, len(parts) + 1, b"".join(pending)))
                answer = await self._call(
                    "complete_multipart_upload", **target, UploadId=upload, MultipartUpload={"Parts": parts}
                )
        except BaseException:
            if upload is not None:
                with contextlib.suppress(Exception):
                    await self._call("abort_multipart_upload", **target, UploadId=upload)
            raise
        return record.stored(size, answer["ETag"].strip('"'))

    async def _part(self, target: dict[str, str], upload: str, number: int, body: bytes) -> dict[str, Any]:
        answer = await self._call("upload_part", **target, UploadId=upload, PartNumber=number, Body=body)
        return {"PartNumber": number, "ETag": answer["ETag"]}

    async def stat(self, bucket: str, name: str) -> FileRecord | None:
        try:
            head = await self._call("head_object", Bucket=self.bucket, Key=self._key(bucket, name))
        except _Missing:
            return None
        meta = head.get("Metadata") or {}
        return FileRecord(
            id=meta.get("id") or head["ETag"].strip('"'),
            bucket=bucket,
            name=name,
            content_type=head.get("ContentType") or "application/octet-stream",
            owner=meta.get("owner"),
            public=meta.get("public") == "true",
            uploaded_at=float(meta.get("uploaded") or head["LastModified"].timestamp()),
            size=head["ContentLength"],
            etag=head["ETag"].strip('"'),
        )

    async def read(self, bucket: str, name: str, start: int = 0, end: int | None = None) -> Chunks:
        ranged = {"Range": f"bytes={start}-{'' if end is None else end}"} if start or end is not None else {}
        try:
            answer = await self._call("get_object", Bucket=self.bucket, Key=self._key(bucket, name), **ranged)
        except _Missing:
            raise not_found(bucket, name) from None
        return self._chunks(answer["Body"])

    async def _chunks(self, body: Any) -> AsyncIterator[bytes]:
        try:
            while chunk := await self._run(body.read, READ_CHUNK):
                yield chunk
        finally:
            body.close()

    async def remove(self, bucket: str, name: str) -> bool:
        target = {"Bucket": self.bucket, "Key": self._key(bucket, name)}
        try:
            await self._call("head_object", **target)
        except _Missing:
            return False
        await self._call("delete_object", **target)
        return True

    async def names(self, bucket: str, prefix: str = "", after: str | None = None, count: int = 100) -> list[str]:
        folder = self._key(bucket, "")
        query: dict[str, Any] = {"Bucket": self.bucket, "Prefix": folder + prefix, "MaxKeys": count}
        if after is not None:
            query["StartAfter"] = folder + after
        listing = await self._call("list_objects_v2", **query)
        return [item["Key"][len(folder) :] for item in listing.get("Contents", [])]

    async def close(self) -> None:
        self.client.close()
        self.executor.shutdown(wait=False)

    def _key(self, bucket: str, name: str) -> str:
        return f"{self.prefix}/{bucket}/{name}" if self.prefix else f"{bucket}/{name}"

    async def _call(self, method: str, **params: Any) -> Any:
        """One S3 call on the pool; a missing object raises ``_Missing``, an outage a 503."""
        try:
            return await self._run(getattr(self.client, method), **params)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in _MISSING:
                raise _Missing(code) from exc
            log.warning("S3 %s failed: %s", method, exc)
            reason = f"S3 bucket '{self.bucket}' does not exist" if code == "NoSuchBucket" else f"S3 answered {code}"
            raise unavailable(reason) from exc
        except BotoCoreError as exc:
            log.warning("S3 %s failed: %s", method, exc)
            raise unavailable(type(exc).__name__) from exc

    async def _run(self, function: Callable[..., Any], *args: Any, **params: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, functools.partial(function, *args, **params))


def _metadata(record: FileRecord) -> dict[str, str]:
    meta = {"id": record.id, "public": "true" if record.public else "false", "uploaded": repr(record.uploaded_at)}
    if record.owner is not None:
        meta["owner"] = str(record.owner)
    return meta
