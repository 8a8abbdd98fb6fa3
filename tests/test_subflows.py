"""Sub-flows and loops, through HTTP (issue #7, items 3 and 4).

A ``call`` node runs another service with explicit inputs and continues with its answer; the
callee sees only those inputs; a service may have no endpoint; recursion is bounded. A
``for-each`` node runs a service per item, at most ``concurrency`` at once, results in order.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import AsyncIterator

import httpx
import pytest

from flowengine.cli import main
from flowengine.errors import SpecErrors
from flowengine.runtime import build
from flowengine.spec.app import load_app

from conftest import app_client

pytestmark = pytest.mark.anyio

APP = Path(__file__).parent / "apps" / "flowlang"


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(APP) as http:
        yield http


# --- call --------------------------------------------------------------------------------


async def test_call_runs_a_service_with_explicit_inputs_and_continues_with_its_result(client):
    response = await client.get("/call/greet", params={"name": "Ada"})
    assert response.status_code == 200
    assert response.json() == {"result": {"greeting": "Hello, Ada"}, "text": "Hello, Ada"}


async def test_a_callees_error_answer_takes_the_call_nodes_error_edge(client):
    response = await client.get("/call/refused")
    assert response.json() == {"code": "forbidden", "status": 403, "message": "Not for you", "node": "ask"}


async def test_a_callee_sees_only_its_inputs(client):
    response = await client.post(
        "/call/peek", params={"token": "from-the-query"}, headers={"Authorization": "caller-secret"}
    )
    assert response.status_code == 200
    callee = response.json()["callee"]
    assert callee["names"] == ["env", "params", "session", "user"]  # no 'secret', no 'look'
    assert callee["params"] == {"body": {"only": "this"}, "query": {}, "path": {}, "headers": {}}
    assert "caller-secret" not in response.text and "from-the-query" not in response.text


def test_a_callee_naming_a_callers_node_is_refused_when_the_app_loads(tmp_path):
    app = tmp_path / "app"
    (app / "flows").mkdir(parents=True)
    (app / "app.yaml").write_text("name: leak\n")
    (app / "flows" / "caller.yaml").write_text(
        "service: caller\nendpoints: [{method: GET, path: /c}]\nstart: secret\nnodes:\n"
        "  secret: {type: set, values: {token: \"'s3cret'\"}, next: ask}\n"
        "  ask: {type: call, flow: callee, next: done}\n"
        "  done: {type: return-success, body: ask}\n"
    )
    (app / "flows" / "callee.yaml").write_text(
        "service: callee\nstart: done\nnodes:\n  done: {type: return-success, body: secret.token}\n"
    )
    with pytest.raises(SpecErrors) as caught:
        load_app(app)
    problems = [str(e) for e in caught.value.errors]
    assert problems[0].startswith("flows/callee.yaml:4:38: node 'done': param 'body': unknown name 'secret'")


def test_a_service_without_an_endpoint_is_not_routed_but_can_be_run(capsys):
    asgi = build(APP)
    assert asgi.state.app.flows["greet"].endpoints == []
    served = {route.endpoint.__name__ for route in asgi.routes if hasattr(route, "endpoint")}
    assert "callGreet" in served and "greet" not in served
    assert main(["run", "greet", str(APP), "--body", '{"name": "Grace"}']) == 0
    assert '"greeting": "Hello, Grace"' in capsys.readouterr().out


async def test_recursion_that_ends_by_itself_runs(client):
    response = await client.post("/countdown", json={"n": 3})
    assert response.json() == {"n": 3, "inner": {"n": 2, "inner": {"n": 1, "inner": {"n": 0}}}}


async def test_a_flow_calling_itself_forever_stops_at_the_call_depth_limit(client):
    response = await client.post("/recurse")
    assert response.status_code == 500
    assert response.json() == {
        "errors": [{"origin": "server_error", "code": "call_depth_exceeded", "message": "Sub-flow calls nested deeper than 8"}]
    }


async def test_deep_but_finite_recursion_also_stops_at_the_limit(client):
    assert (await client.post("/countdown", json={"n": 8})).status_code == 200
    response = await client.post("/countdown", json={"n": 9})
    assert response.json()["errors"][0]["code"] == "call_depth_exceeded"


# --- for-each ----------------------------------------------------------------------------


def _gauge() -> dict[str, int]:
    gauge = sys.modules["flowlang_nodes"].GAUGE
    gauge.update(now=0, peak=0)
    return gauge


async def test_for_each_runs_at_most_concurrency_items_at_once_and_keeps_their_order(client):
    gauge = _gauge()
    items = list(range(1, 11))
    response = await client.post("/loop", json={"numbers": items})
    assert response.status_code == 200
    # Earlier items sleep longer, so they finish last: the order is the list's, not completion's.
    assert response.json() == {"results": [{"index": i, "item": n, "square": n * n} for i, n in enumerate(items)]}
    assert gauge["peak"] == 3


async def test_for_each_runs_one_item_at_a_time_by_default(client):
    gauge = _gauge()
    response = await client.post("/loop/serial", json={"numbers": [1, 2, 3, 4]})
    assert [result["square"] for result in response.json()["results"]] == [1, 4, 9, 16]
    assert gauge["peak"] == 1


async def test_for_each_over_an_empty_list_gives_an_empty_list(client):
    response = await client.post("/loop", json={"numbers": []})
    assert response.json() == {"results": []}
