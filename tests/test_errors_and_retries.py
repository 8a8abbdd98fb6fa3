"""The flow language's error model, retries and timeouts, through HTTP (issue #7, items 1 and 2).

Every test drives the app in tests/apps/flowlang through Starlette's whole stack; the node
that sleeps past its timeout does it on a real uvicorn server while 100 other requests run.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import socket
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import AsyncIterator, Iterator

import httpx
import pytest
import uvicorn

from flowengine.runtime import build

from conftest import app_client

pytestmark = pytest.mark.anyio

APP = Path(__file__).parent / "apps" / "flowlang"


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(APP) as http:
        yield http


def nodes_module():
    """The app's test node types (imported by loading the app)."""
    return sys.modules["flowlang_nodes"]


# --- 1. one error model ------------------------------------------------------------------


async def test_an_error_edge_reads_the_error_code_message_and_node(client):
    response = await client.get("/errors/edge", params={"item": "tea"})
    assert response.status_code == 200
    assert response.json() == {
        "code": "out_of_stock",
        "message": "No more tea",
        "node": "reserve",
        "status": 409,
        "reserve": None,  # a failed node's result is null
    }


async def test_an_unwired_error_goes_to_the_flows_on_error_node(client):
    response = await client.get("/errors/handler")
    assert response.status_code == 503
    assert response.json() == {
        "errors": [
            {
                "origin": "server_error",
                "code": "handled",
                "message": "reserve failed with out_of_stock: Sold out",
                "details": {"ready": True},  # the handler still sees earlier results
            }
        ]
    }


async def test_a_crash_with_nowhere_to_go_answers_json_500_with_an_error_id(client, caplog):
    response = await client.get("/errors/crash")
    assert response.status_code == 500
    [error] = response.json()["errors"]
    assert error["code"] == "internal_error"
    assert error["origin"] == "server_error"
    error_id = error["details"]["errorId"]
    assert error["message"] == f"An internal error occurred (error id {error_id})"
    assert nodes_module().SECRET not in response.text
    assert error_id in caplog.text  # the log has the details, under the same id


async def test_an_unwired_flow_error_answers_its_own_status_in_the_altogic_shape(client):
    response = await client.get("/errors/unwired")
    assert response.status_code == 409
    assert response.json() == {"errors": [{"origin": "client_error", "code": "out_of_stock", "message": "Sold out"}]}


@pytest.mark.parametrize(
    "status, item",
    [
        (400, {"origin": "client_error", "code": "bad_request", "message": "Bad"}),
        (404, {"origin": "client_error", "code": "no_such_thing", "message": "No 404"}),
        (418, {"origin": "client_error", "code": "teapot", "message": "I'm a teapot", "details": {"brew": "tea"}}),
        (422, {"origin": "client_error", "code": "unprocessable", "message": "Cannot"}),
        (503, {"origin": "server_error", "code": "server_error", "message": "Later"}),
        (599, {"origin": "server_error", "code": "odd", "message": "Odd"}),
    ],
)
async def test_return_error_answers_any_4xx_or_5xx(client, status, item):
    response = await client.get("/errors/status", params={"status": status})
    assert response.status_code == status
    assert response.json() == {"errors": [item]}


# --- 2. retries --------------------------------------------------------------------------


def _gaps(key: str) -> list[float]:
    times = nodes_module().CALLS[key]
    return [later - earlier for earlier, later in zip(times, times[1:])]


async def test_a_retried_node_succeeds_on_its_third_attempt_after_doubling_backoff(client):
    key = uuid.uuid4().hex
    response = await client.get("/retry/recovers", params={"key": key})
    assert response.status_code == 200
    assert response.json() == {"attempt": 3}
    first, second = _gaps(key)
    assert 0.1 <= first < 1.0  # backoff: 100ms
    assert 0.2 <= second < 1.1  # doubled


async def test_backoff_stops_growing_at_max_delay(client):
    key = uuid.uuid4().hex
    response = await client.get("/retry/capped", params={"key": key})
    assert response.json() == {"attempt": 4}
    gaps = _gaps(key)
    assert len(gaps) == 3
    assert 0.1 <= gaps[0] and 0.15 <= gaps[1] and 0.15 <= gaps[2]
    assert gaps[2] < 0.2 + 0.5  # capped at 150ms, not doubled to 400ms (with room for a slow machine)


async def test_when_every_attempt_fails_the_last_error_takes_the_error_edge(client):
    key = uuid.uuid4().hex
    response = await client.get("/retry/exhausted", params={"key": key})
    assert response.status_code == 503
    assert response.json()["errors"][0] == {"origin": "server_error", "code": "gave_up", "message": "attempt 3 failed"}
    assert len(nodes_module().CALLS[key]) == 3


async def test_a_client_error_is_not_retried(client):
    key = uuid.uuid4().hex
    response = await client.get("/retry/client-error", params={"key": key})
    assert response.status_code == 404
    assert len(nodes_module().CALLS[key]) == 1


# --- 2. timeouts -------------------------------------------------------------------------


@contextlib.contextmanager
def serving(asgi) -> Iterator[str]:
    """Serve ``asgi`` with a real uvicorn server on a free port, in a thread; yield its URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(asgi, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.01)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


async def _timed(http: httpx.AsyncClient, url: str, **params) -> tuple[httpx.Response, float, float]:
    began = time.perf_counter()
    response = await http.get(url, params=params)
    ended = time.perf_counter()
    return response, ended - began, ended


async def test_a_node_past_its_timeout_takes_its_error_path_while_100_other_requests_are_served():
    with serving(build(APP)) as url:
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as http:
            await http.get("/fast", params={"n": 0})  # warm up
            slow = asyncio.create_task(_timed(http, "/slow-node"))
            fast = await asyncio.gather(*(_timed(http, "/fast", n=n) for n in range(100)))
            slow_response, slow_seconds, slow_done = await slow

    assert slow_response.status_code == 200
    assert slow_response.json() == {
        "timedOut": True,
        "code": "node_timeout",
        "message": "Node 'nap' took longer than 1s",
        "node": "nap",
    }
    assert 0.95 <= slow_seconds < 3.0  # ≈1 s: the node's timeout, not its 10 s sleep
    assert [response.json() for response, _, _ in fast] == [{"n": n, "double": 2 * n} for n in range(100)]
    assert max(done for _, _, done in fast) < slow_done  # none of them waited for the slow node
    latencies = sorted(seconds for _, seconds, _ in fast)
    p99 = latencies[math.ceil(0.99 * len(latencies)) - 1]
    print(f"\n100 requests beside a 1 s node timeout: p50 {latencies[49] * 1000:.1f} ms, "
          f"p99 {p99 * 1000:.1f} ms; the slow node answered after {slow_seconds:.2f} s")  # fmt: skip


async def test_a_flow_past_its_endpoint_time_limit_answers_504_json(client):
    began = time.perf_counter()
    response = await client.get("/overrun")
    assert time.perf_counter() - began < 3.0  # the limit is 0.5 s; the flow would sleep 5 s
    assert response.status_code == 504
    assert response.json() == {
        "errors": [{"origin": "server_error", "code": "timeout", "message": "The endpoint did not answer within 0.5s"}]
    }


# --- the step limit ---------------------------------------------------------------------


async def test_the_step_limit_ends_a_loop_in_the_graph(client):
    response = await client.get("/spin")
    assert response.status_code == 500
    assert response.json()["errors"][0] == {
        "origin": "server_error",
        "code": "step_limit_exceeded",
        "message": "The flow ran more than 200 steps",
    }
