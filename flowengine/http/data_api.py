"""The Altogic data API the tutorial apps call: change one object, or some of its fields.

Exactly as the official client's ``DBObject`` sends them::

    POST /_api/rest/v1/db/object/update         {values, options, id, model}   → the updated object
    POST /_api/rest/v1/db/object/update-fields  {updates: [{field, updateType, value}], options, id, model}

(``options`` — ``cache``, ``returnTop`` — mean nothing here: there is no object cache and
every object is top-level.) A client is a browser in a stranger's hands, so everything is
refused unless a rule allows it:

- only a signed-in user (``services.auth``), and only with a valid client key when the
  app lists client keys;
- only the models ``data_api.writable`` in ``app.yaml`` names; ``users`` is writable by
  default, each user their own object, and ``users: false`` closes it;
- only objects whose owner field holds the signed-in user's ``_id`` (``_id`` itself for
  ``users``): an unknown id is a 404, someone else's object a 403;
- only fields the model does not mark ``readonly`` or ``private``, never an encrypted field,
  the owner field or ``_id``/``createdAt``/``updatedAt``, and never the ``users`` identity
  fields that only the auth flows change (``IDENTITY_FIELDS``).

Every refused field is one item of a 400 ``validation_error`` naming it, and nothing is
stored; the store's own validation answers the same way for bad values, unique values and
the model's ``rules`` (``!this.twoFactorAuth || this.phoneVerified`` is how the two-factor
app allows the toggle only with a verified phone). ``private`` fields are left out of the
answer::

    data_api:
      writable:
        notes: owner        # notes whose `owner` field (a reference to users) is the user
        users: false        # no user may change their own object here (default: owner _id)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Iterable, Mapping

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from flowengine.context import Services
from flowengine.errors import FlowError, Location, SpecError, SpecErrors, ValidationFailed
from flowengine.http.requests import DEFAULT_BODY_LIMIT, read_json
from flowengine.models import SYSTEM_FIELDS, Model
from flowengine.spec.app import App

PREFIX = "/_api/rest/v1/db/object"
USERS = "users"
#: Built-in ``users`` fields that only the auth flows may change (sign-up, verification,
#: change-email, a phone verification flow...): writing them here would skip those checks.
IDENTITY_FIELDS = frozenset({
    "email", "password", "emailVerified", "phone", "phoneVerified",
    "provider", "providerUserId", "signUpAt", "lastLoginAt",
})  # fmt: skip
#: What is writable when ``app.yaml`` says nothing: each user their own ``users`` object.
DEFAULT_WRITABLE: dict[str, Any] = {USERS: "_id"}


@dataclass(frozen=True)
class Writable:
    """What the data API may change in one model, and whose objects those are."""

    model: Model
    owner: str

    def refusals(self, names: Iterable[Any]) -> list[dict[str, Any]]:
        """One validation item per field a client may not write."""
        items = []
        for name in names:
            reason = self.refusal(name)
            if reason:
                items.append(_item(self.model.name, str(name), reason))
        return items

    def refusal(self, name: Any) -> str | None:
        f = self.model.fields.get(name) if isinstance(name, str) else None
        if name in SYSTEM_FIELDS:
            return f"field '{name}' is set by the server and cannot be changed"
        if f is None:
            return f"'{name}' is not a field of {self.model.name}"
        if self.model.name == USERS and name in IDENTITY_FIELDS:
            return f"field '{name}' can only be changed through the auth API"
        if f.readonly or f.private or f.type == "encrypted" or name == self.owner:
            return f"field '{name}' cannot be changed through the data API"
        return None

    def shown(self, found: Mapping[str, Any]) -> dict[str, Any]:
        """The object as a client may see it: no private fields."""
        return {k: v for k, v in found.items() if not (k in self.model.fields and self.model.fields[k].private)}


# --- app.yaml's data_api section ----------------------------------------------------------------


def writable_models(app: App) -> tuple[dict[str, Writable], list[SpecError]]:
    """Compile ``data_api.writable`` (over the default) into rules, with every problem found."""
    section = (app.settings.get("data_api") or {}).get("writable") or {}
    document = app.documents.get("app.yaml")
    rules: dict[str, Writable] = {}
    problems: list[SpecError] = []
    for name, owner in {**DEFAULT_WRITABLE, **section}.items():
        if owner is False or (name not in section and name not in app.models):
            continue
        problem = _problem(app.models.get(name), name, owner)
        if problem is None:
            rules[name] = Writable(app.models[name], owner)
        else:
            where = document.value_where("data_api", "writable", name) if document else Location("app.yaml")
            problems.append(SpecError(where, problem))
    return rules, problems


def check_data_api(app: App) -> list[SpecError]:
    """The ``data_api`` section's problems, for ``flowengine check`` and app loading."""
    return writable_models(app)[1]


def _problem(model: Model | None, name: str, owner: str) -> str | None:
    if model is None:
        return f"unknown model '{name}'"
    if model.transient:
        return f"'{name}' is transient: there is nothing to update"
    f = model.fields.get(owner)
    if (owner == "_id" and name == USERS) or (f is not None and f.type == "reference" and f.model == USERS):
        return None
    return f"owner '{owner}' must be a field of {name} that refers to {USERS} (or _id for {USERS} itself)"


# --- the routes ---------------------------------------------------------------------------------


def data_routes(app: App, services: Services) -> list[Route]:
    """The data API's two routes; raises ``SpecErrors`` when ``data_api`` is wrong."""
    rules, problems = writable_models(app)
    if problems:
        raise SpecErrors(problems)
    api = _DataAPI(rules, services, app.settings)
    return [
        Route(PREFIX + "/update", api.update, methods=["POST"]),
        Route(PREFIX + "/update-fields", api.update_fields, methods=["POST"]),
    ]


class _DataAPI:
    def __init__(self, rules: dict[str, Writable], services: Services, settings: Mapping[str, Any]) -> None:
        self.rules = rules
        self.services = services
        self.client_keys = frozenset(settings.get("client_keys") or ())
        self.body_limit = (settings.get("limits") or {}).get("body_bytes", DEFAULT_BODY_LIMIT)

    async def update(self, request: Request) -> Response:
        user, body, rule = await self.begin(request)
        values = body.get("values")
        if not isinstance(values, Mapping) or not values:
            raise _invalid("values", "values must be an object of the fields to change")
        return await self.write(rule, body["id"], user, list(values),
                                lambda store: store.update(rule.model.name, body["id"], values))  # fmt: skip

    async def update_fields(self, request: Request) -> Response:
        user, body, rule = await self.begin(request)
        updates = body.get("updates")
        updates = [updates] if isinstance(updates, Mapping) else updates
        if not isinstance(updates, list) or not updates or not all(isinstance(u, Mapping) for u in updates):
            raise _invalid("updates", "updates must be a list of {field, updateType, value}")
        return await self.write(rule, body["id"], user, [u.get("field") for u in updates],
                                lambda store: store.update_fields(rule.model.name, body["id"], updates))  # fmt: skip

    async def begin(self, request: Request) -> tuple[Any, dict[str, Any], Writable]:
        """Who asks (before what they sent), the body, and the rule of its model."""
        if self.client_keys and request.headers.get("x-client-key") not in self.client_keys:
            raise FlowError("invalid_client_key", "Missing or invalid client key (X-Client-Key)", status=401)
        user = await self.signed_in(request)
        body = await read_json(request, self.body_limit)
        if not isinstance(body, dict):
            raise _invalid("", "the body must be a JSON object")
        for name in ("model", "id"):
            if not isinstance(body.get(name), str) or not body[name]:
                raise _invalid(name, f"{name} is required")
        rule = self.rules.get(body["model"])
        if rule is None:  # unknown and closed models look the same
            raise FlowError("model_not_writable", f"objects of '{body['model']}' cannot be changed through the data API",
                            status=403, details={"model": body["model"]})  # fmt: skip
        return user, body, rule

    async def signed_in(self, request: Request) -> Any:
        found = await self.services.auth.authenticate(request, required=True) if self.services.auth else None
        if found is None:
            raise FlowError("missing_session_token", "A session token is required", status=401,
                            origin="session_token_error")  # fmt: skip
        return found[1]

    async def write(self, rule: Writable, id: str, user: Any, changed: list[Any],
                    change: Callable[[Any], Awaitable[Any]]) -> Response:  # fmt: skip
        """Check the owner and the fields, then change the object, in one transaction: the
        object cannot change hands in between, and a refused update leaves nothing behind."""
        store = self.services.store
        async with store.transaction():
            found = await store.get(rule.model.name, id, locked=True)
            if found is None:
                raise _not_found(rule.model.name, id)
            if found.get(rule.owner) != user["_id"]:
                raise FlowError("not_owner", f"this {rule.model.name} object belongs to another user", status=403,
                                details={"model": rule.model.name, "id": id})  # fmt: skip
            refused = rule.refusals(changed)
            if refused:
                raise ValidationFailed(refused)
            updated = await change(store)
            if updated is None:
                raise _not_found(rule.model.name, id)
        return JSONResponse(rule.shown(updated))


def _not_found(model: str, id: str) -> FlowError:
    return FlowError("object_not_found", f"there is no {model} object with id '{id}'", status=404,
                     details={"model": model, "id": id})  # fmt: skip


def _item(model: str, field: str, message: str) -> dict[str, Any]:
    return {"origin": "client_error", "code": "validation_error", "message": message,
            "details": {"field": field, "model": model}}  # fmt: skip


def _invalid(field: str, message: str) -> ValidationFailed:
    return ValidationFailed([{"origin": "client_error", "code": "validation_error", "message": message,
                              "details": {"field": field}}])  # fmt: skip
