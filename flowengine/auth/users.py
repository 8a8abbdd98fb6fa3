"""The built-in ``users`` model, and how an app's ``models/users.yaml`` extends it.

``users.yaml`` beside this module declares the fields every authenticating app has. An
app's own ``models/users.yaml`` is merged over it: new fields are added and a built-in
field's options (default, length, description...) may change, but never its type, since
the auth code relies on it; such a change is reported at the line that asks for it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from flowengine.errors import FlowError, SpecError
from flowengine.models import Sealed, merge
from flowengine.spec import yamlfile
from flowengine.spec.yamlfile import Document

USERS = "users"
BUILT_IN = Path(__file__).with_name("users.yaml")
#: Where app files that extend the built-in model live.
APP_FILE = "models/users.yaml"


def users_document(extension: Document | None) -> tuple[Document, list[SpecError]]:
    """The document the users model compiles from: the built-in one, extended by the app's."""
    base = yamlfile.load(BUILT_IN, "flowengine/auth/users.yaml")
    if extension is None or not _mapping(extension.data) or not _mapping(extension.data.get("fields", {})):
        return (extension or base), []  # a malformed file: its own problems get reported
    problems = list(_type_changes(base.data["fields"], extension))
    if problems:
        return extension, problems
    merged = merge(base.data, extension.data)
    return Document(extension.file, merged, extension.marks), []


def _type_changes(built_in: Mapping[str, Any], extension: Document) -> list[SpecError]:
    problems = []
    for name, spec in extension.data.get("fields", {}).items():
        kind = spec if isinstance(spec, str) else spec.get("type") if isinstance(spec, dict) else None
        if name in built_in and kind is not None and kind != built_in[name]["type"]:
            where = extension.value_where("fields", name, "type") if isinstance(spec, dict) else extension.value_where("fields", name)
            message = (f"'{name}' is a built-in field of users, of type {built_in[name]['type']}; "
                       f"an app may change its options but not its type (here {kind})")  # fmt: skip
            problems.append(SpecError(where, message))
    return problems


def _mapping(value: Any) -> bool:
    return isinstance(value, dict)


def public(user: Mapping[str, Any]) -> dict[str, Any]:
    """A user as answers and flows see it: no hidden (encrypted or secret) field, sealed or not."""
    return {name: value for name, value in user.items() if not isinstance(value, Sealed)}


def email_taken() -> FlowError:
    """The answer when an address already belongs to an account (sign-up, change-email)."""
    return FlowError("email_not_unique", "An account with this email address already exists", status=409,
                     details={"field": "email"})  # fmt: skip
