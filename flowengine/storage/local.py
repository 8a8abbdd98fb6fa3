"""Files on local disk: the embedded default, under the app's ``data/files/``.

Layout: ``<root>/<bucket>/<name>`` holds the bytes and ``<root>/<bucket>/.meta/<name>.json``
the metadata; uploads are written under ``<root>/.tmp/`` and moved into place with
``os.replace``, so a reader never sees half a file. The metadata is written last and is the
commit: a file exists exactly when its metadata does, so a crash mid-upload leaves no file.
Disk calls run in threads, never on the event loop.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
from pathlib import Path
from typing import Any, AsyncIterator, BinaryIO

from anyio import to_thread

from flowengine.storage.backend import READ_CHUNK, Backend, Chunks, FileRecord, not_found

META = ".meta"


class LocalBackend(Backend):
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.tmp = self.root / ".tmp"

    async def write(self, record: FileRecord, chunks: Chunks) -> FileRecord:
        await to_thread.run_sync(lambda: self.tmp.mkdir(parents=True, exist_ok=True))
        temp = self.tmp / secrets.token_hex(8)
        digest, size = hashlib.md5(usedforsecurity=False), 0
        try:
            with await to_thread.run_sync(open, temp, "xb") as out:
                async for chunk in chunks:
                    digest.update(chunk)
                    size += len(chunk)
                    await to_thread.run_sync(out.write, chunk)
            stored = record.stored(size, digest.hexdigest())
            await to_thread.run_sync(self._commit, temp, stored)
            return stored
        finally:
            temp.unlink(missing_ok=True)

    def _commit(self, temp: Path, record: FileRecord) -> None:
        data, meta = self._paths(record.bucket, record.name)
        meta.parent.mkdir(parents=True, exist_ok=True)
        os.replace(temp, data)
        meta_temp = self.tmp / secrets.token_hex(8)
        meta_temp.write_text(json.dumps(record.meta()))
        os.replace(meta_temp, meta)

    async def stat(self, bucket: str, name: str) -> FileRecord | None:
        meta = await to_thread.run_sync(_read_json, self._paths(bucket, name)[1])
        return None if meta is None else FileRecord.from_meta(bucket, name, meta)

    async def read(self, bucket: str, name: str, start: int = 0, end: int | None = None) -> Chunks:
        try:
            file = await to_thread.run_sync(open, self._paths(bucket, name)[0], "rb")
        except FileNotFoundError:
            raise not_found(bucket, name) from None
        return _chunks(file, start, end)

    async def remove(self, bucket: str, name: str) -> bool:
        data, meta = self._paths(bucket, name)

        def remove() -> bool:
            try:
                meta.unlink()  # the file is gone from here on
            except FileNotFoundError:
                return False
            data.unlink(missing_ok=True)
            return True

        return await to_thread.run_sync(remove)

    async def names(self, bucket: str, prefix: str = "", after: str | None = None, count: int = 100) -> list[str]:
        folder = self.root / bucket / META

        def listing() -> list[str]:
            try:
                entries = os.listdir(folder)
            except FileNotFoundError:
                return []
            found = sorted(entry[:-5] for entry in entries if entry.endswith(".json") and entry.startswith(prefix))
            return [name for name in found if after is None or name > after][:count]

        return await to_thread.run_sync(listing)

    def _paths(self, bucket: str, name: str) -> tuple[Path, Path]:
        # bucket and name were checked by Storage: no separators, no leading dots.
        folder = self.root / bucket
        return folder / name, folder / META / f"{name}.json"


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None


async def _chunks(file: BinaryIO, start: int, end: int | None) -> AsyncIterator[bytes]:
    with contextlib.closing(file):
        await to_thread.run_sync(file.seek, start)
        left = None if end is None else end - start + 1
        while left is None or left > 0:
            chunk = await to_thread.run_sync(file.read, READ_CHUNK if left is None else min(READ_CHUNK, left))
            if not chunk:
                return
            if left is not None:
                left -= len(chunk)
            yield chunk
