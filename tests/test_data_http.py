"""Issue #3 over HTTP: concurrent create-object runs through a real server, on both databases.

``tests/apps/data_http`` (a ``notes`` model with a unique title, a create flow and a list
flow) is copied to a temporary folder, built as the server builds it (``runtime.build``) and
served by uvicorn on a free loopback port, in a thread. Its ``database.url`` is
``${DATA_HTTP_DATABASE_URL}``: empty for SQLite in the copy's ``data/``, or the test
PostgreSQL. app.yaml has no schema setting, so on PostgreSQL the URL carries libpq's
``options=-csearch_path=<schema>``: every table lands in a schema made for the test and
dropped after it.
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import psycopg
import pytest
import uvicorn

from flowengine.runtime import build

pytestmark = pytest.mark.anyio

APP = Path(__file__).parent / "apps" / "data_http"
URL_VARIABLE = "DATA_HTTP_DATABASE_URL"


def serve(app_dir: Path) -> tuple[uvicorn.Server, threading.Thread, str]:
    """The app served by uvicorn on a free loopback port in a thread; its base URL."""
    server = uvicorn.Server(uvicorn.Config(build(app_dir), host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, name=f"uvicorn {app_dir.name}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the server for {app_dir} did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    return server, thread, f"http://127.0.0.1:{port}"


@pytest.fixture(params=["sqlite", "postgresql"])
def base_url(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A served copy of the app on SQLite or on a fresh PostgreSQL schema."""
    database, schema = "", None
    if request.param == "postgresql":
        url = request.getfixturevalue("postgres_url").replace("+psycopg", "")
        schema = f"fe_http_{secrets.token_hex(6)}"
        with psycopg.connect(url, autocommit=True) as connection:
            connection.execute(f'CREATE SCHEMA "{schema}"')
        database = f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{schema}"
    monkeypatch.setenv(URL_VARIABLE, database)
    app_dir = shutil.copytree(APP, tmp_path / "app")
    try:
        server, thread, base = serve(app_dir)
        try:
            yield base
        finally:
            server.should_exit = True
            thread.join(10)
    finally:
        if schema:
            with psycopg.connect(url, autocommit=True) as connection:
                connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


async def notes(http: httpx.AsyncClient) -> dict[str, Any]:
    response = await http.get("/notes")
    assert response.status_code == 200, response.text
    return response.json()


async def test_100_concurrent_creates_store_100_notes(base_url: str) -> None:
    titles = [f"note {i:03}" for i in range(100)]
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        posts = (http.post("/notes", json={"title": t, "text": f"text of {t}"}) for t in titles)
        replies = await asyncio.gather(*posts)
        troubles = [(r.status_code, r.text) for r in replies if r.status_code != 200 or "locked" in r.text]
        assert troubles == [], troubles[:3]
        created = [r.json() for r in replies]
        assert [c["title"] for c in created] == titles
        assert len({c["_id"] for c in created}) == 100

        stored = await notes(http)
    assert stored["count"] == 100
    assert {(n["_id"], n["title"], n["text"]) for n in stored["notes"]} == {
        (c["_id"], c["title"], f"text of {c['title']}") for c in created
    }


async def test_a_taken_title_is_a_409_naming_the_field_and_stores_nothing(base_url: str) -> None:
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        first = await http.post("/notes", json={"title": "groceries", "text": "milk"})
        assert first.status_code == 200, first.text
        before = await notes(http)

        clash = await http.post("/notes", json={"title": "groceries", "text": "eggs"})
        assert clash.status_code == 409
        assert clash.headers["content-type"].startswith("application/json")
        (error,) = clash.json()["errors"]
        assert (error["code"], error["details"]["field"]) == ("unique_violation", "title")
        assert "title" in error["message"] and "Traceback" not in clash.text

        assert await notes(http) == before
    assert before["count"] == 1 and before["notes"][0]["text"] == "milk"
