"""What clients may write through the data API: ``data_api.writable`` in ``app.yaml``.

A client is a browser in a stranger's hands, so nothing is writable unless a rule says so:
``users`` by default (each user their own object), and the models ``data_api.writable``
names, each with the field that holds its owner. Read by the data API's routes, and checked
when the app loads so a wrong section is reported with file:line.

A field marked ``reauth: true`` (``twoFactorAuth`` in the two-factor app) is a security
setting: a client writes it only from a fresh session, and a change to it is reported to
the account's address and ends the user's other sessions (``AuthService.setting_changed``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from flowengine.errors import Location, SpecError
from flowengine.models import HIDDEN, SYSTEM_FIELDS, Model

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
        if f.readonly or f.private or f.type in HIDDEN or name == self.owner:
            return f"field '{name}' cannot be changed through the data API"
        return None

    def reauth_fields(self, names: Iterable[Any]) -> list[str]:
        """The fields among ``names`` that only a fresh session may write."""
        fields = self.model.fields
        return [name for name in names if isinstance(name, str) and name in fields and fields[name].reauth]

    def setting_changes(self, before: Mapping[str, Any], after: Mapping[str, Any]) -> str:
        """How the ``reauth`` fields changed, for the notice ("two factor auth turned off"); "" if none did."""
        changes = []
        for name, f in self.model.fields.items():
            if f.reauth and before.get(name) != after.get(name):
                value = after.get(name)
                how = ("turned on" if value else "turned off") if isinstance(value, bool) else "changed"
                changes.append(f"{_label(name)} {how}")
        return "; ".join(changes)

    def shown(self, found: Mapping[str, Any]) -> dict[str, Any]:
        """The object as a client may see it: no private fields."""
        return {k: v for k, v in found.items() if not (k in self.model.fields and self.model.fields[k].private)}


# --- app.yaml's data_api section ----------------------------------------------------------------


def writable_models(app: Any) -> tuple[dict[str, Writable], list[SpecError]]:
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


def check_data_api(app: Any) -> list[SpecError]:
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


def _label(name: str) -> str:
    """A field's name as words: ``twoFactorAuth`` → "two factor auth"."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", name).replace("_", " ").lower()


def _item(model: str, field: str, message: str) -> dict[str, Any]:
    return {"origin": "client_error", "code": "validation_error", "message": message,
            "details": {"field": field, "model": model}}  # fmt: skip
