"""nodes/storage.py: the file node types, alone and inside a flow served over HTTP."""

from __future__ import annotations

import base64
from pathlib import Path

import httpx
import pytest
from flowengine_nodes.storage import delete_file, file_url, get_file, store_file
from test_storage import png
from test_storage_api import TokenAuth

from flowengine.errors import FlowError
from flowengine.registry import Registry
from flowengine.runtime import assemble, open_services
from flowengine.spec.app import load_app
from flowengine.storage.local import LocalBackend
from flowengine.storage.service import Bucket, Storage
from flowengine.testing import harness_services, run_node

pytestmark = pytest.mark.anyio

USER = {"user": {"_id": "user-a"}}


@pytest.fixture
def services(tmp_path: Path):
    buckets = {"docs": Bucket("docs"), "pictures": Bucket("pictures", public=True, types=frozenset({"image/*"}))}
    return harness_services(storage=Storage(LocalBackend(tmp_path / "files"), buckets))


def test_the_module_declares_the_four_file_types():
    registry = Registry()
    registry.add_module("flowengine_nodes.storage")
    assert registry.names() == ["delete-file", "file-url", "get-file", "store-file"]
    assert registry.get("get-file").outputs == ("found", "not_found")
    assert registry.get("store-file").params["name"].kind == "template"
    assert registry.get("store-file").params["content"].kind == "expression"
    assert registry.get("get-file").params["read"].default == "none"


async def test_store_text_then_read_it_back(services):
    output, record = await run_node(store_file, {"bucket": "docs", "name": "note-{{ user._id }}.txt",
                                                 "content": "'hello ' + user._id"}, services=services, scope=USER)  # fmt: skip
    assert output == "next"
    assert (record["fileName"], record["mimeType"], record["size"], record["uploadedBy"]) == (
        "note-user-a.txt", "text/plain", 12, "user-a")  # fmt: skip
    assert record["publicPath"] == "/_storage/docs/note-user-a.txt"  # no base_url set: a path
    found = await run_node(get_file, {"file": "url", "read": "text"}, services=services,
                           scope={"url": record["publicPath"]})  # fmt: skip
    assert found[0] == "found" and found[1]["content"] == "hello user-a" and found[1]["_id"] == record["_id"]


async def test_store_base64_and_file_records(services):
    image = png()
    scope = {"b64": base64.b64encode(image).decode(), "upload": {"content": image, "mimeType": "image/png"}}
    _, first = await run_node(store_file, {"bucket": "pictures", "name": "a", "content": "b64", "encoding": "base64"},
                              services=services, scope=scope)  # fmt: skip
    _, second = await run_node(store_file, {"bucket": "pictures", "name": "b", "content": "upload"},
                               services=services, scope=scope)  # fmt: skip
    assert first["mimeType"] == second["mimeType"] == "image/png" and first["uploadedBy"] is None
    output, read = await run_node(get_file, {"file": "record", "read": "base64"}, services=services,
                                  scope={"record": second})  # fmt: skip
    assert output == "found" and base64.b64decode(read["content"]) == image


@pytest.mark.parametrize(
    "params, scope, status, code",
    [
        ({"name": "../../etc/passwd", "content": "'x'"}, {}, 400, "invalid_file_name"),
        ({"name": "x.png", "content": "'not a png'", "bucket": "pictures"}, {}, 415, "file_type_mismatch"),
        ({"name": "x", "content": "'text'", "bucket": "pictures"}, {}, 415, "file_type_not_allowed"),
        ({"name": "x", "content": "'%%%'", "encoding": "base64"}, {}, 400, "invalid_file_content"),
        ({"name": "x", "content": "42"}, {}, 400, "invalid_file_content"),
        ({"name": "x", "content": "'x'", "bucket": "nope"}, {}, 404, "bucket_not_found"),
    ],
)
async def test_store_refusals(services, params, scope, status, code):
    with pytest.raises(FlowError) as caught:
        await run_node(store_file, {"bucket": "docs", **params}, services=services, scope=scope)
    assert (caught.value.status, caught.value.code) == (status, code)
    assert await services.storage.list("docs") == [] and await services.storage.list("pictures") == []


async def test_get_file_not_found_and_not_text(services):
    assert await run_node(get_file, {"file": "'/_storage/docs/missing'"}, services=services) == ("not_found", None)
    assert await run_node(get_file, {"file": "null"}, services=services) == ("not_found", None)
    await services.storage.put("docs", "blob.bin", b"\xff\xfe\x00")
    with pytest.raises(FlowError, match="base64"):
        await run_node(get_file, {"file": "'/_storage/docs/blob.bin'", "read": "text"}, services=services)
    with pytest.raises(FlowError) as caught:
        await run_node(get_file, {"file": "'/elsewhere/a.png'"}, services=services)
    assert caught.value.code == "invalid_file_url"


async def test_delete_file_then_it_is_gone(services):
    _, record = await run_node(store_file, {"bucket": "docs", "name": "a.txt", "content": "'x'"}, services=services)
    assert await run_node(delete_file, {"file": "record"}, services=services, scope={"record": record}) == (
        "next",
        True,
    )
    assert await run_node(delete_file, {"file": "url"}, services=services,
                          scope={"url": record["publicPath"]}) == ("next", False)  # fmt: skip
    assert await run_node(delete_file, {"file": "null"}, services=services) == ("next", False)
    assert await services.storage.stat("docs", "a.txt") is None


async def test_file_url(services):
    assert await run_node(file_url, {"bucket": "docs", "name": "a b.txt"}, services=services) == (
        "next", "/_storage/docs/a%20b.txt")  # fmt: skip
    services.storage.base_url = "https://api.example.com"
    assert (await run_node(file_url, {"bucket": "docs", "name": "x"}, services=services))[1] == (
        "https://api.example.com/_storage/docs/x")  # fmt: skip
    with pytest.raises(FlowError, match="No bucket 'nope'"):
        await run_node(file_url, {"bucket": "nope", "name": "x"}, services=services)


# --- in a flow, over HTTP -------------------------------------------------------------------

APP = """
name: avatar-demo
node_modules: [flowengine_nodes.storage]
storage:
  base_url: https://api.example.com
  buckets:
    avatars: { public: true, types: [image/png, image/jpeg], max_bytes: 65536 }
"""
SET_AVATAR = """
service: setAvatar
endpoints:
  - { method: POST, path: /avatar, session: required }
inputs:
  body:
    image: { type: text, required: true }
start: store
nodes:
  store:
    type: store-file
    bucket: avatars
    name: "avatar-{{ user._id }}.png"
    content: params.body.image
    encoding: base64
    next: done
  done:
    type: return-success
    body: store
"""
REMOVE_AVATAR = """
service: removeAvatar
endpoints:
  - { method: POST, path: /avatar/remove, session: required }
inputs:
  body:
    url: { type: text, required: true }
start: find
nodes:
  find:
    type: get-file
    file: params.body.url
    found: remove
    not_found: missing
  remove:
    type: delete-file
    file: find
    next: done
  missing:
    type: return-error
    status: 404
    code: no_avatar
    message: "No avatar at {{ params.body.url }}"
  done:
    type: return-success
    body: { deleted: remove }
"""


@pytest.fixture
async def client(tmp_path: Path):
    (tmp_path / "flows").mkdir()
    (tmp_path / "app.yaml").write_text(APP)
    (tmp_path / "flows" / "set-avatar.yaml").write_text(SET_AVATAR)
    (tmp_path / "flows" / "remove-avatar.yaml").write_text(REMOVE_AVATAR)
    app = load_app(tmp_path)
    services = open_services(app, data_dir=tmp_path / "data")
    services.auth = TokenAuth()
    transport = httpx.ASGITransport(app=assemble(app, services))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver", headers={"Session": "tok-a"}) as c:
        yield c
    await services.close()


async def test_a_flow_stores_serves_and_deletes_an_avatar(client):
    image = png(5, 5)
    stored = await client.post("/avatar", json={"image": base64.b64encode(image).decode()})
    assert stored.status_code == 200, stored.text
    record = stored.json()
    assert record["publicPath"] == "https://api.example.com/_storage/avatars/avatar-user-a.png"
    assert record["uploadedBy"] == "user-a"
    path = "/_storage/avatars/avatar-user-a.png"
    served = await client.get(path)
    assert served.content == image and served.headers["content-type"] == "image/png"

    removed = await client.post("/avatar/remove", json={"url": record["publicPath"]})
    assert removed.status_code == 200 and removed.json() == {"deleted": True}
    assert (await client.get(path)).status_code == 404
    again = await client.post("/avatar/remove", json={"url": record["publicPath"]})
    assert again.status_code == 404 and again.json()["errors"][0]["code"] == "no_avatar"


async def test_a_flow_passes_the_storage_refusal_to_the_client(client):
    text = base64.b64encode(b"definitely not a png").decode()
    response = await client.post("/avatar", json={"image": text})
    assert response.status_code == 415 and response.json()["errors"][0]["code"] == "file_type_mismatch"
    too_big = base64.b64encode(png() + bytes(70000)).decode()
    response = await client.post("/avatar", json={"image": too_big})
    assert response.status_code == 413 and response.json()["errors"][0]["code"] == "file_too_large"
