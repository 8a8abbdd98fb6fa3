"""The data nodes: create, read, update, delete and count an app's objects.

Each node is a thin shape over ``ctx.store``, which validates against the model, runs one
transaction per write (or joins the run's ``store.transaction()``), and turns constraint
failures into ``FlowError``s naming the field: a unique clash is a 409 ``unique_violation``,
a reference to a missing object a 400 ``invalid_reference``, bad values a 400 listing each
field. Reads never return hidden fields (``encrypted`` and ``secret``), unless a read node
says ``encrypted: true``: then they arrive sealed, usable by ``ECOMPARE`` (encrypted) and
``totp-verify`` (secret) and shown by nothing.

``where`` is an Altogic query, compiled to SQL when the app loads::

    findUser:
      type: find-one
      model: users
      where: this.email == params.body.email
      found: checkPassword
      not_found: noSuchUser

``updates`` (update-fields) maps each field to one change::

    updates:
      phone: { set: makeCode.phoneNumber }
      phoneVerified: { set: true }
      signIns: { increment: 1 }
      profilePicture: { unset: true }
      tags: { push: "'verified'" }
"""

from __future__ import annotations

from typing import Any, Mapping

from flowengine.registry import Param, node_type
from flowengine.store.query import Filter  # importing it lets flows compile `where` queries

UPDATE_TYPES = ("set", "unset", "increment", "decrement", "push", "pull")

_MODEL = Param.reference("model", description="the model's name")
_ID = Param.expression(required=True, description="the object's _id")
_WHERE = Param.query(description="an Altogic query on the model, like this.email == params.body.email")
_SORT = Param.literal({"type": "object", "additionalProperties": {"enum": ["asc", "desc"]}},
                      description="field: asc | desc, in order of priority")  # fmt: skip
_ENCRYPTED = Param.literal({"type": "boolean"}, default=False,
                           description="also read encrypted and secret fields, sealed (only ECOMPARE and totp-verify can use them)")  # fmt: skip
_VALUES = Param("expression", {"type": "object"}, required=True, description="field: expression")
_UPDATES = Param(
    "expression",
    {
        "type": "object",
        "minProperties": 1,
        "additionalProperties": {
            "type": "object",
            "minProperties": 1,
            "maxProperties": 1,
            "properties": {kind: {} for kind in UPDATE_TYPES},
            "additionalProperties": False,
        },
    },
    required=True,
    description="field: {set | unset | increment | decrement | push | pull: expression}",
)


@node_type("create-object", description="Validate an object and store it (a transient model's is only validated).",
           params={"model": _MODEL, "values": _VALUES})  # fmt: skip
async def create_object(ctx, params):
    return "next", await ctx.store.create(params["model"], params["values"], scope=ctx.scope)


@node_type("get-object", outputs=("found", "not_found"), description="Read one object by its _id.",
           params={"model": _MODEL, "id": _ID, "encrypted": _ENCRYPTED})  # fmt: skip
async def get_object(ctx, params):
    found = await ctx.store.get(params["model"], params["id"], sealed=params.get("encrypted", False))
    return ("found", found) if found is not None else ("not_found", None)


@node_type("find-one", outputs=("found", "not_found"), description="Read the first object a query matches.",
           params={"model": _MODEL, "where": _WHERE, "sort": _SORT, "encrypted": _ENCRYPTED})  # fmt: skip
async def find_one(ctx, params):
    found = await ctx.store.find_one(
        params["model"], _where(params), sort=params.get("sort"), sealed=params.get("encrypted", False)
    )
    return ("found", found) if found is not None else ("not_found", None)


@node_type(
    "find-many",
    outputs=("found", "not_found"),
    description="Read the objects a query matches, a page at a time.",
    params={
        "model": _MODEL, "where": _WHERE, "sort": _SORT, "encrypted": _ENCRYPTED,
        "limit": Param.expression(default=100, description="objects per page, 1 to 1000"),
        "page": Param.expression(default=1, description="which page, from 1"),
    },
)  # fmt: skip
async def find_many(ctx, params):
    found = await ctx.store.find_many(
        params["model"], _where(params), sort=params.get("sort"), limit=params.get("limit", 100),
        page=params.get("page", 1), sealed=params.get("encrypted", False),
    )  # fmt: skip
    return ("found" if found else "not_found"), found


@node_type("count", description="Count the objects a query matches (all, without a query).",
           params={"model": _MODEL, "where": _WHERE})  # fmt: skip
async def count(ctx, params):
    return "next", await ctx.store.count(params["model"], _where(params))


@node_type("update-fields", outputs=("next", "not_found"),
           description="Change some fields of one object: set, unset, increment, decrement, push, pull.",
           params={"model": _MODEL, "id": _ID, "updates": _UPDATES})  # fmt: skip
async def update_fields(ctx, params):
    updates = [_update(field, change) for field, change in params["updates"].items()]
    updated = await ctx.store.update_fields(params["model"], params["id"], updates)
    return ("next", updated) if updated is not None else ("not_found", None)


@node_type("update-object", outputs=("next", "not_found"),
           description="Replace the given fields of one object (null removes a value).",
           params={"model": _MODEL, "id": _ID, "values": _VALUES})  # fmt: skip
async def update_object(ctx, params):
    updated = await ctx.store.update(params["model"], params["id"], params["values"])
    return ("next", updated) if updated is not None else ("not_found", None)


@node_type("delete-object", outputs=("next", "not_found"), description="Delete one object by its _id.",
           params={"model": _MODEL, "id": _ID})  # fmt: skip
async def delete_object(ctx, params):
    deleted = await ctx.store.delete(params["model"], params["id"])
    return ("next", {"_id": params["id"]}) if deleted else ("not_found", None)


def _where(params: Mapping[str, Any]) -> Filter | None:
    return params.get("where")


def _update(field: str, change: Mapping[str, Any]) -> dict[str, Any]:
    (kind, value), = change.items()
    return {"field": field, "updateType": kind, "value": value}
