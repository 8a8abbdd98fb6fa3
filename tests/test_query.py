"""Altogic queries compiled to SQL: each operator and function finds the right rows on
both databases, run values are only ever bound values, and what has no SQL form is refused
when the app loads."""

from __future__ import annotations

from typing import Any

import pytest
from test_store import MODELS, database  # noqa: F401  (fixture)

from flowengine.errors import FlowError
from flowengine.graph import PARAM_COMPILERS, CompileContext
from flowengine.store import QueryError, compile_query

pytestmark = pytest.mark.anyio

PEOPLE = [
    {"email": "ann@x.co", "name": "Ann", "age": 31, "tags": ["admin", "ops"], "active": True, "score": 1.5,
     "seenAt": "2026-01-01T10:00:00Z", "birthday": "1990-05-01"},
    {"email": "bob@y.org", "name": "Bob", "age": 17, "tags": ["ops"], "active": False, "score": 2.5,
     "seenAt": "2026-02-01T10:00:00Z"},
    {"email": "cy@x.co", "name": "Cyrano", "age": 45, "tags": [], "active": True},
    {"email": "dee@z.net", "age": 18, "active": True, "seenAt": "2025-12-31T23:00:00-02:00"},
]  # fmt: skip


@pytest.fixture
async def people(database):  # noqa: F811
    store = await database()
    for person in PEOPLE:
        await store.create("users", person)
    return store


async def names(store: Any, source: str, **params: Any) -> list[str]:
    query = compile_query(source, MODELS["users"])
    found = await store.find_many("users", query.evaluate({"params": params}), sort={"email": "asc"})
    return [person["email"].split("@")[0] for person in found]


@pytest.mark.parametrize(
    "source, expected",
    [
        ("this.age >= 18", ["ann", "cy", "dee"]),
        ("this.age > 18 && this.age < 45", ["ann"]),
        ("this.age <= 17 || this.age == 45", ["bob", "cy"]),
        ("this.age != 31", ["bob", "cy", "dee"]),
        ("this.name != 'Bob'", ["ann", "cy", "dee"]),
        ("!(this.name == 'Bob')", ["ann", "cy", "dee"]),
        ("18 <= this.age", ["ann", "cy", "dee"]),
        ("!(this.age >= 18)", ["bob"]),
        ("NOT(this.age >= 18)", ["bob"]),
        ("AND(this.active, this.age > 20)", ["ann", "cy"]),
        ("OR(this.name == 'Bob', this.name == 'Ann')", ["ann", "bob"]),
        ("this.active", ["ann", "cy", "dee"]),
        ("!this.active", ["bob"]),
        ("this.active == false", ["bob"]),
        ("this.name == null", ["dee"]),
        ("this.name != null", ["ann", "bob", "cy"]),
        ("EXISTS(this.name)", ["ann", "bob", "cy"]),
        ("!EXISTS(this.seenAt)", ["cy"]),
        ("INCLUDES(this.name, 'yr')", ["cy"]),
        ("INCLUDES(this.name, 'ANN')", []),
        ("INCLUDES(LOWER(this.name), 'ann')", ["ann"]),
        ("TOUPPER(this.name) == 'BOB'", ["bob"]),
        ("STARTSWITH(this.email, 'b')", ["bob"]),
        ("ENDSWITH(this.email, '.co')", ["ann", "cy"]),
        ("ENDSWITH(this.email, '')", ["ann", "bob", "cy", "dee"]),
        ("ENDSWITH(this.email, 'a-very-long-suffix-longer-than-any.co')", []),
        ("IN(this.age, [17, 45, 99])", ["bob", "cy"]),
        ("IN(this.name, ['Ann', 'Nobody'])", ["ann"]),
        ("IN('ops', this.tags)", ["ann", "bob"]),
        ("INCLUDES(this.tags, 'admin')", ["ann"]),
        ("!INCLUDES(this.tags, 'ops')", ["cy", "dee"]),
        ("this.score > 2", ["bob"]),
        ("this.seenAt > '2026-01-01T00:30:00+01:00'", ["ann", "bob", "dee"]),
        ("this.seenAt < '2026-01-01'", []),
        ("this.birthday == '1990-05-01'", ["ann"]),
        ("this.createdAt != null && this._id != ''", ["ann", "bob", "cy", "dee"]),
        ("(this.age > 40 || this.name == 'Bob') && this.active", ["cy"]),
        ("true", ["ann", "bob", "cy", "dee"]),
        ("1 == 2 || this.age == 18", ["dee"]),
    ],
)
async def test_each_operator_and_function_finds_the_right_rows(people, source, expected):
    assert await names(people, source) == expected


@pytest.mark.parametrize(
    "source, params, expected",
    [
        ("this.email == params.email", {"email": "BOB@y.org"}, ["bob"]),
        ("this.email == params.email", {}, []),
        ("this.age >= params.min", {"min": "18"}, ["ann", "cy", "dee"]),
        ("this.age > params.min", {"min": 17.0}, ["ann", "cy", "dee"]),
        ("this.active == params.flag", {"flag": "false"}, ["bob"]),
        ("IN(this.age, params.ages)", {"ages": [18, "31"]}, ["ann", "dee"]),
        ("IN(this.age, params.ages)", {"ages": []}, []),
        ("INCLUDES(this.name, params.part)", {"part": "o"}, ["bob", "cy"]),
        ("STARTSWITH(this.name, params.start + 'y')", {"start": "C"}, ["cy"]),
        ("params.all == true || this.age == 17", {"all": True}, ["ann", "bob", "cy", "dee"]),
        ("params.all == true || this.age == 17", {"all": False}, ["bob"]),
        ("this.name == params.name", {"name": 5}, []),
    ],
)
async def test_run_values_are_bound_and_converted(people, source, params, expected):
    assert await names(people, source, **params) == expected


@pytest.mark.parametrize(
    "value",
    ["' OR 1=1 --", '"; DROP TABLE users; --', "x' OR 'a'='a", "%", "_", "\\", "ann@x.co' --", "*", "[a]"],
)
async def test_injection_shaped_values_are_just_values(people, value):
    for source in ("this.email == params.v", "INCLUDES(this.email, params.v)", "STARTSWITH(this.name, params.v)",
                   "ENDSWITH(this.email, params.v)", "IN(this.email, [params.v])", "INCLUDES(this.tags, params.v)"):  # fmt: skip
        assert await names(people, source, v=value) == []
    assert await people.count("users") == 4


@pytest.mark.parametrize(
    "source, value, field",
    [
        ("this.age == params.v", "old", "age"),
        ("this.age > params.v", 17.5, "age"),
        ("this.age == params.v", [1], "age"),
        ("IN(this.age, params.v)", 3, "age"),
        ("this.active == params.v", "maybe", "active"),
        ("this.seenAt > params.v", "soon", "seenAt"),
        ("this.birthday == params.v", "2026-02-30", "birthday"),
    ],
)
async def test_a_value_that_cannot_be_converted_is_a_400_naming_the_field(people, source, value, field):
    with pytest.raises(FlowError) as caught:
        await names(people, source, v=value)
    assert (caught.value.status, caught.value.code, caught.value.details) == (400, "invalid_query_value", {"field": field})


async def test_find_one_and_count_take_queries(people):
    query = compile_query("this.age >= 18 && INCLUDES(this.email, '.co')", MODELS["users"])
    assert await people.count("users", query.evaluate({})) == 2
    assert (await people.find_one("users", query.evaluate({}), sort={"age": "desc"}))["name"] == "Cyrano"


def test_names_used_besides_this():
    query = compile_query("this.email == params.body.email && this.age > user.age && IN(this.name, [session.name])",
                          MODELS["users"])  # fmt: skip
    assert query.names == {"params", "user", "session"}
    assert [e.source for e in query.expressions][:1] == [query.source]


@pytest.mark.parametrize(
    "source, message",
    [
        ("this.nope == 1", "'nope' is not a field of users"),
        ("this.emial == 1", "(did you mean 'email'?)"),
        ("this.password == 'x'", "'password' is encrypted and cannot be queried"),
        ("this.address.city == 'Oslo'", "reading inside a field ('this.address.city') is not supported"),
        ("this.tags == ['a']", "'tags' is a list; compare its items with INCLUDES or IN instead"),
        ("this.age + 1 > 3", "'this.age + 1' has no SQL form"),
        ("this.name", "'this.name' is not a condition"),
        ("this", "'this' has no SQL form"),
        ("LENGTH(this.name) > 3", "'LENGTH(this.name)' has no SQL form"),
        ("ISEMPTY(this.name)", "ISEMPTY() with these arguments has no SQL form"),
        ("INCLUDES(this.age, 1)", "INCLUDES: field 'age' is not a list"),
        ("STARTSWITH(this.age, '1')", "STARTSWITH: field 'age' is not text"),
        ("STARTSWITH('abc', this.name)", "STARTSWITH: ''abc'' must be a field of this"),
        ("LOWER(this.age) == 'x'", "LOWER: field 'age' is not text"),
        ("this.age > null", "null can only be compared with == or !="),
        ("this.age >", "syntax error"),
        ("this.email in ['a']", "'in' (use IN or INCLUDES) not supported"),
    ],
)
def test_what_has_no_sql_form_is_refused_at_load_time(source, message):
    with pytest.raises(QueryError) as caught:
        compile_query(source, MODELS["users"])
    assert message in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_a_transient_model_cannot_be_queried():
    with pytest.raises(QueryError, match="model 'phoneVerificationCode' is transient"):
        compile_query("this.code == 1", MODELS["phoneVerificationCode"])


def test_flows_compile_query_params_through_the_graph_hook():
    compile = PARAM_COMPILERS["query"]
    query = compile("this.email == params.body.email", CompileContext({"model": "users"}, MODELS))
    assert query.names == {"params"}
    with pytest.raises(QueryError, match="unknown model 'user' \\(did you mean 'users'\\?\\)"):
        compile("this.email == 1", CompileContext({"model": "user"}, MODELS))
