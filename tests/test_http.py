"""The HTTP layer through the real Starlette app, as the Altogic client meets it.

Most behaviour is a scenario table in the PocketBase style: a request, the status it gets,
and what its body must hold. Success bodies are compared whole (they are bare JSON, no
envelope); error bodies by the ``code`` and ``details.field`` of each item. Every error
answer is also checked for the one shape the client can read:
``{"errors": [{"origin", "code", "message", ...}]}``.

The apps are ``tests/apps/http_demo`` (one flow per behaviour; test-only node types in
``http_demo_nodes.py``) and ``tests/apps/http_keys`` (client keys required).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from flowengine.context import Services
from flowengine.errors import FlowError
from flowengine.http.app import _CORS, build_app
from flowengine.spec.app import load_app

APPS = Path(__file__).parent / "apps"
ORIGIN = "https://app.example.com"
ERROR_ORIGINS = {"client_error", "server_error", "session_token_error"}


@pytest.fixture(scope="module")
def demo() -> Starlette:
    return build_app(load_app(APPS / "http_demo"), Services())


@pytest.fixture(scope="module")
def client(demo: Starlette) -> TestClient:
    return TestClient(demo)


def assert_error_shape(response: httpx.Response) -> list[dict[str, Any]]:
    """The Altogic error shape: JSON, one key 'errors', a non-empty list of items."""
    assert response.headers["content-type"].startswith("application/json"), response.text
    body = response.json()
    assert list(body) == ["errors"] and body["errors"], body
    for item in body["errors"]:
        assert item["origin"] in ERROR_ORIGINS, item
        assert isinstance(item["code"], str) and item["code"], item
        assert isinstance(item["message"], str) and item["message"], item
    return body["errors"]


# --- the scenario table ---------------------------------------------------------------------


@dataclass
class Scenario:
    name: str
    method: str
    url: str
    status: int
    #: success: the whole body; error: None
    body: Any = None
    #: error: the (code, details.field) of every item, in any order
    errors: list[tuple[str, str | None]] = field(default_factory=list)
    request: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.name


def text(content: str, media: str) -> dict[str, Any]:
    return {"content": content.encode(), "headers": {"content-type": media}}


def invalid(*fields: str) -> list[tuple[str, str | None]]:
    return [("validation_error", name) for name in fields]


def searched(**found: Any) -> dict[str, Any]:
    """What /search answers: every declared query parameter, null when not sent."""
    return {"q": None, "page": None, "exact": None, "email": None, **found}


SCENARIOS = [
    # path params
    Scenario("path-param-converted", "GET", "/items/42", 200, {"id": 42, "verbose": None}),
    Scenario("path-and-boolean-query", "GET", "/items/42?verbose=true", 200, {"id": 42, "verbose": True}),
    Scenario("path-param-wrong-type", "GET", "/items/abc", 400, errors=invalid("path.itemId")),
    # query validation
    Scenario("query-converted", "GET", "/search?q=shoes&page=3&exact=false", 200, searched(q="shoes", page=3, exact=False)),
    Scenario("query-boolean-word", "GET", "/search?q=a&exact=yes", 200, searched(q="a", exact=True)),
    Scenario("query-required-missing", "GET", "/search", 400, errors=invalid("query.q")),
    Scenario("query-below-min", "GET", "/search?q=a&page=0", 400, errors=invalid("query.page")),
    Scenario("query-above-max", "GET", "/search?q=a&page=51", 400, errors=invalid("query.page")),
    Scenario(
        "query-one-item-per-bad-field",
        "GET",
        "/search?page=two&exact=maybe",
        400,
        errors=invalid("query.q", "query.page", "query.exact"),
    ),
    # '+' as the Altogic client sends it
    Scenario("plus-stays-plus", "GET", "/search?q=a&email=x+y@z.com", 200, searched(q="a", email="x+y@z.com")),
    Scenario("encoded-plus-decodes", "GET", "/search?q=a&email=x%2By@z.com", 200, searched(q="a", email="x+y@z.com")),
    Scenario("query-repeated-key-is-not-text", "GET", "/search?q=a&q=b", 400, errors=invalid("query.q")),
    Scenario("encoded-space-decodes", "GET", "/search?q=red%20shoes", 200, searched(q="red shoes")),
    # bodies
    Scenario(
        "body-valid",
        "POST",
        "/signup",
        201,
        {"email": "ada@example.com", "name": "Ada", "age": 36},
        request={"json": {"email": "ada@example.com", "name": "Ada", "age": 36}},
    ),
    Scenario(
        "body-required-fields",
        "POST",
        "/signup",
        400,
        errors=invalid("body.email", "body.name"),
        request={"json": {}},
    ),
    Scenario(
        "body-bad-values",
        "POST",
        "/signup",
        400,
        errors=invalid("body.email", "body.age"),
        request={"json": {"email": "not-an-email", "name": "Ada", "age": 12}},
    ),
    Scenario("body-not-an-object", "POST", "/signup", 400, errors=invalid("body"), request={"json": [1, 2]}),
    Scenario("body-invalid-json", "POST", "/signup", 400, errors=[("invalid_json", None)], request=text('{"email":', "application/json")),
    Scenario("body-without-content-type", "POST", "/echo", 415, errors=[("unsupported_media_type", None)], request={"content": b'{"a": 1}'}),
    Scenario(
        "body-form-encoded",
        "POST",
        "/signup",
        415,
        errors=[("unsupported_media_type", None)],
        request=text("email=a@b.co", "application/x-www-form-urlencoded"),
    ),
    Scenario(
        "body-json-with-charset",
        "POST",
        "/echo",
        200,
        {"body": {"a": 1}, "query": {}},
        request=text('{"a": 1}', "application/json; charset=utf-8"),
    ),
    Scenario("body-too-large", "POST", "/echo", 413, errors=[("payload_too_large", None)], request={"json": {"pad": "x" * 300}}),
    # the Altogic client's POSTs without a body: no content type, nothing sent
    Scenario("post-no-body", "POST", "/echo?phoneNumber=%2B15551234567", 200, {"body": None, "query": {"phoneNumber": "+15551234567"}}),
    Scenario(
        "post-no-body-declared-fields",
        "POST",
        "/signup",
        400,
        errors=invalid("body.email", "body.name"),
    ),
    # GET ignores a body, whatever it is; DELETE reads one (the client's delete sends JSON)
    Scenario("get-ignores-body", "GET", "/echo", 200, {"body": None, "query": {}}, request=text("<not json>", "text/plain")),
    Scenario("delete-reads-body", "DELETE", "/echo", 200, {"body": {"keys": ["a"]}, "query": {}}, request={"json": {"keys": ["a"]}}),
    # routing
    Scenario("unknown-path", "GET", "/nowhere", 404, errors=[("not_found", None)]),
    Scenario("wrong-method", "DELETE", "/items/1", 405, errors=[("method_not_allowed", None)]),
    Scenario("wrong-method-post-only", "PUT", "/signup", 405, errors=[("method_not_allowed", None)]),
    # failures inside flows
    Scenario("flow-return-error", "GET", "/refuse", 409, errors=[("already_taken", "name")]),
    Scenario("node-flow-error-unrouted", "GET", "/fail", 403, errors=[("not_yours", None)]),
    Scenario("node-crash", "GET", "/crash", 500, errors=[("internal_error", None)]),
    # sessions, with no auth service installed
    Scenario("session-required", "GET", "/me", 401, errors=[("missing_session_token", None)]),
    Scenario("session-before-validation", "GET", "/me?page=x", 401, errors=[("missing_session_token", None)]),
]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=str)
def test_scenario(client: TestClient, scenario: Scenario) -> None:
    response = client.request(scenario.method, scenario.url, **scenario.request)
    assert response.status_code == scenario.status, response.text
    if scenario.status < 400:
        assert response.headers["content-type"] == "application/json"
        assert response.json() == scenario.body
        return
    items = assert_error_shape(response)
    found = [(item["code"], (item.get("details") or {}).get("field")) for item in items]
    assert sorted(found, key=str) == sorted(scenario.errors, key=str)


def test_validation_messages_name_the_field(client: TestClient) -> None:
    items = client.get("/search?page=0").json()["errors"]
    assert sorted(item["message"] for item in items) == [
        "query parameter 'page' must be at least 1",
        "query parameter 'q' is required",
    ]


def test_wrong_method_says_what_is_allowed(client: TestClient) -> None:
    response = client.delete("/items/1")
    assert "GET" in response.headers["allow"]
    assert "GET" in response.json()["errors"][0]["message"]


def test_a_crash_answers_an_error_id_and_logs_the_traceback(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    from http_demo_nodes import SECRET

    with caplog.at_level(logging.ERROR):
        response = client.get("/crash")
    (item,) = assert_error_shape(response)
    error_id = item["details"]["errorId"]
    assert error_id in item["message"]
    assert SECRET not in response.text and "Traceback" not in response.text and "RuntimeError" not in response.text
    assert error_id in caplog.text and f"RuntimeError: kaboom: {SECRET}" in caplog.text


def test_session_errors_use_the_origin_the_client_watches(client: TestClient) -> None:
    (item,) = client.get("/me").json()["errors"]
    assert item["origin"] == "session_token_error"


class TokenAuth:
    """A stand-in auth service: the ``Session`` header 'good' is user u1's session."""

    async def authenticate(self, request, required: bool):
        token = request.headers.get("session")
        if token == "good":
            return {"userId": "u1", "token": token}, {"_id": "u1"}
        if token is not None:
            raise FlowError("invalid_session_token", "Unknown session", status=401, origin="session_token_error")
        if required:
            raise FlowError("missing_session_token", "No session", status=401, origin="session_token_error")
        return None


@pytest.mark.parametrize(
    ("headers", "status", "answer"),
    [
        ({"Session": "good"}, 200, {"userId": "u1"}),
        ({"Session": "stale"}, 401, "invalid_session_token"),
        ({}, 401, "missing_session_token"),
    ],
    ids=["valid", "unknown-token", "no-token"],
)
def test_the_auth_service_decides_who_the_session_is(headers, status, answer) -> None:
    client = TestClient(build_app(load_app(APPS / "http_demo"), Services(auth=TokenAuth())))
    response = client.get("/me", headers=headers)
    assert response.status_code == status
    if status == 200:
        assert response.json() == answer
    else:
        assert [(i["code"], i["origin"]) for i in assert_error_shape(response)] == [(answer, "session_token_error")]


class BrokenAuth:
    async def authenticate(self, request, required: bool):
        raise RuntimeError("auth backend exploded")


def test_a_crash_outside_any_flow_is_still_a_json_500(caplog: pytest.LogCaptureFixture) -> None:
    app = build_app(load_app(APPS / "http_demo"), Services(auth=BrokenAuth()))
    with caplog.at_level(logging.ERROR):
        response = TestClient(app, raise_server_exceptions=False).get("/me")
    assert response.status_code == 500
    (item,) = assert_error_shape(response)
    assert item["code"] == "internal_error" and "exploded" not in response.text
    assert item["details"]["errorId"] in caplog.text and "auth backend exploded" in caplog.text


# --- body limit on a streamed body ------------------------------------------------------------


@pytest.mark.anyio
async def test_a_chunked_body_over_the_limit_is_refused_without_reading_it_all(demo: Starlette) -> None:
    """No Content-Length: the limit (256 bytes) must be enforced while streaming."""
    chunks_sent = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal chunks_sent
        chunks_sent += 1
        return {"type": "http.request", "body": b"x" * 100, "more_body": chunks_sent < 1000}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/echo",
        "raw_path": b"/echo",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"test"), (b"content-type", b"application/json"), (b"transfer-encoding", b"chunked")],
        "client": ("127.0.0.1", 1234),
        "server": ("test", 80),
    }
    await demo(scope, receive, send)
    start, body = sent[0], b"".join(m.get("body", b"") for m in sent[1:])
    assert start["status"] == 413
    assert (b"content-type", b"application/json") in start["headers"]
    assert httpx.Response(413, content=body).json()["errors"][0]["code"] == "payload_too_large"
    assert chunks_sent <= 4


def test_a_declared_length_over_the_limit_is_refused(client: TestClient) -> None:
    response = client.post(
        "/echo", content=b"{}" + b" " * 400, headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert assert_error_shape(response)[0]["details"] == {"limit": 256}


# --- CORS -----------------------------------------------------------------------------------


def preflight(client: TestClient, origin: str, headers: str = "Session, X-Client-Key") -> httpx.Response:
    return client.options(
        "/signup",
        headers={"Origin": origin, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": headers},
    )


def test_cors_preflight_allows_the_configured_origin_with_credentials(client: TestClient) -> None:
    response = preflight(client, ORIGIN)
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == ORIGIN
    assert response.headers["access-control-allow-credentials"] == "true"
    allowed = {h.strip().lower() for h in response.headers["access-control-allow-headers"].split(",")}
    assert {"session", "x-client-key", "x-client", "authorization", "content-type"} <= allowed


@pytest.mark.parametrize(
    ("origin", "headers"),
    [("https://evil.example.com", "Session, X-Client-Key"), (ORIGIN, "X-Not-Allowed")],
    ids=["other-origin", "unlisted-header"],
)
def test_cors_preflight_refusals_are_json_and_grant_nothing(client: TestClient, origin: str, headers: str) -> None:
    response = preflight(client, origin, headers)
    assert response.status_code == 400
    if origin != ORIGIN:
        assert "access-control-allow-origin" not in response.headers
    assert assert_error_shape(response)[0]["code"] == "cors_refused"


@pytest.mark.parametrize("url", ["/items/7", "/nowhere", "/crash"])
def test_answers_carry_cors_headers_so_the_browser_can_read_errors_too(client: TestClient, url: str) -> None:
    response = client.get(url, headers={"Origin": ORIGIN})
    assert response.headers["access-control-allow-origin"] == ORIGIN
    assert response.headers["access-control-allow-credentials"] == "true"


@pytest.mark.parametrize("url", ["/items/7", "/nowhere", "/crash"])
def test_answers_without_an_origin_still_vary_by_origin(client: TestClient, url: str) -> None:
    response = client.get(url)  # a cache must not hand this answer to a cross-origin browser
    assert response.headers["vary"] == "Origin"
    assert "access-control-allow-origin" not in response.headers


def test_vary_origin_joins_a_vary_the_answer_already_has() -> None:
    async def negotiated(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": [(b"vary", b"Accept-Encoding")]})
        await send({"type": "http.response.body", "body": b"ok"})

    cors = TestClient(_CORS(negotiated, allow_origins=[ORIGIN]))
    assert cors.get("/").headers["vary"] == "Accept-Encoding, Origin"
    answer = cors.get("/", headers={"Origin": ORIGIN})
    assert (answer.headers["vary"], answer.headers["access-control-allow-origin"]) == ("Accept-Encoding, Origin", ORIGIN)


# --- client keys ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "status"),
    [({}, 401), ({"X-Client-Key": "wrong"}, 401), ({"X-Client-Key": "key-123"}, 200)],
    ids=["missing", "wrong", "right"],
)
def test_client_keys(headers: dict[str, str], status: int) -> None:
    client = TestClient(build_app(load_app(APPS / "http_keys", environ={}), Services()))
    response = client.get("/hello", headers=headers)
    assert response.status_code == status
    if status == 200:
        assert response.json() == {"hello": "world"}
    else:
        assert [item["code"] for item in assert_error_shape(response)] == ["invalid_client_key"]


# --- time limits -----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_slow_endpoint_times_out_while_others_are_served(demo: Starlette) -> None:
    finished: list[str] = []

    async def call(client: httpx.AsyncClient, url: str) -> httpx.Response:
        response = await client.get(url)
        finished.append(url)
        return response

    transport = httpx.ASGITransport(app=demo)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        slow = asyncio.create_task(call(client, "/slow"))
        await asyncio.sleep(0.05)  # the slow request is in flight
        fast = await asyncio.gather(*(call(client, f"/items/{i}") for i in range(20)))
        assert not slow.done(), "the slow endpoint should still be running"
        timed_out = await slow
    assert [r.json()["id"] for r in fast] == list(range(20))
    assert finished[-1] == "/slow"
    assert timed_out.status_code == 504
    (item,) = assert_error_shape(timed_out)
    assert (item["code"], item["origin"]) == ("timeout", "server_error")
    assert "0.3s" in item["message"]
    assert demo.state.app.flows["slow"].traces[-1].result == "cancelled"
