"""flowengine.storage: one suite, run on local disk and on an S3-compatible server.

The S3 side is moto's server on loopback, started here (moto is a test dependency, so it
always runs: no skip). Every refusal is checked for its error and for leaving nothing
behind: no file, no temporary file, no pending multipart upload.
"""

from __future__ import annotations

import hashlib
import struct
import uuid
import zlib
from pathlib import Path
from typing import AsyncIterator

import boto3
import pytest

from flowengine.errors import FlowError
from flowengine.storage.local import LocalBackend
from flowengine.storage.s3 import PART_SIZE, S3Backend
from flowengine.storage.safety import check_name, sniff
from flowengine.storage.service import Bucket, Storage, open_storage

pytestmark = pytest.mark.anyio

S3_BUCKET = "flowengine-test"
S3_KEYS = {"region": "us-east-1", "access_key": "test", "secret_key": "test"}
BUCKETS = {
    "pictures": Bucket("pictures", public=True, types=frozenset({"image/png", "image/jpeg", "image/webp", "image/gif"}),
                       max_bytes=5 * 1024 * 1024),
    "docs": Bucket("docs", max_bytes=40 * 1024 * 1024),
    "any": Bucket("any", public=True, types=frozenset({"image/*"}), delete="any"),
}  # fmt: skip


def png(width: int = 2, height: int = 2) -> bytes:
    """A real PNG (RGB, every pixel red), built by hand."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


class Pulled:
    """A byte stream that counts what was taken from it."""

    def __init__(self, total: int, chunk: int = 64 * 1024, head: bytes = b"") -> None:
        self.total, self.chunk, self.head, self.pulled = total, chunk, head, 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        data = self.head
        while self.pulled < self.total:
            piece = (data + b"\0" * self.chunk)[: min(self.chunk, self.total - self.pulled)]
            data = b""
            self.pulled += len(piece)
            yield piece


# --- backends -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def s3_endpoint() -> AsyncIterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id="test", aws_secret_access_key="test")  # fmt: skip
    client.create_bucket(Bucket=S3_BUCKET)
    yield endpoint
    server.stop()


@pytest.fixture(params=["local", "s3"])
async def backend(request, tmp_path: Path):
    if request.param == "local":
        yield LocalBackend(tmp_path / "files")
        return
    endpoint = request.getfixturevalue("s3_endpoint")
    s3 = S3Backend.from_settings(f"s3://{S3_BUCKET}/run-{uuid.uuid4().hex[:8]}", {"endpoint": endpoint, **S3_KEYS})
    yield s3
    await s3.close()


@pytest.fixture
async def storage(backend) -> Storage:
    return Storage(backend, BUCKETS, base_url="https://files.example.com")


async def leftovers(storage: Storage, bucket: str) -> list[str]:
    """Whatever a refused upload could have left: files, temp files, open multipart uploads."""
    backend = storage.backend
    found = list(await storage.list(bucket))
    if isinstance(backend, LocalBackend):
        found += [path.name for path in backend.tmp.glob("*")]
    else:
        uploads = backend.client.list_multipart_uploads(Bucket=backend.bucket, Prefix=backend.prefix)
        found += [upload["Key"] for upload in uploads.get("Uploads", [])]
    return found


async def read_all(storage: Storage, bucket: str, name: str, start: int = 0, end: int | None = None) -> bytes:
    record = await storage.stat(bucket, name)
    return b"".join([chunk async for chunk in await storage.stream(record, start, end)])


# --- storing and reading --------------------------------------------------------------------


async def test_a_png_goes_in_and_comes_back_with_its_metadata(storage):
    image = png()
    record = await storage.put("pictures", "photo1", image, content_type="image/png", owner="u1")
    assert (record.bucket, record.name, record.size, record.content_type) == (
        "pictures",
        "photo1",
        len(image),
        "image/png",
    )
    assert (record.owner, record.public, len(record.id)) == ("u1", True, 24)
    assert await storage.stat("pictures", "photo1") == record
    assert await read_all(storage, "pictures", "photo1") == image
    assert record.etag and (await storage.get("pictures", "photo1")) == (record, image)
    assert await storage.exists("pictures", "photo1")


async def test_the_record_is_what_the_altogic_client_reads(storage):
    record = await storage.put("pictures", "my photo é.png", png(), owner="u1")
    body = storage.record_json(record)
    assert body["publicPath"] == "https://files.example.com/_storage/pictures/my%20photo%20%C3%A9.png"
    assert {k: body[k] for k in ("bucketId", "bucket", "fileName", "mimeType", "isPublic", "uploadedBy")} == {
        "bucketId": "pictures", "bucket": "pictures", "fileName": "my photo é.png", "mimeType": "image/png",
        "isPublic": True, "uploadedBy": "u1"}  # fmt: skip
    assert body["_id"] == record.id and body["size"] == record.size and body["uploadedAt"].endswith("Z")
    assert storage.locate(body["publicPath"]) == ("pictures", "my photo é.png")


async def test_ranges_read_just_those_bytes(storage):
    await storage.put("docs", "abc.txt", b"0123456789")
    assert await read_all(storage, "docs", "abc.txt", 2, 4) == b"234"
    assert await read_all(storage, "docs", "abc.txt", 7, 9) == b"789"
    assert await read_all(storage, "docs", "abc.txt", 0, 0) == b"0"


async def test_a_large_file_streams_in_and_out_unchanged(storage):
    """Bigger than an S3 part, so S3 takes it as a multipart upload."""
    stream = Pulled(2 * PART_SIZE + 12345)
    record = await storage.put("docs", "big.bin", stream)
    assert record.size == stream.pulled == 2 * PART_SIZE + 12345
    data = await read_all(storage, "docs", "big.bin")
    assert len(data) == record.size and hashlib.md5(data).hexdigest() == hashlib.md5(bytes(record.size)).hexdigest()


async def test_a_taken_name_gets_a_suffix_and_the_first_file_stays(storage):
    first = await storage.put("docs", "report.txt", b"one")
    second = await storage.put("docs", "report.txt", b"two")
    assert second.name != "report.txt" and second.name.startswith("report-") and second.name.endswith(".txt")
    assert await read_all(storage, "docs", "report.txt") == b"one"
    assert await read_all(storage, "docs", second.name) == b"two"
    assert first.etag != second.etag


async def test_delete_removes_the_file_for_good(storage):
    record = await storage.put("docs", "gone.txt", b"bye")
    assert await storage.delete("docs", "gone.txt") is True
    assert await storage.stat("docs", "gone.txt") is None
    assert await storage.delete("docs", "gone.txt") is False
    with pytest.raises(FlowError) as caught:
        await storage.stream(record)
    assert (caught.value.status, caught.value.code) == (404, "file_not_found")
    assert await leftovers(storage, "docs") == []


async def test_list_pages_through_names_in_order(storage):
    for name in ("b.txt", "a.txt", "c.txt", "x-1.txt"):
        await storage.put("docs", name, name.encode())
    assert await storage.list("docs") == ["a.txt", "b.txt", "c.txt", "x-1.txt"]
    assert await storage.list("docs", count=2) == ["a.txt", "b.txt"]
    assert await storage.list("docs", after="b.txt", count=2) == ["c.txt", "x-1.txt"]
    assert await storage.list("docs", prefix="x-") == ["x-1.txt"]
    assert await storage.list("pictures") == []


async def test_a_private_bucket_keeps_files_private_and_public_files_can_be_made_private(storage):
    private = await storage.put("docs", "mine.txt", b"secret", owner="u1")
    assert private.public is False
    policy = storage.bucket("docs")
    assert policy.may_read(private, "u1") and not policy.may_read(private, "u2") and not policy.may_read(private, None)
    hidden = await storage.put("pictures", "hidden.png", png(), owner="u1", private=True)
    assert hidden.public is False and not storage.bucket("pictures").may_read(hidden, None)


async def test_delete_rights_follow_the_bucket(storage):
    record = await storage.put("pictures", "p.png", png(), owner="u1")
    assert storage.bucket("pictures").may_delete(record, "u1")
    assert not storage.bucket("pictures").may_delete(record, "u2")
    assert not storage.bucket("pictures").may_delete(record, None)
    shared = await storage.put("any", "p.png", png(), owner="u1")
    assert storage.bucket("any").may_delete(shared, "u2")


# --- refusals: a clear error, nothing stored ------------------------------------------------


async def test_too_large_is_refused_while_streaming(storage):
    stream = Pulled(50 * 1024 * 1024, head=png())
    with pytest.raises(FlowError) as caught:
        await storage.put("pictures", "huge.png", stream)
    assert (caught.value.status, caught.value.code) == (413, "file_too_large")
    assert caught.value.details == {"limit": 5 * 1024 * 1024}
    assert stream.pulled <= 5 * 1024 * 1024 + 64 * 1024  # stopped at the chunk that passed the limit
    assert await leftovers(storage, "pictures") == []


async def test_too_large_after_some_s3_parts_aborts_the_upload(storage):
    stream = Pulled(40 * 1024 * 1024 + 1)
    with pytest.raises(FlowError, match="limit"):
        await storage.put("docs", "huge.bin", stream)
    assert stream.pulled == 40 * 1024 * 1024 + 1
    assert await leftovers(storage, "docs") == []


@pytest.mark.parametrize(
    "name, declared, content, code",
    [
        ("photo.png", "image/png", b"just some text", "file_type_mismatch"),
        ("photo.png", None, b"just some text", "file_type_mismatch"),
        ("photo", "image/png", b"GIF89a......", "file_type_mismatch"),
        ("photo.jpg", None, png(), "file_type_mismatch"),
        ("notes.txt", "text/plain", b"hello", "file_type_not_allowed"),
        ("page", "text/html", b"<script>alert(1)</script>", "file_type_not_allowed"),
        ("photo", None, b"", "file_type_not_allowed"),
    ],
)
async def test_a_type_that_the_bytes_or_the_bucket_refuse(storage, name, declared, content, code):
    with pytest.raises(FlowError) as caught:
        await storage.put("pictures", name, content, content_type=declared)
    assert (caught.value.status, caught.value.code) == (415, code)
    assert await leftovers(storage, "pictures") == []


@pytest.mark.parametrize(
    "image, kind",
    [(png(), "image/png"), (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", "image/jpeg"), (b"GIF87a\x01\x00", "image/gif"),
     (b"RIFF\x24\x00\x00\x00WEBPVP8 ", "image/webp")],
)  # fmt: skip
async def test_image_types_are_read_from_the_bytes(storage, image, kind):
    record = await storage.put("pictures", "photo", image, content_type="application/octet-stream")
    assert record.content_type == kind
    assert await storage.put("any", "photo", image)  # image/* takes every image type


@pytest.mark.parametrize(
    "name, reason",
    [
        ("../../etc/passwd", "'/'"),
        ("a/b.png", "'/'"),
        ("..\\win.ini", "'/'"),
        (".htaccess", "start with '.'"),
        ("..", "start with '.'"),
        ("bad\x00name.png", "control characters"),
        ("line\nbreak.png", "control characters"),
        ("bidi\u202etxt.png", "control characters"),
        (" padded.png", "white space"),
        ("x" * 201, "at most 200 bytes"),
        ("é" * 101, "at most 200 bytes"),
        ("", "required"),
    ],
)
async def test_hostile_names_are_refused_not_rewritten(storage, name, reason):
    with pytest.raises(FlowError) as caught:
        await storage.put("pictures", name, png())
    assert (caught.value.status, caught.value.code) == (400, "invalid_file_name")
    assert reason in caught.value.message
    assert await leftovers(storage, "pictures") == []


def test_ordinary_names_pass():
    for name in ("photo64f1a2", "My Photo (1).PNG", "résumé.pdf", "a" * 200, "x.tar.gz"):
        assert check_name(name) == name


async def test_unknown_buckets_and_created_ones(backend):
    closed = Storage(backend, BUCKETS)
    with pytest.raises(FlowError) as caught:
        await closed.put("avatars", "a.png", png(), create_bucket=True)
    assert (caught.value.status, caught.value.code) == (404, "bucket_not_found")

    open_ = Storage(
        backend, BUCKETS, create_buckets=True, defaults=Bucket("", public=True, types=frozenset({"image/*"}))
    )
    with pytest.raises(FlowError, match="createBucket"):
        await open_.put("avatars", "a.png", png())
    record = await open_.put("avatars", "a.png", png(), create_bucket=True)
    assert record.public and open_.bucket("avatars").types == {"image/*"}
    assert await open_.put("avatars", "b.png", png())  # it exists now
    with pytest.raises(FlowError, match="does not take"):
        await open_.put("avatars", "c.txt", b"text")
    with pytest.raises(FlowError, match="No bucket"):
        await open_.put("../up", "a.png", png(), create_bucket=True)


async def test_names_that_are_not_file_urls_are_refused(storage):
    for url in ("https://x.example/elsewhere/a.png", "/_storage/pictures", "/_storage//a", None, 12, "/_storage/a/b/c"):
        with pytest.raises(FlowError) as caught:
            storage.locate(url)
        assert caught.value.code == "invalid_file_url"
    assert storage.locate("/_storage/pictures/a%2Fb") == ("pictures", "a/b")  # then refused as a name
    with pytest.raises(FlowError, match="'/'"):
        await storage.stat(*storage.locate("/_storage/pictures/a%2Fb"))


def test_sniff_knows_four_image_types_and_nothing_else():
    assert sniff(png()) == "image/png"
    assert sniff(b"RIFF\x00\x00\x00\x00WAVE") is None
    assert sniff(b"\x89PN") is None and sniff(b"") is None


# --- configuration and outages --------------------------------------------------------------


def test_open_storage_picks_the_backend_by_url(tmp_path):
    local = open_storage({"buckets": {"profilePictures": {"public": True, "types": ["image/png"], "max_bytes": 10}}},
                         tmp_path / "files")  # fmt: skip
    assert isinstance(local.backend, LocalBackend) and local.backend.root == tmp_path / "files"
    assert local.bucket("profilePictures") == Bucket("profilePictures", True, frozenset({"image/png"}), 10, "owner")
    elsewhere = open_storage({"url": f"file://{tmp_path}/elsewhere"}, tmp_path / "files")
    assert elsewhere.backend.root == tmp_path / "elsewhere"
    s3 = open_storage({"url": "s3://my-bucket/apps/one", "endpoint": "http://127.0.0.1:9000", **S3_KEYS}, tmp_path)
    assert (s3.backend.bucket, s3.backend.prefix) == ("my-bucket", "apps/one")
    with pytest.raises(ValueError, match="ftp://x"):
        open_storage({"url": "ftp://x"}, tmp_path)
    with pytest.raises(ValueError, match="names no bucket"):
        open_storage({"url": "s3:///x"}, tmp_path)
    with pytest.raises(ValueError, match="'bad/name'"):
        open_storage({"buckets": {"bad/name": {}}}, tmp_path)


async def test_an_unreachable_s3_answers_503_quickly():
    down = S3Backend.from_settings("s3://nowhere", {"endpoint": "http://127.0.0.1:9", **S3_KEYS})
    storage = Storage(down, BUCKETS)
    try:
        for call in (storage.stat("docs", "a.txt"), storage.put("docs", "a.txt", b"x")):
            with pytest.raises(FlowError) as caught:
                await call
            assert (caught.value.status, caught.value.code) == (503, "storage_unavailable")
    finally:
        await storage.close()


async def test_a_missing_s3_bucket_is_named_in_the_error(s3_endpoint):
    storage = Storage(S3Backend.from_settings("s3://no-such-bucket", {"endpoint": s3_endpoint, **S3_KEYS}), BUCKETS)
    try:
        with pytest.raises(FlowError, match="'no-such-bucket' does not exist"):
            await storage.put("docs", "a.txt", b"x")
    finally:
        await storage.close()


def test_app_yaml_storage_settings_are_checked_at_load(tmp_path):
    from flowengine.errors import SpecErrors
    from flowengine.spec.app import load_app

    (tmp_path / "app.yaml").write_text(
        "name: x\nstorage:\n  url: ftp://x\n  buckets:\n    pics: { max_bytes: big, colour: red, delete: all }\n"
        '    "bad/name": {}\n'
    )
    with pytest.raises(SpecErrors) as caught:
        load_app(tmp_path)
    messages = [str(error) for error in caught.value.errors]
    assert messages[0].startswith("app.yaml:3:3: 'url' \"ftp://x\" is not valid: expected empty (local disk")
    assert "app.yaml:5:13: 'max_bytes' must be an integer" in messages[1]
    assert any("unknown key 'colour'" in message for message in messages)
    assert any("'delete'" in message for message in messages)
    assert any("'bad/name' is not a valid key in 'buckets'" in message for message in messages)
