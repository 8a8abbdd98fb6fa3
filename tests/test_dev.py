"""Dev-mode routes: the flows, their recent traces and their drawings, only when dev is on."""

from __future__ import annotations

from pathlib import Path

import pytest
from starlette.testclient import TestClient

from flowengine.context import Services
from flowengine.drawing import dot, mermaid
from flowengine.http.app import build_app
from flowengine.spec.app import App, load_app

DEMO = Path(__file__).parent / "apps" / "openapi_demo"


@pytest.fixture
def app() -> App:
    return load_app(DEMO)


@pytest.fixture
def client(app: App) -> TestClient:
    return TestClient(build_app(app, Services(), dev=True))


@pytest.mark.parametrize("url", ["/_dev/flows", "/_dev/flows/greet/traces", "/_dev/flows/greet/graph"])
def test_dev_routes_are_absent_outside_dev_mode(app: App, url: str) -> None:
    response = TestClient(build_app(app, Services())).get(url)
    assert response.status_code == 404
    assert response.json() == {
        "errors": [{"origin": "client_error", "code": "not_found", "message": "No endpoint matches this path"}]
    }


def test_flows_lists_every_service(client: TestClient) -> None:
    response = client.get("/_dev/flows")
    assert response.status_code == 200
    assert response.json() == [
        {
            "service": "addContact",
            "description": "Check a contact and echo it back.",
            "file": "flows/add-contact.yaml",
            "endpoints": [{"method": "POST", "path": "/contacts", "session": "none"}],
            "nodes": 1,
            "traces": 0,
        },
        {
            "service": "divide",
            "description": "Divide 100 by a number.",
            "file": "flows/divide.yaml",
            "endpoints": [{"method": "GET", "path": "/divide", "session": "none"}],
            "nodes": 3,
            "traces": 0,
        },
        {
            "service": "greet",
            "description": "Say hello.",
            "file": "flows/greet.yaml",
            "endpoints": [
                {"method": "GET", "path": "/greet", "session": "optional"},
                {"method": "GET", "path": "/hello/{name}", "session": "none"},
            ],
            "nodes": 3,
            "traces": 0,
        },
        {
            "service": "internal",
            "description": "Not exposed over HTTP; called by other flows.",
            "file": "flows/internal.yaml",
            "endpoints": [],
            "nodes": 2,
            "traces": 0,
        },
        {
            "service": "setPhone",
            "description": "Store a user's new phone number.",
            "file": "flows/set-phone.yaml",
            "endpoints": [{"method": "POST", "path": "/users/{userId}/phone", "session": "required"}],
            "nodes": 5,
            "traces": 0,
        },
    ]


def test_traces_show_the_last_runs_newest_first(client: TestClient) -> None:
    assert client.get("/greet", params={"name": "Ann"}).json() == {"greeting": "Hello, Ann"}
    assert client.get("/greet").json() == {"greeting": "Hello"}
    response = client.get("/_dev/flows/greet/traces")
    assert response.status_code == 200
    newest, oldest = response.json()
    assert [(s["node"], s["type"], s["output"], s["error"]) for s in newest["steps"]] == [
        ("named", "condition", "else", None),
        ("anonymous", "return-success", None, None),
    ]
    assert [s["node"] for s in oldest["steps"]] == ["named", "hello"]
    for trace in (newest, oldest):
        assert trace["result"] == "ok"
        assert trace["micros"] == sum(step["micros"] for step in trace["steps"])
        assert trace["started"].endswith("+00:00")
    assert newest["started"] >= oldest["started"]
    listed = {flow["service"]: flow["traces"] for flow in client.get("/_dev/flows").json()}
    assert listed["greet"] == 2


def test_a_trace_records_the_failing_node_and_the_error_edge(client: TestClient) -> None:
    assert client.get("/divide", params={"by": "0"}).status_code == 422
    (trace,) = client.get("/_dev/flows/divide/traces").json()
    assert [(s["node"], s["type"], s["output"], s["error"]) for s in trace["steps"]] == [
        ("compute", "set", "error", "expression_error"),
        ("cannot", "return-error", None, None),
    ]


def test_graph_is_the_mermaid_drawing_as_text(client: TestClient, app: App) -> None:
    response = client.get("/_dev/flows/setPhone/graph")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert response.text == mermaid(app.flows["setPhone"])
    assert client.get("/_dev/flows/setPhone/graph?format=dot").text == dot(app.flows["setPhone"])


def test_a_bad_format_is_a_json_400(client: TestClient) -> None:
    response = client.get("/_dev/flows/setPhone/graph?format=svg")
    assert response.status_code == 400
    assert response.json()["errors"][0]["code"] == "bad_format"


@pytest.mark.parametrize("suffix", ["traces", "graph"])
def test_an_unknown_flow_is_a_json_404(client: TestClient, suffix: str) -> None:
    response = client.get(f"/_dev/flows/setPhon/{suffix}")
    assert response.status_code == 404
    assert response.json() == {
        "errors": [
            {
                "origin": "client_error",
                "code": "flow_not_found",
                "message": "No flow named 'setPhon' (did you mean 'setPhone'?)",
            }
        ]
    }
