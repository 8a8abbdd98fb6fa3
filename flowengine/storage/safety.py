"""The checks every file passes before a byte is stored.

Names are refused, never rewritten: a hostile name (``../../etc/passwd``, a control
character, a leading dot) is an error the client sees. An image's type is read from its
first bytes, so a text file named ``.png`` is refused. Sizes are counted as the bytes
arrive, so a stream that passes its limit fails there, not after it was all read.
"""

from __future__ import annotations

import mimetypes
import posixpath
import re
import unicodedata
from typing import AsyncIterator, Iterable

from flowengine.errors import FlowError
from flowengine.storage.backend import Chunks

#: File names: at most this many bytes of UTF-8 (room for a sidecar's suffix on any disk).
MAX_NAME_BYTES = 200
BUCKET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")

#: Image types recognised by their first bytes; a file claiming one must start with it.
IMAGE_EXTENSIONS = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
}
IMAGE_TYPES = frozenset(IMAGE_EXTENSIONS.values())
_ALIASES = {"image/jpg": "image/jpeg", "image/pjpeg": "image/jpeg"}
_GENERIC = {"", "application/octet-stream"}
#: Bytes needed to tell every image type apart (WebP's tag sits at 8..12).
SNIFF_BYTES = 12


def check_name(name: object) -> str:
    """``name`` if it is a safe file name; otherwise a 400 saying what is wrong with it."""
    if not isinstance(name, str) or not name:
        raise _bad_name(name, "a file name is required")
    reason = _name_problem(name)
    if reason:
        raise _bad_name(name, reason)
    return name


def _name_problem(name: str) -> str | None:
    if "/" in name or "\\" in name:
        return "a file name may not contain '/' or '\\'"
    if name.startswith("."):
        return "a file name may not start with '.'"
    if any(unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp") for char in name):
        return "a file name may not contain control characters"
    if name != name.strip():
        return "a file name may not start or end with white space"
    if len(name.encode()) > MAX_NAME_BYTES:
        return f"a file name may take at most {MAX_NAME_BYTES} bytes"
    return None


def _bad_name(name: object, reason: str) -> FlowError:
    return FlowError(
        "invalid_file_name",
        f"Invalid file name {name!r}: {reason}",
        status=400,
        details={"field": "fileName", "reason": reason},
    )


def sniff(head: bytes) -> str | None:
    """The image type ``head`` (a file's first bytes) starts with, if any."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return None


def settle_type(name: str, declared: str | None, head: bytes) -> str:
    """The file's content type: what its bytes show, else what was declared or its name says.

    A declared type or an extension naming an image the bytes are not is refused (415).
    """
    detected = sniff(head)
    declared = _media(declared)
    by_name = IMAGE_EXTENSIONS.get(posixpath.splitext(name)[1].lower()) or _media(mimetypes.guess_type(name)[0])
    for claim in (declared, by_name):
        if claim in IMAGE_TYPES and claim != detected:
            raise FlowError(
                "file_type_mismatch",
                f"The file claims to be {claim} but its content is {detected or 'not that image type'}",
                status=415,
                details={"claimed": claim, "detected": detected},
            )
    return detected or declared or by_name or "application/octet-stream"


def _media(content_type: str | None) -> str | None:
    media = (content_type or "").split(";")[0].strip().lower()
    return None if media in _GENERIC else _ALIASES.get(media, media)


def type_allowed(content_type: str, allowed: Iterable[str]) -> bool:
    """Whether ``content_type`` is in ``allowed`` (which may hold ``image/*``); empty allows all."""
    allowed = set(allowed)
    return not allowed or content_type in allowed or content_type.split("/")[0] + "/*" in allowed


async def peek(chunks: Chunks, size: int = SNIFF_BYTES) -> tuple[bytes, Chunks]:
    """The first ``size`` bytes (fewer if the stream is shorter) and the whole stream again."""
    iterator = aiter(chunks)
    taken: list[bytes] = []
    while sum(map(len, taken)) < size:
        chunk = await anext(iterator, None)
        if chunk is None:
            break
        taken.append(chunk)

    async def again() -> AsyncIterator[bytes]:
        for chunk in taken:
            yield chunk
        async for chunk in iterator:
            yield chunk

    return b"".join(taken)[:size], again()


async def capped(chunks: Chunks, limit: int) -> AsyncIterator[bytes]:
    """``chunks``, failing with 413 as soon as more than ``limit`` bytes have come."""
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise FlowError(
                "file_too_large",
                f"The file is larger than this bucket's limit of {limit} bytes",
                status=413,
                details={"limit": limit},
            )
        yield chunk
