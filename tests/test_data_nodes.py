"""The data nodes, alone through a run context and inside compiled flows, on both databases."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from test_store import MODELS, database  # noqa: F401  (fixture)

from flowengine.context import RunContext, Services
from flowengine.errors import FlowError, ValidationFailed
from flowengine.graph import PARAM_COMPILERS, CompileContext, compile_flow
from flowengine.interpreter import run_flow
from flowengine.models import Encrypted
from flowengine.registry import Registry
from flowengine.spec.yamlfile import loads
from flowengine_nodes import data

pytestmark = pytest.mark.anyio


@pytest.fixture
async def ctx(database):  # noqa: F811
    return RunContext(Services(store=await database()), scope={"session": {"userId": "u1"}}, flow="t")


def where(source: str, scope: dict[str, Any] | None = None, model: str = "users"):
    query = PARAM_COMPILERS["query"](source, CompileContext({"model": model}, MODELS))
    return query.evaluate(scope or {})


async def test_create_object_stores_and_returns_it(ctx):
    output, created = await data.create_object(ctx, {"model": "users", "values": {"email": "a@b.co", "password": "long enough"}})
    assert output == "next" and created["email"] == "a@b.co" and "password" not in created
    assert await ctx.store.get("users", created["_id"]) == created


async def test_create_object_with_a_transient_model_only_validates(ctx):
    output, code = await data.create_object(ctx, {"model": "phoneVerificationCode", "values": {"code": 123456}})
    assert (output, code) == ("next", {"code": 123456})


async def test_create_object_errors_name_the_field(ctx):
    await data.create_object(ctx, {"model": "users", "values": {"email": "a@b.co"}})
    with pytest.raises(FlowError) as caught:
        await data.create_object(ctx, {"model": "users", "values": {"email": "a@b.co"}})
    assert (caught.value.status, caught.value.code, caught.value.details["field"]) == (409, "unique_violation", "email")
    with pytest.raises(ValidationFailed) as caught:
        await data.create_object(ctx, {"model": "users", "values": {"email": "x", "age": "y"}})
    assert sorted(item["details"]["field"] for item in caught.value.items) == ["age", "email"]
    with pytest.raises(FlowError) as caught:
        await data.create_object(ctx, {"model": "posts", "values": {"title": "t", "author": "ghost"}})
    assert (caught.value.status, caught.value.code) == (400, "invalid_reference")
    assert await ctx.store.count("users") == 1 and await ctx.store.count("posts") == 0


async def test_get_object(ctx):
    _, user = await data.create_object(ctx, {"model": "users", "values": {"email": "a@b.co", "password": "long enough"}})
    assert await data.get_object(ctx, {"model": "users", "id": user["_id"]}) == ("found", user)
    assert await data.get_object(ctx, {"model": "users", "id": "nope"}) == ("not_found", None)
    _, sealed = await data.get_object(ctx, {"model": "users", "id": user["_id"], "encrypted": True})
    assert isinstance(sealed["password"], Encrypted)


async def test_find_one_and_find_many(ctx):
    for name, age in (("a", 30), ("b", 10), ("c", 50)):
        await data.create_object(ctx, {"model": "users", "values": {"email": f"{name}@x.co", "age": age}})
    adults = where("this.age >= params.body.min", {"params": {"body": {"min": 18}}})
    output, found = await data.find_one(ctx, {"model": "users", "where": adults, "sort": {"age": "desc"}})
    assert output == "found" and found["email"] == "c@x.co"
    assert await data.find_one(ctx, {"model": "users", "where": where("this.age > 99")}) == ("not_found", None)
    output, found = await data.find_many(ctx, {"model": "users", "where": adults, "sort": {"age": "asc"}, "limit": 1, "page": 2})
    assert output == "found" and [u["email"] for u in found] == ["c@x.co"]
    output, found = await data.find_many(ctx, {"model": "users", "limit": "2", "page": 1})
    assert output == "found" and len(found) == 2
    assert await data.find_many(ctx, {"model": "users", "where": where("this.age > 99")}) == ("not_found", [])
    assert await data.count(ctx, {"model": "users", "where": adults}) == ("next", 2)
    assert await data.count(ctx, {"model": "users"}) == ("next", 3)


async def test_update_fields_update_object_delete_object(ctx):
    _, user = await data.create_object(ctx, {"model": "users", "values": {"email": "a@b.co", "age": 1, "name": "x"}})
    updates = {"age": {"increment": 2}, "name": {"unset": True}, "tags": {"push": "new"}, "role": {"set": "admin"}}
    output, updated = await data.update_fields(ctx, {"model": "users", "id": user["_id"], "updates": updates})
    assert output == "next" and (updated["age"], updated["name"], updated["tags"], updated["role"]) == (3, None, ["new"], "admin")
    assert await data.update_fields(ctx, {"model": "users", "id": "nope", "updates": updates}) == ("not_found", None)
    output, updated = await data.update_object(ctx, {"model": "users", "id": user["_id"], "values": {"name": "y"}})
    assert output == "next" and updated["name"] == "y" and updated["age"] == 3
    assert await data.update_object(ctx, {"model": "users", "id": "nope", "values": {}}) == ("not_found", None)
    assert await data.delete_object(ctx, {"model": "users", "id": user["_id"]}) == ("next", {"_id": user["_id"]})
    assert await data.delete_object(ctx, {"model": "users", "id": user["_id"]}) == ("not_found", None)


# --- inside compiled flows --------------------------------------------------------------

SIGN_UP = """\
service: signUp
start: makeUser
nodes:
  makeUser:
    type: create-object
    model: users
    values: { email: params.body.email, age: params.body.age }
    next: done
    error: failed
  done:
    type: return-success
    body: makeUser
  failed:
    type: return-error
    status: 409
    message: "{{ error.message }}"
"""

FIND = """\
service: findByEmail
start: findUser
nodes:
  findUser:
    type: find-one
    model: users
    where: this.email == params.body.email && this.age >= 18
    found: done
    not_found: missing
  done:
    type: return-success
    body: findUser.email
  missing:
    type: return-error
    status: 404
    message: no such user
"""


def flow(text: str):
    registry = Registry()
    for module in ("flowengine_nodes.data", "flowengine_nodes.responses"):
        registry.add_module(module)
    compiled, problems = compile_flow(loads(text, "flows/f.yaml"), registry, MODELS)
    assert problems == []
    return compiled


async def run(compiled, services: Services, body: dict[str, Any]):
    return await run_flow(compiled, services, {"params": {"body": body}})


async def test_100_concurrent_create_object_runs_store_100_rows(database):  # noqa: F811
    services = Services(store=await database())
    sign_up = flow(SIGN_UP)
    replies = await asyncio.gather(*(run(sign_up, services, {"email": f"u{i}@x.co", "age": i}) for i in range(100)))
    assert {reply.status for reply in replies} == {200}
    assert await services.store.count("users") == 100
    duplicate = await run(sign_up, services, {"email": "u7@x.co", "age": 1})
    assert duplicate.status == 409 and "email" in duplicate.body["errors"][0]["message"]


async def test_a_flow_query_is_compiled_once_and_bound_per_run(database):  # noqa: F811
    services = Services(store=await database())
    await services.store.create("users", {"email": "ann@x.co", "age": 30})
    await services.store.create("users", {"email": "kid@x.co", "age": 9})
    find = flow(FIND)
    assert (await run(find, services, {"email": "ANN@x.co"})).body == "ann@x.co"
    assert (await run(find, services, {"email": "kid@x.co"})).status == 404
    assert (await run(find, services, {"email": "' OR 1=1 --"})).status == 404
    assert (await run(find, services, {})).status == 404


def test_a_bad_query_is_a_load_time_error_with_its_location():
    registry = Registry()
    registry.add_module("flowengine_nodes.data")
    registry.add_module("flowengine_nodes.responses")
    text = FIND.replace("this.age >= 18", "this.agee >= 18")
    _, problems = compile_flow(loads(text, "flows/f.yaml"), registry, MODELS)
    assert [str(p.where) for p in problems] == ["flows/f.yaml:7:12"]
    assert "'agee' is not a field of users (did you mean 'age'?)" in problems[0].message
