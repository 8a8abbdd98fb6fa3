"""The Altogic data API the tutorial apps call: change one object, or some of its fields.

Exactly as the official client's ``DBObject`` sends them::

    POST /_api/rest/v1/db/object/update         {values, options, id, model}   → the updated object
    POST /_api/rest/v1/db/object/update-fields  {updates: [{field, updateType, value}], options, id, model}

(``options`` — ``cache``, ``returnTop`` — mean nothing here: there is no object cache and
every object is top-level.) A client is a browser in a stranger's hands, so everything is
refused unless a rule allows it:

- only a signed-in user (``services.auth``; client keys are checked by the app's middleware);
- only the models ``data_api.writable`` in ``app.yaml`` names; ``users`` is writable by
  default, each user their own object, and ``users: false`` closes it;
- only objects whose owner field holds the signed-in user's ``_id`` (``_id`` itself for
  ``users``): an unknown id is a 404, someone else's object a 403;
- only fields the model does not mark ``readonly`` or ``private``, never an encrypted or
  secret field, the owner field or ``_id``/``createdAt``/``updatedAt``, and never the ``users`` identity
  fields that only the auth flows change (``IDENTITY_FIELDS``).

A field the model marks ``reauth: true`` is written only from a fresh session (signed in
within ``auth.session.fresh``, 5 minutes by default), else 401 ``reauth_required`` and the
client signs in again; when such a field changes, the user's other sessions end and the
account's address gets a ``setting-changed`` notice.

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

from typing import TYPE_CHECKING, Any, Awaitable, Callable, Mapping

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from flowengine.context import Services
from flowengine.errors import FlowError, SpecErrors, ValidationFailed
from flowengine.http.requests import DEFAULT_BODY_LIMIT, read_json
from flowengine.access import Writable, writable_models
from flowengine.spec.app import App

if TYPE_CHECKING:
    from flowengine.auth.service import Caller

PREFIX = "/_api/rest/v1/db/object"
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
        self.body_limit = (settings.get("limits") or {}).get("body_bytes", DEFAULT_BODY_LIMIT)

    async def update(self, request: Request) -> Response:
        caller, body, rule = await self.begin(request)
        values = body.get("values")
        if not isinstance(values, Mapping) or not values:
            raise _invalid("values", "values must be an object of the fields to change")
        return await self.write(rule, body["id"], caller, list(values),
                                lambda store: store.update(rule.model.name, body["id"], values))  # fmt: skip

    async def update_fields(self, request: Request) -> Response:
        caller, body, rule = await self.begin(request)
        updates = body.get("updates")
        updates = [updates] if isinstance(updates, Mapping) else updates
        if not isinstance(updates, list) or not updates or not all(isinstance(u, Mapping) for u in updates):
            raise _invalid("updates", "updates must be a list of {field, updateType, value}")
        return await self.write(rule, body["id"], caller, [u.get("field") for u in updates],
                                lambda store: store.update_fields(rule.model.name, body["id"], updates))  # fmt: skip

    async def begin(self, request: Request) -> tuple[Caller, dict[str, Any], Writable]:
        """Who asks (before what they sent), the body, and the rule of its model."""
        caller = await self.signed_in(request)
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
        return caller, body, rule

    async def signed_in(self, request: Request) -> Caller:
        if self.services.auth is None:
            raise FlowError("missing_session_token", "A session token is required", status=401,
                            origin="session_token_error")  # fmt: skip
        return await self.services.auth.caller(request)

    async def write(self, rule: Writable, id: str, caller: Caller, changed: list[Any],
                    change: Callable[[Any], Awaitable[Any]]) -> Response:  # fmt: skip
        """Check the owner and the fields, then change the object, in one transaction: the
        object cannot change hands in between, and a refused update leaves nothing behind."""
        store, auth = self.services.store, self.services.auth
        async with store.transaction():
            found = await store.get(rule.model.name, id, locked=True)
            if found is None:
                raise _not_found(rule.model.name, id)
            if found.get(rule.owner) != caller.user_id:
                raise FlowError("not_owner", f"this {rule.model.name} object belongs to another user", status=403,
                                details={"model": rule.model.name, "id": id})  # fmt: skip
            refused = rule.refusals(changed)
            if refused:
                raise ValidationFailed(refused)
            if rule.reauth_fields(changed):
                auth.check_fresh(caller)
            updated = await change(store)
            if updated is None:
                raise _not_found(rule.model.name, id)
        setting = rule.setting_changes(found, updated)
        if setting:
            await auth.setting_changed(caller, setting)
        return JSONResponse(rule.shown(updated))


def _not_found(model: str, id: str) -> FlowError:
    return FlowError("object_not_found", f"there is no {model} object with id '{id}'", status=404,
                     details={"model": model, "id": id})  # fmt: skip


def _invalid(field: str, message: str) -> ValidationFailed:
    return ValidationFailed([{"origin": "client_error", "code": "validation_error", "message": message,
                              "details": {"field": field}}])  # fmt: skip
