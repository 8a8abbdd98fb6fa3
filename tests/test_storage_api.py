"""flowengine.http.storage_api: the Altogic storage API and file serving, end to end.

Each test builds an app the way the runtime does (``load_app`` → ``open_services`` →
``assemble``) from an ``app.yaml`` with a ``storage:`` section, on local disk and on an
S3-compatible server (moto on loopback), and talks to it over HTTP as the official client
does: a FormData upload with the field ``file``, ``?bucket=&fileName=&options=<json>``, a
``Session`` header. Sessions come from a stand-in for the auth service (token → user).

The last test runs a real uvicorn server in a subprocess and uploads 200 MB through it,
printing how much the server's resident memory grew.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path
from typing import Any, AsyncIterator, Iterator
from urllib.parse import quote

import httpx
import pytest
from test_storage import S3_BUCKET, S3_KEYS, Pulled, png, s3_endpoint  # noqa: F401  (s3_endpoint: a fixture)

from flowengine.errors import FlowError
from flowengine.runtime import assemble, open_services
from flowengine.spec.app import load_app

pytestmark = pytest.mark.anyio

USERS = {"tok-a": {"_id": "user-a", "email": "a@example.com"}, "tok-b": {"_id": "user-b", "email": "b@example.com"}}
#: What the client sends: its default contentType is not the file's and must be ignored.
CLIENT_OPTIONS = {"contentType": "text/plain;charset=UTF-8", "createBucket": True, "isPublic": True}
UPLOAD = "/_api/rest/v1/storage/bucket/upload-formdata"
DELETE = "/_api/rest/v1/storage/delete-file"
APP_YAML = """
name: storage-demo
storage:
  url: "{url}"
  endpoint: "{endpoint}"
  region: us-east-1
  access_key: test
  secret_key: test
  create_buckets: false
  buckets:
    profilePictures: {{ public: true, types: [image/png, image/jpeg, image/webp, image/gif], max_bytes: 5242880 }}
    private: {{ max_bytes: 1048576 }}
    shared: {{ public: true, delete: any }}
    big: {{ public: true, max_bytes: 314572800 }}
"""


class TokenAuth:
    """A stand-in for the auth service: the ``Session`` header names a user."""

    async def authenticate(self, request: Any, required: bool = True) -> tuple[dict, dict] | None:
        token = request.headers.get("session")
        if not token:
            if required:
                raise FlowError("missing_session_token", "A session token is required", status=401,
                                origin="session_token_error")  # fmt: skip
            return None
        if token not in USERS:
            raise FlowError("invalid_session_token", "Invalid session token", status=401, origin="session_token_error")
        return {"token": token, "userId": USERS[token]["_id"]}, USERS[token]


def write_app(folder: Path, url: str = "", endpoint: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "app.yaml").write_text(APP_YAML.format(url=url, endpoint=endpoint))
    return folder


@pytest.fixture(params=["local", "s3"])
async def services(request, tmp_path: Path):
    url = endpoint = ""
    if request.param == "s3":
        endpoint = request.getfixturevalue("s3_endpoint")
        url = f"s3://{S3_BUCKET}/api-{uuid.uuid4().hex[:8]}"
    app = load_app(write_app(tmp_path / "app", url, endpoint))
    services = open_services(app, data_dir=tmp_path / "data")
    services.auth = TokenAuth()
    services.app = app
    yield services
    await services.close()


@pytest.fixture
async def client(services) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=assemble(services.app, services))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


async def upload(
    client: httpx.AsyncClient,
    *,
    bucket: str | None = "profilePictures",
    name: str | None = "photouser-a",
    content: bytes | None = None,
    filename: str = "blob",
    media: str = "image/png",
    options: Any = CLIENT_OPTIONS,
    session: str | None = "tok-a",
) -> httpx.Response:
    params = {key: value for key, value in (("bucket", bucket), ("fileName", name)) if value is not None}
    params["options"] = options if isinstance(options, str) else json.dumps(options, separators=(",", ":"))
    # As the client writes it: encodeURIComponent, so a space is %20 (a form encoder's '+' stays a '+').
    query = "&".join(f"{key}={quote(value, safe='')}" for key, value in params.items())
    headers = {"Session": session} if session else {}
    files = {"file": (filename, png() if content is None else content, media)}
    return await client.post(f"{UPLOAD}?{query}", files=files, headers=headers)


def errors_of(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.headers["content-type"].startswith("application/json"), response.text
    body = response.json()
    assert list(body) == ["errors"] and body["errors"], body
    for item in body["errors"]:
        assert {"origin", "code", "message"} <= set(item), item
    return body["errors"]


async def nothing_stored(services) -> None:
    storage = services.storage
    for bucket in storage.buckets:
        assert await storage.list(bucket) == [], bucket
    tmp = getattr(storage.backend, "tmp", None)
    assert tmp is None or not any(tmp.glob("*"))


# --- the tutorial's profile photo -----------------------------------------------------------


async def test_the_tutorial_photo_round_trip(client, services):
    image = png(3, 2)
    response = await upload(client, content=image)
    assert response.status_code == 200, response.text
    record = response.json()
    assert record["publicPath"] == "http://testserver/_storage/profilePictures/photouser-a"
    assert {k: record[k] for k in ("bucket", "bucketId", "fileName", "size", "mimeType", "isPublic", "uploadedBy")} == {
        "bucket": "profilePictures", "bucketId": "profilePictures", "fileName": "photouser-a", "size": len(image),
        "mimeType": "image/png", "isPublic": True, "uploadedBy": "user-a"}  # fmt: skip
    assert len(record["_id"]) == 24 and record["uploadedAt"].endswith("Z")

    served = await client.get(record["publicPath"])  # anyone may read a public file: no session
    assert served.status_code == 200 and served.content == image
    assert served.headers["content-type"] == "image/png"
    assert served.headers["content-length"] == str(len(image))
    assert served.headers["accept-ranges"] == "bytes"
    assert served.headers["cache-control"] == "public, no-cache"
    assert served.headers["x-content-type-options"] == "nosniff"
    etag = served.headers["etag"]
    assert etag.startswith('"') and etag.endswith('"') and len(etag) > 2

    assert (await client.get(record["publicPath"], headers={"If-None-Match": etag})).status_code == 304
    assert (await client.get(record["publicPath"], headers={"If-None-Match": f'W/{etag}, "x"'})).status_code == 304
    assert (await client.get(record["publicPath"], headers={"If-None-Match": '"other"'})).status_code == 200

    part = await client.get(record["publicPath"], headers={"Range": "bytes=0-7"})
    assert part.status_code == 206 and part.content == image[:8]
    assert part.headers["content-range"] == f"bytes 0-7/{len(image)}"

    deleted = await client.post(DELETE, json={"fileUrl": record["publicPath"]}, headers={"Session": "tok-a"})
    assert deleted.status_code == 200 and deleted.json() is None
    gone = await client.get(record["publicPath"])
    assert gone.status_code == 404 and errors_of(gone)[0]["code"] == "file_not_found"
    await nothing_stored(services)


@pytest.mark.parametrize(
    "headers, status, body, content_range",
    [
        ({"Range": "bytes=2-4"}, 206, b"234", "bytes 2-4/10"),
        ({"Range": "bytes=7-"}, 206, b"789", "bytes 7-9/10"),
        ({"Range": "bytes=-3"}, 206, b"789", "bytes 7-9/10"),
        ({"Range": "bytes=5-500"}, 206, b"56789", "bytes 5-9/10"),
        ({"Range": "bytes=-50"}, 206, b"0123456789", "bytes 0-9/10"),
        ({"Range": "bytes=0-1,4-5"}, 200, b"0123456789", None),  # several ranges: the whole file
        ({"Range": "bytes=5-2"}, 200, b"0123456789", None),  # malformed: ignored
        ({"Range": "items=0-1"}, 200, b"0123456789", None),
        ({"Range": "bytes=0-1", "If-Range": '"stale"'}, 200, b"0123456789", None),
        ({"Range": "bytes=10-"}, 416, None, "bytes */10"),
        ({"Range": "bytes=-0"}, 416, None, "bytes */10"),
    ],
)
async def test_byte_ranges(client, headers, status, body, content_range):
    path = (await upload(client, bucket="shared", name="digits.txt", content=b"0123456789", media="text/plain")).json()
    response = await client.get(path["publicPath"], headers=headers)
    assert response.status_code == status
    assert response.headers.get("content-range") == content_range
    if status == 416:
        assert errors_of(response)[0]["code"] == "range_not_satisfiable"
    else:
        assert response.content == body and response.headers["content-length"] == str(len(body))
        assert response.headers["content-type"] == "text/plain"


async def test_if_range_with_the_current_etag_keeps_the_range(client):
    record = (await upload(client, bucket="shared", name="d.txt", content=b"0123456789", media="text/plain")).json()
    etag = (await client.head(record["publicPath"])).headers["etag"]
    response = await client.get(record["publicPath"], headers={"Range": "bytes=1-2", "If-Range": etag})
    assert response.status_code == 206 and response.content == b"12"


async def test_head_answers_headers_only(client):
    image = png()
    record = (await upload(client, content=image)).json()
    response = await client.head(record["publicPath"])
    assert response.status_code == 200 and response.content == b""
    assert response.headers["content-length"] == str(len(image)) and response.headers["content-type"] == "image/png"


# --- who may do what ------------------------------------------------------------------------


async def test_only_the_uploader_deletes_unless_the_bucket_says_any(client, services):
    mine = (await upload(client)).json()["publicPath"]
    refused = await client.post(DELETE, json={"fileUrl": mine}, headers={"Session": "tok-b"})
    assert refused.status_code == 403 and errors_of(refused)[0]["code"] == "file_not_owned"
    assert (await client.get(mine)).status_code == 200

    shared = (await upload(client, bucket="shared", name="team.png")).json()["publicPath"]
    allowed = await client.post(DELETE, json={"fileUrl": shared}, headers={"Session": "tok-b"})
    assert allowed.status_code == 200 and (await client.get(shared)).status_code == 404


async def test_a_private_file_is_served_only_to_its_uploader(client):
    record = (await upload(client, bucket="private", name="notes.txt", content=b"mine", media="text/plain")).json()
    assert record["isPublic"] is False
    url = record["publicPath"]
    anonymous = await client.get(url)
    assert anonymous.status_code == 401 and errors_of(anonymous)[0]["code"] == "missing_session_token"
    other = await client.get(url, headers={"Session": "tok-b"})
    assert other.status_code == 404 and errors_of(other)[0]["code"] == "file_not_found"
    owner = await client.get(url, headers={"Session": "tok-a"})
    assert owner.status_code == 200 and owner.content == b"mine"
    assert owner.headers["cache-control"] == "private, no-cache"
    # Someone else cannot learn it exists by trying to delete it.
    hidden = await client.post(DELETE, json={"fileUrl": url}, headers={"Session": "tok-b"})
    assert hidden.status_code == 404


async def test_a_public_bucket_file_uploaded_as_private_stays_private(client):
    record = (await upload(client, name="secret-photo", options={"isPublic": False})).json()
    assert record["isPublic"] is False
    assert (await client.get(record["publicPath"])).status_code == 401
    assert (await client.get(record["publicPath"], headers={"Session": "tok-a"})).status_code == 200


async def test_a_public_file_is_served_whatever_the_session_header_says(client):
    url = (await upload(client)).json()["publicPath"]
    assert (await client.get(url, headers={"Session": "expired-token"})).status_code == 200


async def test_without_an_auth_service_nobody_has_a_session(client, services):
    services.auth = None
    response = await upload(client)
    assert response.status_code == 401 and errors_of(response)[0]["code"] == "missing_session_token"


# --- bad uploads: a clear 4xx, nothing stored -----------------------------------------------

BAD_UPLOADS = [
    ("no session", {"session": None}, 401, "missing_session_token"),
    ("an unknown session", {"session": "tok-zzz"}, 401, "invalid_session_token"),
    ("a path as the name", {"name": "../../etc/passwd"}, 400, "invalid_file_name"),
    ("a hidden file", {"name": ".htaccess"}, 400, "invalid_file_name"),
    ("a control character", {"name": "photo\x07.png"}, 400, "invalid_file_name"),
    ("text named .png", {"name": "photo.png", "content": b"not an image", "media": "text/plain"}, 415,
     "file_type_mismatch"),
    ("text sent as image/png", {"content": b"not an image"}, 415, "file_type_mismatch"),
    ("a type the bucket refuses", {"content": b"%PDF-1.7", "media": "application/pdf"}, 415,
     "file_type_not_allowed"),
    ("an unknown bucket", {"bucket": "nope"}, 404, "bucket_not_found"),
    ("createBucket where the app forbids it", {"bucket": "avatars"}, 404, "bucket_not_found"),
    ("no bucket", {"bucket": None}, 400, "validation_error"),
    ("no name", {"name": None, "filename": ""}, 400, "invalid_file_name"),
    ("options that are not JSON", {"options": "{createBucket"}, 400, "invalid_options"),
]  # fmt: skip


@pytest.mark.parametrize("case, request_, status, code", BAD_UPLOADS, ids=[case[0] for case in BAD_UPLOADS])
async def test_bad_uploads(client, services, case, request_, status, code):
    response = await upload(client, **request_)
    assert response.status_code == status, response.text
    assert errors_of(response)[0]["code"] == code
    await nothing_stored(services)


async def test_a_body_that_is_not_multipart(client, services):
    response = await client.post(UPLOAD, params={"bucket": "shared", "fileName": "a"}, json={"file": "x"},
                                 headers={"Session": "tok-a"})  # fmt: skip
    assert response.status_code == 415 and errors_of(response)[0]["code"] == "unsupported_media_type"
    no_file = await client.post(UPLOAD, params={"bucket": "shared", "fileName": "a"}, data={"other": "x"},
                                files={"notfile": ("a", b"x")}, headers={"Session": "tok-a"})  # fmt: skip
    assert no_file.status_code == 400 and errors_of(no_file)[0]["details"] == {"field": "file"}
    await nothing_stored(services)


def multipart(stream: Any, filename: str = "huge.png", media: str = "image/png") -> tuple[dict, Any]:
    """A multipart body around ``stream``, sent as it is produced (no Content-Length)."""
    boundary = "flowengine-test-boundary"

    async def body() -> AsyncIterator[bytes]:
        yield (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
               f"Content-Type: {media}\r\n\r\n").encode()  # fmt: skip
        async for chunk in stream:
            yield chunk
        yield f"\r\n--{boundary}--\r\n".encode()

    return {"Content-Type": f"multipart/form-data; boundary={boundary}", "Session": "tok-a"}, body()


async def test_too_large_is_refused_before_the_body_is_read(client, services):
    stream = Pulled(200 * 1024 * 1024, head=png())
    headers, body = multipart(stream)
    params = {"bucket": "profilePictures", "fileName": "huge.png"}
    response = await client.post(UPLOAD, params=params, headers=headers, content=body)
    assert response.status_code == 413 and errors_of(response)[0]["code"] == "file_too_large"
    assert errors_of(response)[0]["details"] == {"limit": 5242880}
    assert stream.pulled <= 5242880 + 64 * 1024, stream.pulled
    await nothing_stored(services)


async def test_a_body_cut_short_stores_nothing(client, services):
    boundary = "cut"
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n'
            f"Content-Type: image/png\r\n\r\n").encode() + png()  # fmt: skip
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}", "Session": "tok-a"}
    response = await client.post(UPLOAD, params={"bucket": "profilePictures", "fileName": "a.png"},
                                 headers=headers, content=body)  # fmt: skip
    assert response.status_code == 400 and errors_of(response)[0]["code"] == "invalid_multipart"
    await nothing_stored(services)


@pytest.mark.parametrize(
    "body, status, code",
    [
        ({"fileUrl": "http://testserver/_storage/profilePictures/nothing-here"}, 404, "file_not_found"),
        ({"fileUrl": "/blankPhoto.jpeg"}, 400, "invalid_file_url"),
        ({"fileUrl": "http://testserver/_storage/nope/a.png"}, 404, "bucket_not_found"),
        ({"fileUrl": "http://testserver/_storage/profilePictures/..%2F..%2Fetc%2Fpasswd"}, 400, "invalid_file_name"),
        ({}, 400, "validation_error"),
        (None, 400, "validation_error"),
    ],
)
async def test_bad_deletes(client, body, status, code):
    response = await client.post(DELETE, json=body, headers={"Session": "tok-a"})
    assert response.status_code == status and errors_of(response)[0]["code"] == code


async def test_delete_needs_a_session(client):
    url = (await upload(client)).json()["publicPath"]
    response = await client.post(DELETE, json={"fileUrl": url})
    assert response.status_code == 401 and errors_of(response)[0]["code"] == "missing_session_token"
    assert (await client.get(url)).status_code == 200


@pytest.mark.parametrize(
    "path, status, code",
    [
        ("/_storage/nope/a.png", 404, "bucket_not_found"),
        ("/_storage/profilePictures/missing.png", 404, "file_not_found"),
        ("/_storage/profilePictures/.meta", 400, "invalid_file_name"),
        ("/_storage/profilePictures/..%2F..%2Fapp.yaml", 404, "not_found"),  # decoded '/': no route matches
        ("/_storage/private/anything", 401, "missing_session_token"),
    ],
)
async def test_serving_refusals(client, path, status, code):
    response = await client.get(path)
    assert response.status_code == status and errors_of(response)[0]["code"] == code


async def test_names_with_spaces_and_accents_round_trip(client):
    record = (await upload(client, bucket="shared", name="été photo (1).png")).json()
    assert record["publicPath"].endswith("/_storage/shared/%C3%A9t%C3%A9%20photo%20%281%29.png")
    assert (await client.get(record["publicPath"])).content == png()


async def test_a_taken_name_gets_a_fresh_url(client):
    first = (await upload(client)).json()
    second = (await upload(client, content=png(4, 4))).json()
    assert second["publicPath"] != first["publicPath"] and second["fileName"].startswith("photouser-a-")
    assert (await client.get(first["publicPath"])).content == png()
    assert (await client.get(second["publicPath"])).content == png(4, 4)


# --- a real server: memory stays flat under a 200 MB upload ---------------------------------

SERVER = """
import sys
import uvicorn
from flowengine.errors import FlowError
from flowengine.runtime import assemble, open_services
from flowengine.spec.app import load_app

class Auth:
    async def authenticate(self, request, required=True):
        if request.headers.get("session") != "tok-a":
            raise FlowError("missing_session_token", "A session token is required", status=401)
        return {"token": "tok-a"}, {"_id": "user-a"}

app = load_app(sys.argv[1])
services = open_services(app)
services.auth = Auth()
uvicorn.run(assemble(app, services), host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _rss(pid: int) -> int:
    """Resident memory of ``pid`` in bytes (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


class Peak:
    """Samples a process's RSS every 10 ms while in use; ``peak`` is the highest seen."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self._stop = pid, _rss(pid), threading.Event()

    def __enter__(self) -> Peak:
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, _rss(self.pid))

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, int]]:
    app = write_app(tmp_path / "app")
    script = tmp_path / "serve.py"
    script.write_text(textwrap.dedent(SERVER))
    port = _free_port()
    process = subprocess.Popen([sys.executable, str(script), str(app), str(port)], env={**os.environ})
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(base + "/openapi.json", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            pytest.fail("the server did not start within 30s")
        yield base, process.pid
    finally:
        process.terminate()
        process.wait(timeout=10)


def _body(size: int, head: bytes = b"") -> Iterator[bytes]:
    boundary = "rss"
    yield (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\n'
           "Content-Type: application/octet-stream\r\n\r\n").encode() + head  # fmt: skip
    block = bytes(1024 * 1024)
    for _ in range(size // len(block)):
        yield block
    yield f"\r\n--{boundary}--\r\n".encode()


@pytest.mark.anyio(False)
def test_a_200_mb_upload_keeps_server_memory_flat(server, capsys):
    base, pid = server
    headers = {"Content-Type": "multipart/form-data; boundary=rss", "Session": "tok-a"}
    size = 200 * 1024 * 1024
    with httpx.Client(base_url=base, headers=headers, timeout=120) as client:
        warm = client.post(UPLOAD, params={"bucket": "big", "fileName": "warm.bin"}, content=_body(1024 * 1024))
        assert warm.status_code == 200, warm.text
        before = _rss(pid)
        with Peak(pid) as accepted:
            response = client.post(UPLOAD, params={"bucket": "big", "fileName": "big.bin"}, content=_body(size))
        assert response.status_code == 200, response.text
        assert response.json()["size"] == size
        served = client.head(response.json()["publicPath"])
        assert served.headers["content-length"] == str(size)

        with Peak(pid) as refused:
            try:
                answer = client.post(UPLOAD, params={"bucket": "profilePictures", "fileName": "big.png"},
                                     content=_body(size, head=png()))  # fmt: skip
                assert answer.status_code == 413, answer.text
                outcome = "answered 413"
            except httpx.TransportError:  # the server answered 413 and closed while the client still sent
                outcome = "closed the connection"
    grown, grown_refused = accepted.peak - before, refused.peak - before
    with capsys.disabled():
        print(f"\nserver RSS: {before / 2**20:.1f} MB before; +{grown / 2**20:.1f} MB peak during a 200 MB upload "
              f"(stored), +{grown_refused / 2**20:.1f} MB during a 200 MB upload refused at 5 MB ({outcome})")  # fmt: skip
    assert grown < 30 * 2**20 and grown_refused < 30 * 2**20
