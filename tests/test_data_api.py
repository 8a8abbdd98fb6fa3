"""flowengine.http.data_api: the Altogic data API and its rules, over HTTP, on both stores.

Requests are written as the official client's ``DBObject`` sends them. Each refusal is
checked for its status, the field it names, and — by reading the table back — that nothing
was stored. Sessions come from a stand-in for the auth service (``Session`` token → user), and,
in the last tests, from signing up through the real auth API; the official client's run
is in ``tests/test_altogic_client.py``.
"""

from __future__ import annotations

import textwrap
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, AsyncIterator

import httpx
import pytest
import test_store

from flowengine.auth.service import Caller
from flowengine.context import Services
from flowengine.errors import FlowError, SpecErrors
from flowengine.http.app import build_app
from flowengine.access import IDENTITY_FIELDS, check_data_api
from flowengine.http.data_api import data_routes
from flowengine.messaging.outbox import outbox_key
from flowengine.runtime import assemble, open_services, start_services
from flowengine.spec.app import App, load_app

pytestmark = pytest.mark.anyio
database = test_store.database  # the fixture: a SQLite file, or a PostgreSQL schema

UPDATE = "/_api/rest/v1/db/object/update"
UPDATE_FIELDS = "/_api/rest/v1/db/object/update-fields"
#: What DBObject adds to every update.
OPTIONS = {"cache": "nocache", "returnTop": False}

USERS_YAML = """\
fields:
  email: { type: email, required: true, unique: true }
  password: { type: encrypted }
  name: { type: text, length: { min: 1, max: 40 } }
  profilePicture: text
  emailVerified: { type: boolean, default: false }
  phone: phone
  phoneVerified: { type: boolean, default: false }
  provider: { type: text, default: altogic }
  providerUserId: text
  signUpAt: datetime
  lastLoginAt: datetime
  twoFactorAuth: { type: boolean, default: false }
  role: { type: text, default: member, readonly: true }
  notesToSelf: { type: text, private: true }
  totpSecret: secret
  nickname: { type: text, unique: true }
rules:
  - check: "!this.twoFactorAuth || this.phoneVerified"
    field: twoFactorAuth
    message: Verify a phone number before turning on two-factor sign-in
"""
NOTES_YAML = """\
fields:
  title: { type: text, required: true }
  owner: { type: reference, model: users, required: true }
  views: { type: integer, default: 0 }
  tags: { type: list, items: text }
  pinned: { type: boolean, default: false, readonly: true }
"""
POSTS_YAML = """\
fields:
  title: text
  author: { type: reference, model: users }
"""
CODE_YAML = """\
transient: true
fields:
  code: integer
"""
APP_YAML = """\
name: data-demo
data_api:
  writable:
    notes: owner
"""


def write_app(folder: Path, app_yaml: str = APP_YAML, **models: str) -> Path:
    models = models or {"users": USERS_YAML, "notes": NOTES_YAML, "posts": POSTS_YAML}
    (folder / "models").mkdir(parents=True, exist_ok=True)
    (folder / "app.yaml").write_text(textwrap.dedent(app_yaml))
    for name, text in models.items():
        (folder / "models" / f"{name}.yaml").write_text(text)
    return folder


class TokenAuth:
    """A stand-in for the auth service: the ``Session`` header names a user of the store."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.tokens: dict[str, str] = {}

    async def authenticate(self, request: Any, required: bool = True) -> tuple[dict, dict] | None:
        token = request.headers.get("session")
        if not token:
            if required:
                raise FlowError("missing_session_token", "A session token is required", status=401,
                                origin="session_token_error")  # fmt: skip
            return None
        user = await self.store.get("users", self.tokens.get(token, ""))
        if user is None:
            raise FlowError("invalid_session_token", "Invalid session token", status=401, origin="session_token_error")
        return {"token": token, "userId": user["_id"]}, user

    async def caller(self, request: Any) -> Caller:
        session, user = await self.authenticate(request)
        return Caller(session, session["token"], user)


class World:
    """An app on a started store, two signed-in users, and an HTTP client."""

    def __init__(self, app: App, services: Services, client: httpx.AsyncClient) -> None:
        self.app, self.services, self.client = app, services, client
        self.store = services.store
        self.ids: dict[str, str] = {}

    async def add_user(self, token: str, **values: Any) -> dict[str, Any]:
        user = await self.store.create("users", {"email": f"{token}@example.com", **values})
        self.services.auth.tokens[token] = user["_id"]
        self.ids[token] = user["_id"]
        return user

    async def post(self, path: str, body: Any, token: str | None = "a", **headers: str) -> httpx.Response:
        if token:
            headers["Session"] = token
        return await self.client.post(path, json=body, headers=headers)

    async def update(self, id: str, values: Any, model: str = "users", token: str | None = "a") -> httpx.Response:
        return await self.post(UPDATE, {"values": values, "options": OPTIONS, "id": id, "model": model}, token)

    async def update_fields(self, id: str, updates: Any, model: str = "users", token: str | None = "a") -> httpx.Response:
        return await self.post(UPDATE_FIELDS, {"updates": updates, "options": OPTIONS, "id": id, "model": model}, token)

    async def read(self, model: str, id: str) -> dict[str, Any]:
        return await self.store.get(model, id)


async def open_world(folder: Path, database: Any) -> AsyncIterator[World]:
    app = load_app(folder)
    store = await database(app.models)
    services = Services(store=store, settings=app.settings, app_dir=app.dir)
    services.auth = TokenAuth(store)
    asgi = build_app(app, services, extra_routes=data_routes(app, services))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi), base_url="http://testserver") as client:
        world = World(app, services, client)
        await world.add_user("a", name="Ada", profilePicture="https://x/p.png", notesToSelf="hidden", totpSecret="v1.s")
        await world.add_user("b", name="Bob")
        yield world


@pytest.fixture
async def world(tmp_path: Path, database: Any) -> AsyncIterator[World]:
    async for world in open_world(write_app(tmp_path / "app"), database):
        yield world


def only_error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    errors = response.json()["errors"]
    assert len(errors) == 1, errors
    return errors[0]


# --- what the tutorial apps do -------------------------------------------------------------------


async def test_a_user_renames_themselves_as_the_client_sends_it(world: World) -> None:
    before = await world.read("users", world.ids["a"])
    response = await world.update(world.ids["a"], {"name": "Ada L."})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["_id"] == world.ids["a"] and answer["name"] == "Ada L."
    assert answer["email"] == "a@example.com" and answer["updatedAt"] >= before["updatedAt"]
    assert "password" not in answer and "notesToSelf" not in answer  # encrypted and private: never shown
    assert "totpSecret" not in answer and (await world.store.get("users", world.ids["a"], sealed=True))["totpSecret"]
    assert (await world.read("users", world.ids["a"]))["name"] == "Ada L."


async def test_unsetting_the_profile_picture_with_update_fields(world: World) -> None:
    response = await world.update_fields(world.ids["a"], [{"field": "profilePicture", "updateType": "unset"}])
    assert response.status_code == 200, response.text
    assert response.json().get("profilePicture") is None
    assert (await world.read("users", world.ids["a"])).get("profilePicture") is None


async def test_a_single_field_update_object_is_accepted(world: World) -> None:
    response = await world.update_fields(world.ids["a"], {"field": "name", "updateType": "set", "value": "A"})
    assert response.status_code == 200, response.text
    assert response.json()["name"] == "A"


async def test_setting_the_profile_picture_and_toggling_two_factor(world: World) -> None:
    await world.store.update("users", world.ids["a"], {"phone": "+14155552671", "phoneVerified": True})
    response = await world.update(world.ids["a"], {"profilePicture": "https://x/q.png", "twoFactorAuth": True})
    assert response.status_code == 200, response.text
    stored = await world.read("users", world.ids["a"])
    assert stored["profilePicture"] == "https://x/q.png" and stored["twoFactorAuth"] is True


# --- who may write what --------------------------------------------------------------------------


async def test_another_users_object_is_forbidden_and_unchanged(world: World) -> None:
    before = await world.read("users", world.ids["b"])
    error = only_error(await world.update(world.ids["b"], {"name": "Mallory"}), 403)
    assert error["code"] == "not_owner"
    error = only_error(await world.update_fields(world.ids["b"], [{"field": "name", "updateType": "unset"}]), 403)
    assert error["code"] == "not_owner"
    assert await world.read("users", world.ids["b"]) == before


async def test_an_unknown_id_is_not_found(world: World) -> None:
    error = only_error(await world.update("0" * 24, {"name": "x"}), 404)
    assert error["code"] == "object_not_found" and error["details"] == {"model": "users", "id": "0" * 24}
    assert only_error(await world.update_fields("nope", [{"field": "name", "updateType": "unset"}]), 404)


async def test_without_a_session_the_client_is_told_to_sign_in(world: World) -> None:
    error = only_error(await world.update(world.ids["a"], {"name": "x"}, token=None), 401)
    assert (error["code"], error["origin"]) == ("missing_session_token", "session_token_error")
    error = only_error(await world.update(world.ids["a"], {"name": "x"}, token="stale"), 401)
    assert error["code"] == "invalid_session_token"
    assert (await world.read("users", world.ids["a"]))["name"] == "Ada"


async def test_a_session_is_checked_before_the_body(world: World) -> None:
    response = await world.client.post(UPDATE, content=b"not json", headers={"Content-Type": "application/json"})
    assert only_error(response, 401)["code"] == "missing_session_token"


REFUSED = [
    *((name, "can only be changed through the auth API") for name in sorted(IDENTITY_FIELDS)),
    ("role", "cannot be changed through the data API"),  # readonly
    ("notesToSelf", "cannot be changed through the data API"),  # private
    ("totpSecret", "cannot be changed through the data API"),  # secret
    ("_id", "is set by the server"),
    ("createdAt", "is set by the server"),
    ("updatedAt", "is set by the server"),
    ("isAdmin", "'isAdmin' is not a field of users"),
]
VALUES = {"email": "evil@example.com", "password": "hunter2hunter2", "emailVerified": True, "phone": "+14155552671",
          "phoneVerified": True, "provider": "google", "providerUserId": "1", "signUpAt": "2020-01-01T00:00:00Z",
          "lastLoginAt": "2020-01-01T00:00:00Z", "role": "admin", "notesToSelf": "x", "totpSecret": "x", "_id": "x",
          "createdAt": "2020-01-01T00:00:00Z", "updatedAt": "2020-01-01T00:00:00Z", "isAdmin": True}  # fmt: skip


@pytest.mark.parametrize("field, message", REFUSED, ids=[field for field, _ in REFUSED])
async def test_fields_a_client_may_not_write(world: World, field: str, message: str) -> None:
    before = await world.read("users", world.ids["a"])
    for response in (
        await world.update(world.ids["a"], {"name": "Changed", field: VALUES[field]}),
        await world.update_fields(world.ids["a"], [{"field": field, "updateType": "set", "value": VALUES[field]}]),
        await world.update_fields(world.ids["a"], [{"field": field, "updateType": "unset"}]),
    ):
        error = only_error(response, 400)
        assert error["code"] == "validation_error" and error["details"] == {"field": field, "model": "users"}
        assert message in error["message"]
    assert await world.read("users", world.ids["a"]) == before


async def test_every_refused_field_is_named_at_once(world: World) -> None:
    response = await world.update(world.ids["a"], {"email": "x@example.com", "role": "admin", "name": "ok"})
    assert response.status_code == 400
    assert [e["details"]["field"] for e in response.json()["errors"]] == ["email", "role"]


@pytest.mark.parametrize("values, field", [
    ({"name": ""}, "name"),
    ({"name": "x" * 41}, "name"),
    ({"name": 7}, "name"),
    ({"twoFactorAuth": "yes"}, "twoFactorAuth"),
    ({"profilePicture": ["a"]}, "profilePicture"),
])  # fmt: skip
async def test_invalid_values_are_refused_by_the_model(world: World, values: dict, field: str) -> None:
    before = await world.read("users", world.ids["a"])
    error = only_error(await world.update(world.ids["a"], values), 400)
    assert error["code"] == "validation_error" and error["details"]["field"] == field
    assert await world.read("users", world.ids["a"]) == before


async def test_a_unique_value_taken_by_another_user_is_a_conflict(world: World) -> None:
    await world.update(world.ids["b"], {"nickname": "bobby"}, token="b")
    error = only_error(await world.update(world.ids["a"], {"nickname": "bobby"}), 409)
    assert error["code"] == "unique_violation" and error["details"]["field"] == "nickname"
    assert (await world.read("users", world.ids["a"])).get("nickname") is None


@pytest.mark.parametrize("updates, field", [
    ([{"field": "name", "updateType": "explode"}], "name"),
    ([{"field": "name", "updateType": "increment", "value": 1}], "name"),
    ([{"field": "twoFactorAuth", "updateType": "push", "value": 1}], "twoFactorAuth"),
])  # fmt: skip
async def test_invalid_field_updates_are_refused(world: World, updates: list, field: str) -> None:
    before = await world.read("users", world.ids["a"])
    error = only_error(await world.update_fields(world.ids["a"], updates), 400)
    assert error["details"]["field"] == field
    assert await world.read("users", world.ids["a"]) == before


@pytest.mark.parametrize("path, body, field", [
    (UPDATE, [1], ""),
    (UPDATE, {"values": {"name": "x"}, "model": "users"}, "id"),
    (UPDATE, {"values": {"name": "x"}, "id": 5, "model": "users"}, "id"),
    (UPDATE, {"values": {"name": "x"}, "id": "x"}, "model"),
    (UPDATE, {"values": "x", "id": "ID", "model": "users"}, "values"),
    (UPDATE, {"values": {}, "id": "ID", "model": "users"}, "values"),
    (UPDATE_FIELDS, {"updates": None, "id": "ID", "model": "users"}, "updates"),
    (UPDATE_FIELDS, {"updates": [], "id": "ID", "model": "users"}, "updates"),
    (UPDATE_FIELDS, {"updates": ["name"], "id": "ID", "model": "users"}, "updates"),
])  # fmt: skip
async def test_malformed_bodies(world: World, path: str, body: Any, field: str) -> None:
    if isinstance(body, dict) and body.get("id") == "ID":
        body["id"] = world.ids["a"]
    error = only_error(await world.post(path, body), 400)
    assert error["code"] == "validation_error" and error["details"]["field"] == field


@pytest.mark.parametrize("model", ["posts", "nothing", "phoneVerificationCode"])
async def test_models_not_listed_are_closed(world: World, model: str) -> None:
    error = only_error(await world.update(world.ids["a"], {"title": "x"}, model=model), 403)
    assert error["code"] == "model_not_writable" and error["details"] == {"model": model}


# --- an app's own model, owned through a reference ------------------------------------------------


async def test_notes_are_writable_by_their_owner_only(world: World) -> None:
    mine = await world.store.create("notes", {"title": "mine", "owner": world.ids["a"]})
    theirs = await world.store.create("notes", {"title": "theirs", "owner": world.ids["b"]})
    response = await world.update(mine["_id"], {"title": "renamed", "tags": ["x"]}, model="notes")
    assert response.status_code == 200 and response.json()["title"] == "renamed"
    response = await world.update_fields(mine["_id"], [{"field": "views", "updateType": "increment", "value": 2},
                                                       {"field": "tags", "updateType": "push", "value": "y"}],
                                         model="notes")  # fmt: skip
    assert response.status_code == 200 and (response.json()["views"], response.json()["tags"]) == (2, ["x", "y"])
    assert only_error(await world.update(theirs["_id"], {"title": "stolen"}, model="notes"), 403)["code"] == "not_owner"
    assert (await world.read("notes", theirs["_id"]))["title"] == "theirs"


@pytest.mark.parametrize("field, value", [("owner", "B"), ("pinned", True)])
async def test_the_owner_field_and_readonly_fields_stay(world: World, field: str, value: Any) -> None:
    mine = await world.store.create("notes", {"title": "mine", "owner": world.ids["a"]})
    value = world.ids["b"] if value == "B" else value
    error = only_error(await world.update(mine["_id"], {field: value}, model="notes"), 400)
    assert error["details"] == {"field": field, "model": "notes"}
    assert await world.read("notes", mine["_id"]) == mine


# --- the model's rules ----------------------------------------------------------------------------


async def test_two_factor_needs_a_verified_phone_and_nothing_is_kept(world: World) -> None:
    before = await world.read("users", world.ids["a"])
    for response in (
        await world.update(world.ids["a"], {"twoFactorAuth": True, "name": "Two"}),
        await world.update_fields(world.ids["a"], [{"field": "twoFactorAuth", "updateType": "set", "value": True}]),
    ):
        error = only_error(response, 400)
        assert error["details"] == {"field": "twoFactorAuth", "model": "users"}
        assert error["message"] == "Verify a phone number before turning on two-factor sign-in"
    assert await world.read("users", world.ids["a"]) == before  # rolled back, name included


async def test_two_factor_can_always_be_turned_off(world: World) -> None:
    await world.store.update("users", world.ids["a"], {"phone": "+14155552671", "phoneVerified": True,
                                                       "twoFactorAuth": True})  # fmt: skip
    response = await world.update(world.ids["a"], {"twoFactorAuth": False})
    assert response.status_code == 200 and response.json()["twoFactorAuth"] is False


# --- configuration --------------------------------------------------------------------------------


async def test_client_keys_are_required_when_the_app_lists_them(tmp_path: Path, database: Any) -> None:
    folder = write_app(tmp_path / "app", "name: keyed\nclient_keys: [k1]\n")
    async for world in open_world(folder, database):
        error = only_error(await world.update(world.ids["a"], {"name": "x"}), 401)
        assert error["code"] == "invalid_client_key"
        body = {"values": {"name": "x"}, "options": OPTIONS, "id": world.ids["a"], "model": "users"}
        assert (await world.post(UPDATE, body, **{"X-Client-Key": "k1"})).status_code == 200


async def test_users_are_writable_by_default(tmp_path: Path, database: Any) -> None:
    async for world in open_world(write_app(tmp_path / "app", "name: plain\n"), database):
        assert (await world.update(world.ids["a"], {"name": "x"})).status_code == 200
        assert only_error(await world.update("x", {"title": "x"}, model="notes"), 403)["code"] == "model_not_writable"


async def test_users_can_be_closed(tmp_path: Path, database: Any) -> None:
    closed = write_app(tmp_path / "app", "name: closed\ndata_api: { writable: { users: false } }\n")
    async for world in open_world(closed, database):
        assert only_error(await world.update(world.ids["a"], {"name": "x"}), 403)["code"] == "model_not_writable"


def test_an_app_without_users_has_nothing_writable(tmp_path: Path) -> None:
    app = load_app(write_app(tmp_path / "app", "name: bare\n", posts="fields: { title: text }\n"))
    assert check_data_api(app) == []
    assert [route.path for route in data_routes(app, Services())] == [UPDATE, UPDATE_FIELDS]


BROKEN = """\
name: broken
data_api:
  writable:
    ghosts: owner
    code: owner
    posts: title
    notes: _id
"""


def test_a_wrong_data_api_section_is_reported_with_its_place(tmp_path: Path) -> None:
    with pytest.raises(SpecErrors) as caught:  # loading the app reports them all, with their places
        load_app(write_app(tmp_path / "app", BROKEN, users=USERS_YAML, notes=NOTES_YAML, posts=POSTS_YAML,
                           code=CODE_YAML))  # fmt: skip
    assert [str(p) for p in caught.value.errors] == [
        "app.yaml:4:13: unknown model 'ghosts'",
        "app.yaml:5:11: 'code' is transient: there is nothing to update",
        "app.yaml:6:12: owner 'title' must be a field of posts that refers to users (or _id for users itself)",
        "app.yaml:7:12: owner '_id' must be a field of notes that refers to users (or _id for users itself)",
    ]


def test_the_schema_refuses_a_misspelled_section(tmp_path: Path) -> None:
    with pytest.raises(SpecErrors) as caught:
        load_app(write_app(tmp_path / "app", "name: x\ndata_api: { writeable: { notes: owner } }\n"))
    assert "writeable" in str(caught.value)


# --- with the real auth service: sessions from signing in --------------------------------------------

AUTH_APP_YAML = """\
name: data-auth
auth:
  confirm_email: false
data_api:
  writable:
    notes: owner
"""
SIGN_UP = "/_api/rest/v1/auth/signup-email"


@pytest.fixture
async def signed(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Services]]:
    """The app as the runtime assembles it, with its auth service, on a SQLite file."""
    app = load_app(write_app(tmp_path / "app", AUTH_APP_YAML, notes=NOTES_YAML))
    app = replace(app, auth=replace(app.auth, bcrypt_cost=4))  # bcrypt's lowest, for speed: app.yaml takes 10 or more
    services = open_services(app, data_dir=tmp_path / "data")
    await start_services(services)
    asgi = assemble(app, services)
    if UPDATE not in {getattr(route, "path", None) for route in asgi.routes}:  # until the runtime mounts it
        asgi.router.routes.extend(data_routes(app, services))
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi), base_url="http://testserver") as client:
            yield client, services
    finally:
        await services.auth.close()
        await services.close()


async def sign_up(client: httpx.AsyncClient, email: str) -> tuple[str, str]:
    """(user id, session token) of a new user."""
    response = await client.post(SIGN_UP, json={"email": email, "password": "correct horse 1", "nameOrUserData": "A"})
    assert response.status_code == 200, response.text
    return response.json()["user"]["_id"], response.json()["session"]["token"]


async def test_a_signed_in_user_updates_their_own_object(signed: tuple[httpx.AsyncClient, Services]) -> None:
    client, services = signed
    ada, ada_token = await sign_up(client, "ada@example.com")
    bob, _ = await sign_up(client, "bob@example.com")
    body = {"values": {"name": "Ada L."}, "options": OPTIONS, "id": ada, "model": "users"}
    response = await client.post(UPDATE, json=body, headers={"Session": ada_token})
    assert response.status_code == 200 and response.json()["name"] == "Ada L."
    assert "password" not in response.json()
    unset = {"updates": [{"field": "name", "updateType": "unset"}], "options": OPTIONS, "id": bob, "model": "users"}
    assert only_error(await client.post(UPDATE_FIELDS, json=unset, headers={"Session": ada_token}), 403)
    email = {**body, "values": {"email": "evil@example.com"}}
    error = only_error(await client.post(UPDATE, json=email, headers={"Session": ada_token}), 400)
    assert error["details"] == {"field": "email", "model": "users"}
    assert (await services.store.get("users", ada))["email"] == "ada@example.com"
    assert (await services.store.get("users", bob))["name"] == "A"


async def test_a_signed_in_user_owns_their_notes(signed: tuple[httpx.AsyncClient, Services]) -> None:
    client, services = signed
    ada, ada_token = await sign_up(client, "ada@example.com")
    _, bob_token = await sign_up(client, "bob@example.com")
    note = await services.store.create("notes", {"title": "Ada's", "owner": ada})
    body = {"values": {"title": "renamed"}, "options": OPTIONS, "id": note["_id"], "model": "notes"}
    assert only_error(await client.post(UPDATE, json=body, headers={"Session": bob_token}), 403)["code"] == "not_owner"
    response = await client.post(UPDATE, json=body, headers={"Session": ada_token})
    assert response.status_code == 200 and response.json()["title"] == "renamed"


async def test_a_signed_out_session_cannot_update(signed: tuple[httpx.AsyncClient, Services]) -> None:
    client, services = signed
    ada, token = await sign_up(client, "ada@example.com")
    assert (await client.post("/_api/rest/v1/auth/signout", json={}, headers={"Session": token})).status_code == 200
    body = {"values": {"name": "x"}, "options": OPTIONS, "id": ada, "model": "users"}
    error = only_error(await client.post(UPDATE, json=body, headers={"Session": token}), 401)
    assert error["code"] == "invalid_session_token"
    assert (await services.store.get("users", ada))["name"] == "A"


REAUTH_APP_YAML = """\
name: data-reauth
auth:
  confirm_email: false
data_api:
  writable:
    notes: owner
"""
LOCKED_NOTES_YAML = NOTES_YAML + "  locked: { type: boolean, default: false, reauth: true }\n"


async def test_a_reauth_field_needs_a_fresh_session_and_its_change_is_told(tmp_path: Path) -> None:
    app = load_app(write_app(tmp_path / "app", REAUTH_APP_YAML, notes=LOCKED_NOTES_YAML))
    services = open_services(app, data_dir=tmp_path / "data")
    later = [0.0]
    services.clock = lambda: time.time() + later[0]
    await start_services(services)
    try:
        transport = httpx.ASGITransport(app=assemble(app, services))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            ada, old = await sign_up(client, "ada@example.com")
            note = await services.store.create("notes", {"title": "Ada's", "owner": ada})
            target = {"options": OPTIONS, "id": note["_id"], "model": "notes"}
            lock = {**target, "updates": [{"field": "locked", "updateType": "set", "value": True}]}
            rename = {**target, "values": {"title": "renamed"}}
            later[0] = 301  # the session was signed in over 5 minutes ago
            for path, body in ((UPDATE, {**target, "values": {"locked": True, "title": "x"}}), (UPDATE_FIELDS, lock)):
                error = only_error(await client.post(path, json=body, headers={"Session": old}), 401)
                assert error["code"] == "reauth_required"
            assert (await services.store.get("notes", note["_id"]))["locked"] is False
            assert (await client.post(UPDATE, json=rename, headers={"Session": old})).status_code == 200  # any other field
            again = {"email": "ada@example.com", "password": "correct horse 1"}
            fresh = (await client.post("/_api/rest/v1/auth/signin-email", json=again)).json()["session"]["token"]
            response = await client.post(UPDATE_FIELDS, json=lock, headers={"Session": fresh})
            assert response.status_code == 200 and response.json()["locked"] is True
            assert (await client.post(UPDATE, json=rename, headers={"Session": old})).status_code == 401  # signed out
            await services.auth.mailer.drain()
            [notice] = [m for m in await services.cache.items(outbox_key("email")) if m["to"] == "ada@example.com"]
            assert notice["subject"] == "A security setting of your data-reauth account changed"
            assert "This changed on your data-reauth account (ada@example.com): locked turned on." in notice["text"]
    finally:
        await services.auth.close()
        await services.close()
