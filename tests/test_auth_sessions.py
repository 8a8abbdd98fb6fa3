"""Sessions as stored (on SQLite and PostgreSQL), and the nodes that open and end them from a flow."""

from __future__ import annotations

import hashlib
import secrets

import psycopg
import pytest

from auth_harness import CHROME, Clock, errors_of, new_email, write_app
from auth_harness import auth_apps, smtp_inbox  # noqa: F401 (fixtures)
from flowengine.auth.sessions import SESSIONS, Sessions
from flowengine.spec.app import load_app
from flowengine.store import open_store
from flowengine.errors import FlowError
from flowengine.testing import harness_services, run_node
from flowengine_nodes.auth import create_session, delete_sessions

pytestmark = [pytest.mark.anyio, pytest.mark.parametrize("cache_url", [None])]  # sessions live in the store


async def test_the_store_keeps_only_the_digest_of_each_token(auth_apps) -> None:
    app = await auth_apps(confirm_email=False)
    email = new_email()
    tokens = [(await app.sign_up(email)).json()["session"]["token"]]
    tokens += [(await app.sign_in(email)).json()["session"]["token"] for _ in range(2)]
    assert len(set(tokens)) == 3  # a new token for every sign-in
    rows = await app.services.store.find_many(SESSIONS)
    assert sorted(row["tokenHash"] for row in rows) == sorted(hashlib.sha256(t.encode()).hexdigest() for t in tokens)
    assert not any(token in str(row) for row in rows for token in tokens)


async def test_an_ended_session_is_deleted_when_next_met(auth_apps) -> None:
    app = await auth_apps(confirm_email=False, session={"lifetime": "1h", "idle": "1h"})
    token = (await app.sign_up(new_email())).json()["session"]["token"]
    assert await app.services.store.count(SESSIONS) == 1
    app.clock.advance(3600)
    assert (await app.call("GET", "user", headers={"Session": token})).status_code == 401
    assert await app.services.store.count(SESSIONS) == 0


async def test_a_deleted_users_sessions_end(auth_apps) -> None:
    app = await auth_apps(confirm_email=False)
    answer = (await app.sign_up(new_email())).json()
    await app.services.store.delete("users", answer["user"]["_id"])
    response = await app.call("GET", "user", headers={"Session": answer["session"]["token"]})
    assert errors_of(response) == [("invalid_session_token", "session_token_error")]


async def test_a_flow_signs_a_user_in_with_create_session(auth_apps) -> None:
    app = await auth_apps(confirm_email=False)
    email = new_email()
    user = (await app.sign_up(email)).json()["user"]
    response = await app.call("POST", "/user/verify-sign-in", json={"email": email, "code": "424242"}, headers={"User-Agent": CHROME})
    assert response.status_code == 200
    session, found = response.json()["session"], response.json()["found"]
    assert found["_id"] == user["_id"] and "password" not in found
    assert (session["userId"], session["accessGroupKeys"], session["userAgent"]["family"]) == (user["_id"], ["2fa"], "Chrome")
    me = await app.call("GET", "/me", headers={"Session": session["token"]})
    assert me.json()["session"]["accessGroupKeys"] == ["2fa"]


async def test_a_flow_signs_a_user_out_everywhere_with_delete_sessions(auth_apps) -> None:
    app = await auth_apps(confirm_email=False)
    email = new_email()
    tokens = [(await app.sign_up(email)).json()["session"]["token"], (await app.sign_in(email)).json()["session"]["token"]]
    other = (await app.sign_up(new_email("other"))).json()["session"]["token"]
    response = await app.call("POST", "/sign-out-everywhere", headers={"Session": tokens[0]})
    assert response.json() == {"ended": 2}
    assert [(await app.call("GET", "user", headers={"Session": t})).status_code for t in tokens + [other]] == [401, 401, 200]


async def test_the_session_nodes_need_built_in_auth(cache_url) -> None:
    for node, params in ((create_session, {"user": "'u1'"}), (delete_sessions, {"user": "'u1'"})):
        with pytest.raises(FlowError) as caught:
            await run_node(node, params, services=harness_services())
        assert caught.value.code == "auth_not_configured"


async def test_create_session_refuses_an_unknown_user(auth_apps) -> None:
    app = await auth_apps()
    with pytest.raises(FlowError) as caught:
        await run_node(create_session, {"user": "'no-such-user'"}, services=app.services)
    assert (caught.value.code, caught.value.status) == ("user_not_found", 404)


# --- the sessions table on both databases -----------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
async def sessions_store(request, tmp_path, cache_url):
    """A started store with the users and ``_sessions`` tables, on SQLite or in a fresh PostgreSQL schema."""
    url, schema = None, None
    if request.param == "postgresql":
        url, schema = request.getfixturevalue("postgres_url"), f"fe_auth_{secrets.token_hex(6)}"
    app = load_app(write_app(tmp_path / "app", "sessions-db", smtp_port=25, cache=None))
    store = open_store(url, {**app.models, **app.auth.models}, tmp_path / "data", schema=schema)
    store.bcrypt_rounds = 4
    await store.start()
    yield store
    await store.close()
    if schema:
        with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as connection:
            connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


async def test_sessions_open_list_expire_and_end_on_either_database(sessions_store) -> None:
    clock = Clock()
    sessions = Sessions(sessions_store, clock, lifetime=3600, idle=600)
    ann = await sessions_store.create("users", {"email": "ann@example.com", "password": "secret password"})
    bob = await sessions_store.create("users", {"email": "bob@example.com", "password": "secret password"})
    first = await sessions.open(ann["_id"], CHROME, ["a"])
    second = await sessions.open(ann["_id"], None)
    theirs = await sessions.open(bob["_id"], None)
    assert first["userAgent"]["family"] == "Chrome" and first["accessGroupKeys"] == ["a"]
    assert (await sessions.find(first["token"]))["userId"] == ann["_id"]
    assert [row["tokenHash"] for row in await sessions.of_user(ann["_id"])] == [
        hashlib.sha256(t.encode()).hexdigest() for t in (first["token"], second["token"])
    ]
    assert not await sessions.end(ann["_id"], theirs["token"])  # not hers to end
    row = await sessions.find(second["token"])
    assert await sessions.end(ann["_id"], row["_id"]) and await sessions.find(second["token"]) is None

    clock.advance(599)
    assert await sessions.find(first["token"]) is not None  # used: idle restarts (written at most once a minute)
    clock.advance(599)
    assert await sessions.find(first["token"]) is not None
    clock.advance(601)
    assert await sessions.find(first["token"]) is None  # idle too long
    assert await sessions.end_all(bob["_id"]) == 1
    assert await sessions_store.count(SESSIONS) == 0  # the idle one was deleted when met
