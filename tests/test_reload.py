"""flowengine.reload: the app is rebuilt on every good edit and swapped in while it serves.

The first tests drive a ``Reloader`` in-process and reload by hand; the last one runs
``flowengine serve --reload`` as a real server process while a client loops on an endpoint
and the test edits the flow file under it.
"""

from __future__ import annotations

import asyncio
import io
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import AsyncIterator

import httpx
import pytest

from flowengine.errors import SpecErrors
from flowengine.reload import Reloader

pytestmark = pytest.mark.anyio

HELLO = """\
service: hello
endpoints: [{{ method: GET, path: /hello }}]
start: {start}
nodes:
  nap: {{ type: nap, next: answer }}
  answer: {{ type: return-success, body: {{ version: {version} }} }}
"""


def write_flow(app: Path, version: object, start: str = "nap", text: str | None = None) -> None:
    """Replace the flow file as an editor saves: a new file moved over the old one."""
    path = app / "flows" / "hello.yaml"
    temporary = path.with_suffix(".tmp")
    temporary.write_text(text if text is not None else HELLO.format(version=version, start=start))
    os.replace(temporary, path)


@pytest.fixture
def app(tmp_path: Path) -> Path:
    folder = tmp_path / "app"
    (folder / "flows").mkdir(parents=True)
    (folder / "app.yaml").write_text(f"name: reload-demo\nnode_modules: [{_module_name(tmp_path)}]\n")
    _write_module(folder, tmp_path, "'slept'")
    write_flow(folder, 1)
    return folder


def _module_name(tmp_path: Path) -> str:
    return f"reload_nodes_{abs(hash(tmp_path.name)) % 10**8}"  # one module name per test app


def _write_module(folder: Path, tmp_path: Path, result: str) -> None:
    (folder / f"{_module_name(tmp_path)}.py").write_text(
        "import asyncio\nfrom flowengine.registry import Param, node_type\n\n"
        '@node_type("nap", params={"seconds": Param.literal({"type": "number"}, default=0.0)})\n'
        "async def nap(ctx, params):\n"
        '    """Wait (a request in flight), then pass a result on."""\n'
        '    await asyncio.sleep(params["seconds"])\n'
        f"    return 'next', {result}\n"
    )


@pytest.fixture
async def reloader(app: Path) -> AsyncIterator[Reloader]:
    reloader = Reloader(app, dev=False, out=io.StringIO())
    await reloader.startup(watch=False)
    try:
        yield reloader
    finally:
        await reloader.shutdown()


def client(reloader: Reloader) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=reloader), base_url="http://test")


async def version(http: httpx.AsyncClient) -> int:
    response = await http.get("/hello")
    assert response.status_code == 200
    return response.json()["version"]


# --- swapping in-process -----------------------------------------------------------------


async def test_a_good_edit_is_served_after_reload(app, reloader):
    async with client(reloader) as http:
        assert await version(http) == 1
        write_flow(app, 2)
        assert await reloader.reload()
        assert await version(http) == 2
    assert "flowengine: reloaded: 1 flows" in reloader.out.getvalue()


async def test_a_request_in_flight_finishes_on_the_build_it_started_on(app, reloader):
    write_flow(app, 1, text=HELLO.format(version=1, start="nap").replace("type: nap,", "type: nap, seconds: 0.5,"))
    assert await reloader.reload()
    async with client(reloader) as http:
        in_flight = asyncio.create_task(version(http))
        await asyncio.sleep(0.1)  # the request is inside the nap node now
        write_flow(app, 2)
        assert await reloader.reload()
        assert await version(http) == 2
        assert await in_flight == 1


async def test_a_broken_edit_keeps_the_old_app_and_prints_the_problems(app, reloader):
    async with client(reloader) as http:
        write_flow(app, 2, start="answr")
        assert not await reloader.reload()
        assert await version(http) == 1
    assert reloader.out.getvalue() == (
        "flows/hello.yaml:3:8: 'start' goes to unknown node 'answr' (did you mean 'answer'?)\n"
        "Error: 1 problem found\n"
        "flowengine: the edit above does not load; still serving the previous version\n"
    )


async def test_services_carry_over_while_their_settings_are_unchanged(app, reloader):
    first = reloader.current.services
    (app / "app.yaml").write_text((app / "app.yaml").read_text() + "env: { greeting: hi }\n")
    assert await reloader.reload()
    assert reloader.current.services.cache is first.cache
    assert reloader.current.services.settings["env"] == {"greeting": "hi"}
    assert reloader.current.services.flows is reloader.current.app.flows


async def test_changed_service_settings_open_new_services_and_close_the_old_ones(app, reloader):
    first = reloader.current.services
    await first.cache.set("kept", 1)
    (app / "app.yaml").write_text((app / "app.yaml").read_text() + "sms: { keep: 5 }\n")
    assert await reloader.reload()
    assert reloader.current.services.cache is not first.cache
    assert reloader.current.services.sms.keep == 5
    await asyncio.sleep(0.2)  # retired once idle
    assert not reloader._retiring


async def test_an_edited_node_module_is_imported_afresh(app, tmp_path, reloader):
    async with client(reloader) as http:
        write_flow(app, "nap")
        assert await reloader.reload()
        assert await version(http) == "slept"
        _write_module(app, tmp_path, "'rested'")
        assert await reloader.reload()
        assert await version(http) == "rested"


def test_a_broken_app_at_start_up_raises_its_problems(app):
    write_flow(app, 1, text="service: hello\n")
    with pytest.raises(SpecErrors):
        Reloader(app)


# --- flowengine serve --reload, for real -------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Looper(threading.Thread):
    """A client asking for /hello in a loop, keeping every answer and failure with its time."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.answers: list[tuple[float, int]] = []
        self.failures: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=5) as http:
            while not self.stop.is_set():
                try:
                    response = http.get(self.url)
                    if response.status_code == 200:
                        self.answers.append((time.monotonic(), response.json()["version"]))
                    else:
                        self.failures.append(f"{response.status_code} {response.text}")
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))

    def first_time_of(self, wanted: int, after: float, within: float) -> float | None:
        deadline = after + within
        while time.monotonic() < deadline + 0.5:
            for moment, seen in list(self.answers):
                if moment >= after and seen == wanted:
                    return moment
            time.sleep(0.02)
        return None


def test_serve_reload_swaps_the_app_under_a_looping_client(app, tmp_path):
    write_flow(app, 1)
    port = _free_port()
    log = tmp_path / "server.log"  # a file, not a pipe: a full pipe would stall the server's logging
    server = subprocess.Popen(
        [sys.executable, "-m", "flowengine.cli", "serve", str(app), "--reload", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=log.open("w"),
    )
    looper = Looper(f"http://127.0.0.1:{port}/hello")
    looper.stop.set()  # until started
    try:
        _wait_until_up(port, server)
        looper.stop.clear()
        looper.start()
        time.sleep(0.5)
        edited = time.monotonic()
        write_flow(app, 2)
        seen = looper.first_time_of(2, after=edited, within=2.0)
        assert seen is not None and seen - edited < 2.0, "the new answer did not appear within 2 s"
        print(f"\nthe edited flow answered {seen - edited:.2f} s after the edit")

        broken = time.monotonic()
        write_flow(app, 3, start="answr")
        time.sleep(1.5)
        after_broken = [v for moment, v in looper.answers if moment > broken]
        assert after_broken and set(after_broken) == {2}
    finally:
        looper.stop.set()
        if looper.is_alive():
            looper.join(10)
        server.terminate()
        server.wait(15)
    err = log.read_text()
    assert looper.failures == []
    assert len(looper.answers) > 20
    assert "flows/hello.yaml:3:8: 'start' goes to unknown node 'answr' (did you mean 'answer'?)\nError: 1 problem found\n" in err
    assert "still serving the previous version" in err


def _wait_until_up(port: int, server: subprocess.Popen) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert server.poll() is None, "the server exited"
        try:
            if httpx.get(f"http://127.0.0.1:{port}/hello", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise AssertionError("the server did not start within 20 s")


@pytest.mark.parametrize("reload", [False, True], ids=["serve", "serve-reload"])
def test_serve_answers_503_beyond_its_connection_limit(app, tmp_path, reload):
    (app / "app.yaml").write_text((app / "app.yaml").read_text() + "limits: { connections: 3 }\n")
    write_flow(app, 1)
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "flowengine.cli", "serve", str(app), "--port", str(port), *(["--reload"] if reload else [])],
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "server.log").open("w"),
    )
    idle: list[socket.socket] = []
    try:
        _wait_until_up(port, server)
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]  # open, saying nothing
        time.sleep(0.3)
        assert httpx.get(f"http://127.0.0.1:{port}/hello", timeout=5).status_code == 503
        for sock in idle:
            sock.close()
        time.sleep(0.3)
        assert httpx.get(f"http://127.0.0.1:{port}/hello", timeout=5).status_code == 200
    finally:
        for sock in idle:
            sock.close()
        server.terminate()
        server.wait(15)
