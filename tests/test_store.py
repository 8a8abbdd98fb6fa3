"""The store against real databases: the same suite on a SQLite file and on PostgreSQL.

Every test that takes ``database`` runs twice. On PostgreSQL each test gets its own schema,
dropped afterwards, so runs never see each other's tables.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Any, Callable

import psycopg
import pytest

from flowengine.errors import FlowError, ValidationFailed
from flowengine.models import Encrypted, Model, Secret, compile_models
from flowengine.spec.yamlfile import loads
from flowengine.store import MigrationError, Store, compile_query, open_store
from flowengine.store.query import QueryError

pytestmark = pytest.mark.anyio

USERS = """\
fields:
  email: { type: email, required: true, unique: true }
  name: { type: text, length: { max: 40 } }
  age: { type: integer, min: 0, max: 150 }
  score: decimal
  active: { type: boolean, default: true }
  role: { type: text, enum: [admin, member], default: member }
  password: { type: encrypted, length: { min: 8 } }
  totpSecret: secret
  tags: { type: list, items: text }
  address: { type: object, fields: { city: text } }
  birthday: date
  seenAt: { type: datetime, indexed: true }
"""
POSTS = """\
fields:
  title: { type: text, required: true }
  author: { type: reference, model: users }
"""
CODE = """\
transient: true
fields:
  code: { type: integer, required: true }
  userId: { type: reference, model: users }
"""


def models_from(**files: str) -> dict[str, Model]:
    documents = {name: loads(text, f"models/{name}.yaml") for name, text in files.items()}
    models, problems = compile_models((name, d.data, d.where) for name, d in documents.items())
    assert problems == []
    return models


MODELS = models_from(users=USERS, posts=POSTS, phoneVerificationCode=CODE)


@pytest.fixture(params=["sqlite", "postgresql"])
async def database(request, tmp_path, anyio_backend) -> Any:
    """``await database(models)`` → a started store on the test's database (one SQLite file,
    or one PostgreSQL schema); every store is closed afterwards."""
    url, schema = None, None
    if request.param == "postgresql":
        url, schema = request.getfixturevalue("postgres_url"), f"fe_test_{secrets.token_hex(6)}"
    stores: list[Store] = []

    async def open_one(models: dict[str, Model] = MODELS, start: bool = True) -> Store:
        store = open_store(url, models, tmp_path / "data", schema=schema)
        store.bcrypt_rounds = 4
        stores.append(store)
        if start:
            await store.start()
        return store

    open_one.kind = request.param  # type: ignore[attr-defined]
    yield open_one
    for store in stores:
        await store.close()
    if schema:
        with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as connection:
            connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture
async def store(database) -> Store:
    return await database()


async def everyone(store: Store) -> list[dict[str, Any]]:
    return await store.find_many("users", limit=1000)


async def raises(call: Callable[[], Any], kind: type[FlowError] = FlowError) -> FlowError:
    with pytest.raises(kind) as caught:
        await call()
    return caught.value


# --- objects in and out -----------------------------------------------------------------


async def test_create_returns_the_stored_object(store):
    created = await store.create("users", {"email": "Ann@Example.com", "age": 30, "tags": ["a"],
                                           "address": {"city": "Oslo"}, "birthday": "2000-01-02",
                                           "seenAt": "2026-01-02T03:04:05+01:00", "score": 2})  # fmt: skip
    assert len(created["_id"]) == 24 and created["createdAt"] == created["updatedAt"]
    assert created["email"] == "ann@example.com" and created["active"] is True and created["role"] == "member"
    assert await store.get("users", created["_id"]) == created
    read = await store.get("users", created["_id"])
    assert read["tags"] == ["a"] and read["address"] == {"city": "Oslo"}
    assert read["birthday"] == "2000-01-02" and read["seenAt"] == "2026-01-02T02:04:05.000Z"
    assert read["score"] == 2.0 and read["active"] is True


async def test_only_the_id_argument_chooses_an_objects_id(store):
    created = await store.create("users", {"email": "ann@example.com"}, id="u1")
    assert created["_id"] == "u1" and await store.get("users", "u1") == created
    refused = await raises(lambda: store.create("users", {"_id": "u2", "email": "bob@example.com"}), ValidationFailed)
    assert refused.message == "'_id' is not a field of users"  # what a client or flow sends is values


async def test_get_of_a_missing_or_odd_id_is_none(store):
    assert await store.get("users", "nope") is None
    assert await store.get("users", {"$ne": 1}) is None


async def test_encrypted_fields_are_hashed_and_never_read(store):
    created = await store.create("users", {"email": "a@b.co", "password": "correct horse"})
    assert "password" not in created
    assert "password" not in await store.get("users", created["_id"])
    assert all("password" not in user for user in await everyone(store))
    sealed = await store.get("users", created["_id"], sealed=True)
    assert isinstance(sealed["password"], Encrypted) and sealed["password"].matches("correct horse")
    assert not sealed["password"].matches("wrong horse")


async def test_secret_fields_are_stored_as_given_and_read_only_sealed(store):
    created = await store.create("users", {"email": "a@b.co", "totpSecret": "v1.sealed-by-totp"})
    updated = await store.update("users", created["_id"], {"name": "Ann"})
    stepped = await store.update_fields("users", created["_id"], [{"field": "age", "updateType": "increment", "value": 1}])
    found = await store.find_one("users", compile_query("this.email == 'a@b.co'", MODELS["users"]).evaluate({}))
    for answer in (created, updated, stepped, found, await store.get("users", created["_id"]), *await everyone(store)):
        assert "totpSecret" not in answer
    for sealed in (await store.get("users", created["_id"], sealed=True),
                   await store.find_one("users", sort={"email": "asc"}, sealed=True),
                   (await store.find_many("users", sealed=True))[0]):  # fmt: skip
        assert isinstance(sealed["totpSecret"], Secret) and sealed["totpSecret"].reveal() == "v1.sealed-by-totp"
        assert str(sealed["totpSecret"]) == "<secret>" and sealed["password"] is None  # none set
    refused = await raises(lambda: store.find_many("users", sort={"totpSecret": "asc"}))
    assert refused.code == "invalid_sort"
    with pytest.raises(QueryError, match="'totpSecret' is secret and cannot be queried"):
        compile_query("this.totpSecret == 'x'", MODELS["users"])


async def test_transient_model_is_validated_and_not_stored(store):
    code = await store.create("phoneVerificationCode", {"code": 123456, "userId": "someone"})
    assert code == {"code": 123456, "userId": "someone"}
    await raises(lambda: store.create("phoneVerificationCode", {"userId": "x"}), ValidationFailed)
    assert "phoneVerificationCode" not in store.tables


# --- bad data never lands ---------------------------------------------------------------


@pytest.mark.parametrize(
    "values, field",
    [
        ({"email": "a@b.co", "age": "old"}, "age"),
        ({"email": "a@b.co", "age": 1.5}, "age"),
        ({"name": "no email"}, "email"),
        ({"email": "not-an-email"}, "email"),
        ({"email": "a@b.co", "role": "boss"}, "role"),
        ({"email": "a@b.co", "name": "x" * 41}, "name"),
        ({"email": "a@b.co", "nickname": "x"}, "nickname"),
        ({"email": "a@b.co", "tags": "a"}, "tags"),
        ({"email": "a@b.co", "address": {"town": "x"}}, "address.town"),
        ({"email": "a@b.co", "birthday": "yesterday"}, "birthday"),
        ({"email": "a@b.co", "active": "yes"}, "active"),
    ],
)
async def test_bad_values_are_refused_and_nothing_is_stored(store, values, field):
    error = await raises(lambda: store.create("users", values), ValidationFailed)
    assert error.status == 400 and [item["details"]["field"] for item in error.items] == [field]
    assert field.split(".")[-1] in error.items[0]["message"]
    assert await everyone(store) == []


async def test_unique_violation_is_a_409_naming_the_field(store):
    first = await store.create("users", {"email": "a@b.co", "name": "first"})
    error = await raises(lambda: store.create("users", {"email": "A@B.CO", "name": "second"}))
    assert (error.status, error.code, error.details) == (409, "unique_violation", {"field": "email", "model": "users"})
    assert [user["name"] for user in await everyone(store)] == ["first"]
    other = await store.create("users", {"email": "c@d.co"})
    error = await raises(lambda: store.update("users", other["_id"], {"email": "a@b.co"}))
    assert error.code == "unique_violation"
    assert (await store.get("users", first["_id"]))["email"] == "a@b.co"
    assert (await store.get("users", other["_id"]))["email"] == "c@d.co"


async def test_dangling_reference_is_a_400_naming_the_field(store):
    error = await raises(lambda: store.create("posts", {"title": "t", "author": "no-such-user"}))
    assert (error.status, error.code, error.details) == (400, "invalid_reference", {"field": "author", "model": "posts"})
    assert await store.find_many("posts") == []
    user = await store.create("users", {"email": "a@b.co"})
    post = await store.create("posts", {"title": "t", "author": user["_id"]})
    error = await raises(lambda: store.update("posts", post["_id"], {"author": "nobody"}))
    assert error.code == "invalid_reference"
    assert (await store.get("posts", post["_id"]))["author"] == user["_id"]


async def test_deleting_a_referenced_object_clears_the_reference(store):
    user = await store.create("users", {"email": "a@b.co"})
    post = await store.create("posts", {"title": "t", "author": user["_id"]})
    assert await store.delete("users", user["_id"]) is True
    assert (await store.get("posts", post["_id"]))["author"] is None


# --- updates ----------------------------------------------------------------------------


async def test_update_replaces_given_fields(store):
    user = await store.create("users", {"email": "a@b.co", "name": "Ann", "age": 3})
    updated = await store.update("users", user["_id"], {"name": None, "age": 4})
    assert updated["name"] is None and updated["age"] == 4 and updated["email"] == "a@b.co"
    assert updated["updatedAt"] >= user["updatedAt"] and updated["createdAt"] == user["createdAt"]
    assert await store.update("users", "missing", {"age": 1}) is None
    error = await raises(lambda: store.update("users", user["_id"], {"email": None, "age": -1}), ValidationFailed)
    assert sorted(item["details"]["field"] for item in error.items) == ["age", "email"]
    assert (await store.get("users", user["_id"]))["age"] == 4


async def test_update_fields_applies_each_kind_of_change(store):
    user = await store.create("users", {"email": "a@b.co", "name": "Ann", "age": 3, "tags": ["a", "b"], "score": 1})
    changes = [
        {"field": "age", "updateType": "increment", "value": 2},
        {"field": "score", "updateType": "decrement", "value": 0.5},
        {"field": "name", "updateType": "unset"},
        {"field": "tags", "updateType": "push", "value": "c"},
        {"field": "role", "updateType": "set", "value": "admin"},
    ]
    updated = await store.update_fields("users", user["_id"], changes)
    assert (updated["age"], updated["score"], updated["name"], updated["role"]) == (5, 0.5, None, "admin")
    assert updated["tags"] == ["a", "b", "c"]
    pulled = await store.update_fields("users", user["_id"], [{"field": "tags", "updateType": "pull", "value": "a"}])
    assert pulled["tags"] == ["b", "c"]
    assert await store.update_fields("users", "missing", changes[:1]) is None


@pytest.mark.parametrize(
    "change, field",
    [
        ({"field": "age", "updateType": "decrement", "value": 10}, "age"),
        ({"field": "age", "updateType": "increment", "value": "1"}, "age"),
        ({"field": "name", "updateType": "increment", "value": 1}, "name"),
        ({"field": "email", "updateType": "unset"}, "email"),
        ({"field": "age", "updateType": "multiply", "value": 2}, "age"),
        ({"field": "ghost", "updateType": "set", "value": 1}, "ghost"),
        ({"field": "tags", "updateType": "push", "value": 5}, "tags"),
        ({"field": "name", "updateType": "push", "value": "x"}, "name"),
    ],
)
async def test_bad_field_updates_change_nothing(store, change, field):
    user = await store.create("users", {"email": "a@b.co", "name": "Ann", "age": 3, "tags": ["a"]})
    error = await raises(lambda: store.update_fields("users", user["_id"], [change]), ValidationFailed)
    assert error.items[0]["details"]["field"].split(".")[0] == field
    assert await store.get("users", user["_id"]) == user


async def test_delete(store):
    user = await store.create("users", {"email": "a@b.co"})
    assert await store.delete("users", user["_id"]) is True
    assert await store.delete("users", user["_id"]) is False
    assert await store.get("users", user["_id"]) is None


# --- reading many -----------------------------------------------------------------------


async def test_find_sort_limit_page_count(store):
    for index, name in enumerate(["d", "b", "a", "c", "e"]):
        await store.create("users", {"email": f"{name}@x.co", "name": name, "age": index})
    names = lambda found: [user["name"] for user in found]  # noqa: E731
    assert names(await store.find_many("users", sort={"name": "asc"}, limit=2, page=2)) == ["c", "d"]
    assert names(await store.find_many("users", sort={"age": "desc"}, limit=2)) == ["e", "c"]
    assert (await store.find_one("users", sort={"name": "desc"}))["name"] == "e"
    older = compile_query("this.age >= params.min", MODELS["users"])
    assert await store.count("users") == 5
    assert await store.count("users", older.evaluate({"params": {"min": 3}})) == 2
    assert await store.find_many("users", limit=2, page=9) == []


@pytest.mark.parametrize("limit, page", [(0, 1), (1001, 1), (10, 0), ("x", 1), (True, 1)])
async def test_bad_paging_is_a_400(store, limit, page):
    error = await raises(lambda: store.find_many("users", limit=limit, page=page))
    assert error.status == 400 and error.code == "invalid_paging"


async def test_sorting_by_an_unknown_field_is_refused(store):
    error = await raises(lambda: store.find_many("users", sort={"ghost": "asc"}))
    assert error.code == "invalid_sort" and error.details["field"] == "ghost"


# --- transactions and concurrency -------------------------------------------------------


async def test_a_transaction_commits_together(store):
    async with store.transaction():
        user = await store.create("users", {"email": "a@b.co"})
        await store.create("posts", {"title": "t", "author": user["_id"]})
        assert await store.count("posts") == 1  # the transaction sees its own writes
    assert await store.count("users") == 1 and await store.count("posts") == 1


async def test_a_failed_transaction_leaves_nothing(store):
    with pytest.raises(FlowError):
        async with store.transaction():
            await store.create("users", {"email": "a@b.co"})
            await store.create("users", {"email": "c@d.co"})
            await store.create("users", {"email": "a@b.co"})
    assert await everyone(store) == []


async def test_100_concurrent_creates_all_land(store):
    results = await asyncio.gather(
        *(store.create("users", {"email": f"user{i}@x.co", "age": i % 100}) for i in range(100)),
        return_exceptions=True,
    )
    assert [r for r in results if isinstance(r, BaseException)] == []
    assert await store.count("users") == 100
    assert len({r["_id"] for r in results}) == 100


async def test_concurrent_transactions_do_not_interleave(store):
    async def run(i: int) -> None:
        async with store.transaction():
            user = await store.create("users", {"email": f"u{i}@x.co"})
            await asyncio.sleep(0)
            await store.create("posts", {"title": str(i), "author": user["_id"]})
            if i % 2:
                raise FlowError("boom", "rolled back", status=400)

    results = await asyncio.gather(*(run(i) for i in range(20)), return_exceptions=True)
    assert sum(isinstance(r, FlowError) for r in results) == 10
    assert await store.count("users") == 10 and await store.count("posts") == 10


# --- migrations -------------------------------------------------------------------------


async def test_start_creates_tables_once(database):
    first = await database()
    assert await first.plan() == []
    second = await database()
    assert await second.start() == []


async def test_added_field_becomes_a_column(database):
    old = await database(models_from(users=USERS, posts=POSTS))
    user = await old.create("users", {"email": "a@b.co"})
    grown = USERS + "  nickname: { type: text, unique: true }\n  mentor: { type: reference, model: users }\n"
    new_models = models_from(users=grown, posts=POSTS)
    planner = await database(new_models, start=False)
    assert await planner.plan() == ["users: add field nickname", "users: add field mentor",
                                    "users: add unique index on nickname"]  # fmt: skip
    store = await database(new_models)
    assert (await store.get("users", user["_id"]))["nickname"] is None
    updated = await store.update("users", user["_id"], {"nickname": "annie", "mentor": user["_id"]})
    assert updated["nickname"] == "annie"
    other = await store.create("users", {"email": "c@d.co"})
    assert (await raises(lambda: store.update("users", other["_id"], {"nickname": "annie"}))).code == "unique_violation"
    assert (await raises(lambda: store.update("users", other["_id"], {"mentor": "x"}))).code == "invalid_reference"


async def test_type_change_is_refused_naming_model_and_field(database):
    await database()
    changed = models_from(users=USERS.replace("age: { type: integer, min: 0, max: 150 }", "age: text"), posts=POSTS)
    with pytest.raises(MigrationError) as caught:
        await database(changed)
    assert caught.value.problems == [
        "model 'users': field 'age' changes type from integer to text; give the new field another name, "
        "or convert the column by hand"
    ]


async def test_removed_field_with_data_is_refused_and_without_data_is_fine(database):
    store = await database()
    await store.create("users", {"email": "a@b.co", "name": "Ann"})
    without_name = models_from(users=USERS.replace("  name: { type: text, length: { max: 40 } }\n", ""), posts=POSTS)
    with pytest.raises(MigrationError, match="model 'users': field 'name' was removed but 1 object"):
        await database(without_name)
    without_score = models_from(users=USERS.replace("  score: decimal\n", ""), posts=POSTS)
    await database(without_score)


async def test_plan_lists_refusals_and_making_unique_needs_distinct_values(database):
    store = await database()
    await store.create("users", {"email": "a@b.co", "name": "twin"})
    await store.create("users", {"email": "c@d.co", "name": "twin"})
    unique_name = models_from(users=USERS.replace("name: { type: text,", "name: { type: text, unique: true,"), posts=POSTS)
    planner = await database(unique_name, start=False)
    assert await planner.plan() == [
        "refused: model 'users': field 'name' cannot become unique: some objects share a value"
    ]


# --- model rules: checked on create and after every update, which they roll back ---------

RULED = models_from(accounts="""\
fields:
  name: { type: text, required: true }
  phoneVerified: { type: boolean, default: false }
  twoFactorAuth: { type: boolean, default: false }
rules:
  - check: "!this.twoFactorAuth || this.phoneVerified"
    message: Verify a phone number before turning on two-factor sign-in
    field: twoFactorAuth
""")


@pytest.mark.anyio
async def test_a_rule_refuses_a_create_and_stores_nothing(database):
    store = await database(RULED)
    failed = await raises(lambda: store.create("accounts", {"name": "a", "twoFactorAuth": True}), ValidationFailed)
    assert failed.items[0]["details"]["field"] == "twoFactorAuth"
    assert "Verify a phone number" in failed.items[0]["message"]
    assert await store.find_many("accounts") == []


@pytest.mark.anyio
@pytest.mark.parametrize("how", ["update", "update_fields"])
async def test_a_rule_rolls_back_an_update_that_breaks_it(database, how):
    store = await database(RULED)
    account = await store.create("accounts", {"name": "a"})
    if how == "update":
        change = lambda: store.update("accounts", account["_id"], {"twoFactorAuth": True})  # noqa: E731
    else:
        change = lambda: store.update_fields(  # noqa: E731
            "accounts", account["_id"], [{"field": "twoFactorAuth", "updateType": "set", "value": True}])
    await raises(change, ValidationFailed)
    assert (await store.get("accounts", account["_id"]))["twoFactorAuth"] is False
    await store.update("accounts", account["_id"], {"phoneVerified": True})
    assert (await store.update("accounts", account["_id"], {"twoFactorAuth": True}))["twoFactorAuth"] is True


def test_rules_are_checked_when_the_model_loads():
    document = loads("fields:\n  a: text\nrules:\n  - check: this.b && other\n    message: m\n    field: c\n", "models/x.yaml")
    _, problems = compile_models([("x", document.data, document.where)])
    assert [str(p) for p in problems] == [
        "models/x.yaml:4:5: check: unknown name 'other' (a rule reads the object as 'this')",
        "models/x.yaml:4:5: check: 'b' is not a field of x",
        "models/x.yaml:6:5: field: 'c' is not a field of x",
    ]
