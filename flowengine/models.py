"""Models: the shape of an app's data, declared in ``models/*.yaml``.

One file declares one model; its name is the file's name (``models/users.yaml`` → ``users``)
unless the file says ``name:``::

    description: People who can sign in.
    transient: false            # true: validated like any model, never stored
    fields:
      email:         { type: email, required: true, unique: true }
      name:          { type: text, length: { min: 1, max: 80 } }
      age:           { type: integer, min: 0, max: 150 }
      role:          { type: text, enum: [admin, member], default: member }
      twoFactorAuth: { type: boolean, default: false }
      joinedOn:      { type: datetime, default: { expression: NOW() } }
      password:      { type: encrypted, required: true, length: { min: 8 } }
      totpSecret:    secret       # kept as written, never shown by any read
      referrer:      { type: reference, model: users }
      tags:          { type: list, items: text, length: { max: 20 } }
      address:       { type: object, fields: { city: text, zip: { type: text, pattern: "^[0-9]{5}$" } } }
      phones:        { type: list, items: { type: object, fields: { number: phone } } }
      nickname: text              # shorthand for { type: text }

Field types: text, email, phone, integer, decimal, boolean, date, datetime, reference
(the ``_id`` of an object of ``model``), list (of ``items``), object (a sub-model with its own
``fields``), encrypted (stored as a bcrypt hash) and secret (text stored as given, such as
the sealed secret ``totp-confirm`` gives). Encrypted and secret fields are *hidden*: no read,
answer or data API response shows them; a read node with ``encrypted: true`` gets them
sealed (``Encrypted``, ``Secret``), for ``ECOMPARE`` and ``totp-verify``. Per field:
``required``, ``default``, ``unique``, ``indexed``, ``min``/``max`` (numbers), ``length:
{min, max}`` (text, or the number of list items), ``pattern``, ``enum``, ``description``,
``readonly`` and ``private`` (for the data API: clients may not write them / see them), and
``reauth`` (for the data API: writing it needs a session signed in within the last minutes;
a change tells the account's email and ends the user's other sessions, see ``access.py``).

Defaults: a literal (``default: false``), or an expression written as a mapping with the
single key ``expression`` (``default: { expression: NOW() }``). The mapping makes the intent
explicit, so a literal text default never needs quoting twice; expression defaults may use
``this`` (the object being created) and the run's ``session``, ``user`` and ``env``.

Every stored object also has ``_id`` (random text), ``createdAt`` and ``updatedAt`` (UTC,
like ``2026-11-26T18:53:05.123Z``). Values are normalised when validated: emails lower-case,
phone numbers E.164, datetimes in that UTC form, dates ``YYYY-MM-DD``.

Each model compiles to a JSON Schema (``json_schema()``: request validation and OpenAPI),
and validation failures become one ``ValidationFailed`` item per bad field.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field as dataclass_field
from datetime import date, datetime, timezone
from pathlib import PurePath
from types import SimpleNamespace
from typing import Any, Callable, Iterable, Mapping

import jsonschema

from flowengine.errors import Location, SpecError, ValidationFailed
from flowengine.expressions import Expression, ExpressionError, compile_expression
from flowengine import hashing
from flowengine.hashing import MAX_SECRET_CHARS, hash_secret  # noqa: F401 (the store hashes with it)
from flowengine.phones import phone
from flowengine.spec import schema as schemas

SYSTEM_FIELDS = ("_id", "createdAt", "updatedAt")
#: Names an expression default may read besides functions.
DEFAULT_NAMES = frozenset({"this", "session", "user", "env"})
TEXTUAL = frozenset({"text", "email", "phone", "encrypted", "secret"})
#: Field types no read returns unless it asks for sealed values (see ``Sealed``).
HIDDEN = frozenset({"encrypted", "secret"})
NUMERIC = frozenset({"integer", "decimal"})

_NAME = r"^[A-Za-z][A-Za-z0-9_]{0,39}$"
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")

_BASE: dict[str, dict[str, Any]] = {
    "text": {"type": "string"},
    "email": {"type": "string", "format": "email", "maxLength": 254},
    "phone": {"type": "string", "format": "phone"},
    "integer": {"type": "integer"},
    "decimal": {"type": "number"},
    "boolean": {"type": "boolean"},
    "date": {"type": "string", "format": "date"},
    "datetime": {"type": "string", "format": "date-time"},
    "reference": {"type": "string", "minLength": 1},
    "encrypted": {"type": "string", "writeOnly": True},
    "secret": {"type": "string", "writeOnly": True},
    "list": {"type": "array"},
    "object": {"type": "object"},
}
TYPES = tuple(_BASE)


# --- the compiled form ------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Field:
    """One checked field declaration."""

    name: str
    type: str
    required: bool = False
    default: Any = None
    default_expression: Expression | None = None
    unique: bool = False
    indexed: bool = False
    minimum: float | None = None
    maximum: float | None = None
    min_length: int | None = None
    max_length: int | None = None
    pattern: str | None = None
    enum: tuple[Any, ...] | None = None
    description: str = ""
    readonly: bool = False
    private: bool = False
    reauth: bool = False
    model: str | None = None
    items: Field | None = None
    fields: Mapping[str, Field] | None = None

    @property
    def has_default(self) -> bool:
        return self.default is not None or self.default_expression is not None

    def json_schema(self) -> dict[str, Any]:
        """The JSON Schema of one value of this field."""
        schema = dict(_BASE[self.type])
        if self.items is not None:
            schema["items"] = self.items.json_schema()
        if self.fields is not None:
            schema.update(_object_schema(self.fields, partial=False))
        length = ("minItems", "maxItems") if self.type == "list" else ("minLength", "maxLength")
        for key, value in (
            ("minimum", self.minimum), ("maximum", self.maximum), (length[0], self.min_length),
            (length[1], self.max_length), ("pattern", self.pattern), ("description", self.description or None),
            ("default", self.default), ("x-model", self.model),
        ):  # fmt: skip
            if value is not None:
                schema[key] = value
        if self.enum is not None:
            schema["enum"] = list(self.enum)
        if self.readonly:
            schema["readOnly"] = True
        return schema


@dataclass(frozen=True)
class Rule:
    """``check`` (an expression over ``this``, the whole object) must hold, else ``message``."""

    check: Expression
    message: str
    field: str | None = None


@dataclass(eq=False)
class Model:
    """A checked model: its fields, and how to validate objects of it."""

    name: str
    fields: dict[str, Field]
    transient: bool = False
    description: str = ""
    where: Location | None = None
    #: What one of its fields is called in messages ("query parameter" for a flow's inputs).
    noun: str = "field"
    #: Conditions every stored object must meet, checked after each create and update.
    rules: tuple[Rule, ...] = ()
    _validators: dict[bool, jsonschema.Draft202012Validator] = dataclass_field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    _quick: Any = dataclass_field(default=(), init=False, repr=False, compare=False)

    @property
    def encrypted(self) -> tuple[str, ...]:
        """The fields the store hashes."""
        return tuple(name for name, f in self.fields.items() if f.type == "encrypted")

    @property
    def hidden(self) -> tuple[str, ...]:
        """The fields reads never return unless they ask for sealed values."""
        return tuple(name for name, f in self.fields.items() if f.type in HIDDEN)

    def json_schema(self, partial: bool = False) -> dict[str, Any]:
        """The schema of the values a client or a flow writes (no system fields)."""
        schema = {"title": self.name, **_object_schema(self.fields, partial)}
        if self.description:
            schema["description"] = self.description
        return schema

    def output_schema(self) -> dict[str, Any]:
        """The schema of a stored object as reads return it (hidden fields never appear)."""
        shown = {name: f for name, f in self.fields.items() if f.type not in HIDDEN}
        schema = _object_schema(shown, partial=True)
        system = {"_id": {"type": "string"}, "createdAt": _BASE["datetime"], "updatedAt": _BASE["datetime"]}
        schema["properties"] = {**system, **schema["properties"]}
        schema["required"] = list(SYSTEM_FIELDS)
        return {"title": self.name, **schema}

    def validate(self, values: Any, *, partial: bool = False, scope: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Defaults applied (unless partial), checked, normalised; else ``ValidationFailed``.

        ``partial`` checks an update: only the given fields, none required, and ``None``
        means "remove the value" (refused for a required field).
        """
        if not isinstance(values, Mapping):
            raise ValidationFailed([_item(self.name, "", f"a {self.name} object must be a JSON object")])
        values = _without_nulls(self.fields, values, keep=partial)
        if not partial:
            values = _with_defaults(self, values, scope or {})
        items = self._problems(values, partial)
        if items:
            raise ValidationFailed(items)
        return _normalise_object(self.fields, values)

    def validate_input(self, values: Any) -> dict[str, Any]:
        """Check a request body typed as this model: no defaults, nothing stored."""
        if not isinstance(values, Mapping):
            raise ValidationFailed([_item(self.name, "", f"the body must be a {self.name} object")])
        values = _without_nulls(self.fields, values, keep=False)
        items = self._problems(values, partial=False)
        if items:
            raise ValidationFailed(items)
        return _normalise_object(self.fields, values)

    def check_rules(self, values: Mapping[str, Any]) -> None:
        """Raise ``ValidationFailed`` naming each rule the whole object breaks."""
        broken = [rule for rule in self.rules if not rule.check.evaluate({"this": values})]
        if broken:
            raise ValidationFailed([_item(self.name, rule.field or "", rule.message) for rule in broken])

    def _problems(self, values: Mapping[str, Any], partial: bool) -> list[dict[str, Any]]:
        quick = self._quick_checks()
        if quick is not None and _passes(quick, self.fields, values, partial):
            return []  # the common case, without building a jsonschema error walk
        nulls = [name for name, value in values.items() if value is None and name in self.fields]
        items = [_item(self.name, n, f"{self.noun} '{n}' is required") for n in nulls if self.fields[n].required]
        present = {name: value for name, value in values.items() if name not in nulls}
        seen: set[str] = set(nulls)
        for error in self._validator(partial).iter_errors(present):
            for name, message in _explain(error, self):
                if name not in seen:
                    seen.add(name)
                    items.append(_item(self.name, name, message))
        return items

    def _quick_checks(self) -> dict[str, Callable[[Any], bool]] | None:
        """Plain-Python checks of every field, when all are simple values (else None)."""
        if self._quick == ():
            checks = {name: _quick_check(f) for name, f in self.fields.items()}
            self._quick = None if None in checks.values() else checks
        return self._quick

    def _validator(self, partial: bool) -> jsonschema.Draft202012Validator:
        if partial not in self._validators:
            schema = self.json_schema(partial)
            self._validators[partial] = jsonschema.Draft202012Validator(schema, format_checker=FORMATS)
        return self._validators[partial]


class Sealed:
    """A hidden field's value as a read returns it when asked to (``encrypted: true``).

    Nothing can show it: it is not text, expressions read only mappings, and answers write
    it as null. Only the code meant for it opens it (``Encrypted.matches``, ``Secret.reveal``).
    """

    __slots__ = ()
    kind = "sealed"

    def __repr__(self) -> str:
        return f"<{self.kind}>"

    __str__ = __repr__


class Encrypted(Sealed):
    """An encrypted field read sealed: ``ECOMPARE`` checks a plain text against its hash."""

    __slots__ = ("_digest",)
    kind = "encrypted"

    def __init__(self, digest: str) -> None:
        self._digest = digest

    def matches(self, plain: Any) -> bool:
        """One bcrypt check, whatever ``plain`` is (slow on purpose: call it off the event loop)."""
        return hashing.matches(plain, self._digest)

    def outdated(self, rounds: int) -> bool:
        """Whether the hash should be redone at cost ``rounds`` (a lower cost, or the bare scheme)."""
        return hashing.outdated(self._digest, rounds)


class Secret(Sealed):
    """A secret field read sealed: a node that needs the text (``totp-verify``) reveals it."""

    __slots__ = ("_text",)
    kind = "secret"

    def __init__(self, text: str) -> None:
        self._text = text

    def reveal(self) -> str:
        return self._text


#: How a sealed read returns each hidden field type.
SEALED: dict[str, type[Sealed]] = {"encrypted": Encrypted, "secret": Secret}


# --- validation helpers -----------------------------------------------------------------

FORMATS = jsonschema.FormatChecker(formats=())


@FORMATS.checks("email")
def _is_email(value: Any) -> bool:
    return not isinstance(value, str) or bool(_EMAIL.match(value))


@FORMATS.checks("phone")
def _is_phone(value: Any) -> bool:
    return not isinstance(value, str) or _phone(value) is not None


@FORMATS.checks("date")
def _is_date(value: Any) -> bool:
    return not isinstance(value, str) or parse_date(value) is not None


@FORMATS.checks("date-time")
def _is_datetime(value: Any) -> bool:
    return not isinstance(value, str) or parse_datetime(value) is not None


def _phone(text: str) -> str | None:
    """E.164 form of an international number, or None."""
    facts = phone(text)
    return facts.e164 if facts is not None and facts.possible else None


def parse_date(text: str) -> str | None:
    """'YYYY-MM-DD' if the text is that date, else None."""
    try:
        return date.fromisoformat(text).isoformat() if len(text) == 10 else None
    except ValueError:
        return None


def parse_datetime(text: str) -> str | None:
    """The stored form (UTC, milliseconds) of an ISO 8601 date-time or date, else None."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return iso(moment.replace(tzinfo=moment.tzinfo or timezone.utc))


def iso(moment: datetime) -> str:
    """A moment as stored and shown: UTC with milliseconds, like JavaScript's toISOString."""
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


#: Turns a valid value of a type into its stored form.
NORMALISE: dict[str, Callable[[Any], Any]] = {
    "email": lambda v: v.strip().lower(),
    "phone": lambda v: _phone(v) or v,
    "date": lambda v: parse_date(v) or v,
    "datetime": lambda v: parse_datetime(v) or v,
    "integer": int,
    "decimal": float,
}


def normalise(f: Field, value: Any) -> Any:
    """A valid value of field ``f`` in its stored form."""
    if value is None:
        return None
    if f.fields is not None:
        return _normalise_object(f.fields, value)
    if f.items is not None:
        return [normalise(f.items, item) for item in value]
    convert = NORMALISE.get(f.type)
    return convert(value) if convert else value


def _normalise_object(fields: Mapping[str, Field], values: Mapping[str, Any]) -> dict[str, Any]:
    return {name: normalise(fields[name], value) for name, value in values.items()}


def _without_nulls(fields: Mapping[str, Field], values: Mapping[str, Any], keep: bool) -> dict[str, Any]:
    """Drop nulls (an absent value); a partial update keeps them to mean "remove"."""
    result = {}
    for name, value in values.items():
        if isinstance(value, (datetime, date)):
            value = iso(value) if isinstance(value, datetime) else value.isoformat()
        if value is not None or keep or name not in fields:
            result[name] = value
    return result


def _with_defaults(model: Model, values: dict[str, Any], scope: Mapping[str, Any]) -> dict[str, Any]:
    fields = model.fields
    missing = [name for name, f in fields.items() if f.has_default and name not in values]
    if not missing:
        return values
    values = dict(values)
    names = {key: scope.get(key) for key in DEFAULT_NAMES} | {"this": values}
    for name in missing:
        f = fields[name]
        try:
            value = f.default_expression.evaluate(names) if f.default_expression else copy.deepcopy(f.default)
        except ExpressionError as exc:
            raise ValidationFailed([_item(model.name, name, f"the default of field '{name}' failed: {exc.message}")]) from exc
        if value is not None:
            values[name] = value
    return values


def _object_schema(fields: Mapping[str, Field], partial: bool) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {name: f.json_schema() for name, f in fields.items()},
        "additionalProperties": False,
    }
    required = [name for name, f in fields.items() if f.required and not f.has_default]
    if required and not partial:
        schema["required"] = required
    return schema


_PYTHON_TYPES: dict[str, Any] = {
    "text": str, "email": str, "phone": str, "reference": str, "date": str, "datetime": str,
    "encrypted": str, "secret": str, "integer": int, "decimal": (int, float), "boolean": bool,
}  # fmt: skip


def _quick_check(f: Field) -> Callable[[Any], bool] | None:
    """A check of one simple value that passes only what the field's JSON Schema passes.

    It may refuse more than the schema would (then the full validation decides and words the
    error), never less; list and object fields have none.
    """
    kind = _PYTHON_TYPES.get(f.type)
    if kind is None:
        return None
    low, high = f.min_length, f.max_length
    pattern = re.compile(f.pattern) if f.pattern else None
    fmt = {"email": _is_email, "phone": _is_phone, "date": _is_date, "datetime": _is_datetime}.get(f.type)
    enum = f.enum

    def check(value: Any) -> bool:
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            return False
        if isinstance(value, str):
            if (low is not None and len(value) < low) or (high is not None and len(value) > high):
                return False
            if (pattern is not None and not pattern.search(value)) or (fmt is not None and not fmt(value)):
                return False
        elif not isinstance(value, bool):
            if (f.minimum is not None and value < f.minimum) or (f.maximum is not None and value > f.maximum):
                return False
        return enum is None or value in enum

    return check


def _passes(checks: Mapping[str, Callable[[Any], bool]], fields: Mapping[str, Field], values: Mapping[str, Any],
            partial: bool) -> bool:  # fmt: skip
    for name, value in values.items():
        check = checks.get(name)
        if check is None or value is None or not check(value):
            return False
    return partial or all(
        name in values for name, f in fields.items() if f.required and not f.has_default
    )


def _item(model: str, name: str, message: str) -> dict[str, Any]:
    details = {"field": name, "model": model} if model else {"field": name}
    return {"origin": "client_error", "code": "validation_error", "message": message, "details": details}


_WORDS = {"string": "text", "integer": "an integer", "number": "a number", "boolean": "true or false",
          "array": "a list", "object": "an object"}  # fmt: skip
_FORMATS = {"email": "a valid email address", "phone": "a phone number in international form, like +14155550100",
            "date": "a date like 2026-11-26", "date-time": "a date and time like 2026-11-26T18:53:05Z"}  # fmt: skip


def _explain(error: jsonschema.ValidationError, model: Model) -> Iterable[tuple[str, str]]:
    """(field path, message) pairs for one jsonschema error."""
    path = ".".join(str(part) for part in error.absolute_path)
    value = error.validator_value
    if error.validator == "required":
        for name in (n for n in value if n not in error.instance):
            full = f"{path}.{name}" if path else name
            yield full, f"{model.noun} '{full}' is required"
    elif error.validator == "additionalProperties":
        for name in sorted(set(error.instance) - set(error.schema.get("properties", {}))):
            full = f"{path}.{name}" if path else name
            yield full, f"'{full}' is not a field of {model.name}"
    else:
        yield path, f"{model.noun} '{path}' {_reason(error.validator, value, error)}"


def _reason(validator: str, value: Any, error: jsonschema.ValidationError) -> str:
    if validator == "type":
        return f"must be {_WORDS.get(value, value)}"
    if validator == "format":
        return f"must be {_FORMATS.get(value, value)}"
    reasons = {
        "minimum": f"must be at least {value}", "maximum": f"must be at most {value}",
        "minLength": f"must be at least {value} characters long",
        "maxLength": f"must be at most {value} characters long",
        "minItems": f"must have at least {value} items", "maxItems": f"must have at most {value} items",
        "pattern": f"does not match the pattern {value}",
        "enum": "must be one of " + ", ".join(map(str, value)) if isinstance(value, list) else "",
    }  # fmt: skip
    return reasons.get(validator) or error.message


# --- compiling model files --------------------------------------------------------------

#: The published schema of a model file (also what editors use).
FILE_SCHEMA: dict[str, Any] = schemas.schema("model")
_FILE_VALIDATOR = jsonschema.Draft202012Validator(FILE_SCHEMA)

#: Which types accept which optional keys (the rest are errors, not silently ignored).
_ALLOWED_KEYS = {
    "min": NUMERIC, "max": NUMERIC, "length": TEXTUAL | {"list"}, "pattern": TEXTUAL - {"encrypted"},
    "enum": (TEXTUAL - HIDDEN) | NUMERIC, "model": {"reference"}, "items": {"list"}, "fields": {"object"},
    "unique": set(TYPES) - {"list", "object"} - HIDDEN, "indexed": set(TYPES) - {"list", "object"} - HIDDEN,
}  # fmt: skip
_NEEDED_KEYS = {"reference": "model", "list": "items", "object": "fields"}

Where = Callable[..., Location]


class _Compiler:
    """Turns one model file's data into a ``Model``, collecting every problem."""

    def __init__(self, name: str, where: Where) -> None:
        self.name = name
        self.where = where
        self.problems: list[SpecError] = []

    def problem(self, message: str, *path: Any) -> None:
        self.problems.append(SpecError(self.where(*path), message))

    def model(self, data: dict[str, Any]) -> Model:
        transient = bool(data.get("transient", False))
        fields = self.fields(data["fields"], ("fields",), top=True, transient=transient)
        rules = tuple(self.rule(index, spec, fields) for index, spec in enumerate(data.get("rules", [])))
        model = Model(self.name, fields, transient, data.get("description", ""), self.where())
        model.rules = tuple(rule for rule in rules if rule is not None)
        return model

    def rule(self, index: int, spec: Mapping[str, Any], fields: Mapping[str, Field]) -> Rule | None:
        path = ("rules", index)
        try:
            check = compile_expression(spec["check"])
        except ExpressionError as exc:
            self.problem(f"check: {exc}", *path, "check")
            return None
        for unknown in sorted(check.names - {"this"}):
            self.problem(f"check: unknown name '{unknown}' (a rule reads the object as 'this')", *path, "check")
        for path_read in check.paths:
            if path_read[0] == "this" and len(path_read) > 1 and path_read[1] not in fields and path_read[1] not in SYSTEM_FIELDS:
                self.problem(f"check: '{path_read[1]}' is not a field of {self.name}", *path, "check")
        field = spec.get("field")
        if field is not None and field not in fields:
            self.problem(f"field: '{field}' is not a field of {self.name}", *path, "field")
        return Rule(check, spec["message"], field)

    def fields(self, raw: Mapping[str, Any], path: tuple, top: bool = False, transient: bool = False) -> dict[str, Field]:
        fields = {}
        for name, spec in raw.items():
            if name in SYSTEM_FIELDS or name.startswith("_"):
                self.problem(f"'{name}' is reserved: every object has _id, createdAt and updatedAt", *path, name)
                continue
            fields[name] = self.field(name, spec, path + (name,), top, transient)
        return fields

    def field(self, name: str, spec: Any, path: tuple, top: bool, transient: bool) -> Field:
        spec = {"type": spec} if isinstance(spec, str) else spec
        kind = spec["type"]
        self.check_keys(kind, spec, path, top, transient)
        length = spec.get("length") or {}
        f = Field(
            name=name, type=kind, required=spec.get("required", False), unique=spec.get("unique", False),
            indexed=spec.get("indexed", False), minimum=spec.get("min"), maximum=spec.get("max"),
            min_length=length.get("min"), max_length=length.get("max"), pattern=spec.get("pattern"),
            enum=tuple(spec["enum"]) if "enum" in spec else None, description=spec.get("description", ""),
            readonly=spec.get("readonly", False), private=spec.get("private", False), reauth=spec.get("reauth", False),
            model=spec.get("model"),
            items=self.field("items", spec["items"], path + ("items",), False, transient) if "items" in spec else None,
            fields=self.fields(spec["fields"], path + ("fields",)) if "fields" in spec else None,
        )  # fmt: skip
        if kind == "encrypted" and (f.max_length is None or f.max_length > MAX_SECRET_CHARS):
            f = _replace(f, max_length=MAX_SECRET_CHARS)
        self.check_ranges(f, path)
        self.check_values(f, path)
        return self.default(f, spec, path) if "default" in spec else f

    def check_keys(self, kind: str, spec: Mapping[str, Any], path: tuple, top: bool, transient: bool) -> None:
        for key, types in _ALLOWED_KEYS.items():
            if key in spec and kind not in types:
                self.problem(f"'{key}' does not apply to a field of type {kind}", *path, key)
        needed = _NEEDED_KEYS.get(kind)
        if needed and needed not in spec:
            self.problem(f"a field of type {kind} needs '{needed}'", *path)
        if not top and (kind == "reference" or kind in HIDDEN):
            self.problem(f"{kind} fields must be top-level fields of the model", *path)
        if not top and spec.get("reauth"):
            self.problem("reauth applies only to top-level fields (the ones the data API writes)", *path, "reauth")
        if transient and (spec.get("unique") or spec.get("indexed")):
            self.problem("a transient model is never stored, so it cannot have unique or indexed fields", *path)

    def check_ranges(self, f: Field, path: tuple) -> None:
        for low, high, key in ((f.minimum, f.maximum, "min"), (f.min_length, f.max_length, "length")):
            if low is not None and high is not None and low > high:
                self.problem(f"{key}: the minimum {low} is above the maximum {high}", *path, key)
        if f.pattern is not None:
            try:
                re.compile(f.pattern)
            except re.error as exc:
                self.problem(f"pattern is not a valid regular expression: {exc}", *path, "pattern")

    def check_values(self, f: Field, path: tuple) -> None:
        for index, option in enumerate(f.enum or ()):
            if _value_problem(_replace(f, enum=None), option):
                self.problem(f"enum value {option!r} is not a valid {f.type}", *path, "enum", index)

    def default(self, f: Field, spec: Mapping[str, Any], path: tuple) -> Field:
        raw = spec["default"]
        if isinstance(raw, dict) and set(raw) == {"expression"}:
            try:
                expression = compile_expression(str(raw["expression"]))
            except ExpressionError as exc:
                self.problem(f"default: {exc}", *path, "default")
                return f
            for unknown in sorted(expression.names - DEFAULT_NAMES):
                self.problem(f"default: unknown name '{unknown}' (a default may use this, session, user, env)", *path, "default")
            return _replace(f, default_expression=expression)
        if f.type in HIDDEN:
            self.problem(f"{f.type} fields cannot have a literal default", *path, "default")
        elif (message := _value_problem(f, raw)) is not None:
            self.problem(f"default {raw!r} is not valid: {message}", *path, "default")
        return _replace(f, default=raw)


def _replace(f: Field, **changes: Any) -> Field:
    return Field(**{**{k: getattr(f, k) for k in Field.__dataclass_fields__}, **changes})


def _value_problem(f: Field, value: Any) -> str | None:
    validator = jsonschema.Draft202012Validator(f.json_schema(), format_checker=FORMATS)
    error = jsonschema.exceptions.best_match(validator.iter_errors(value))
    return None if error is None else _reason(str(error.validator), error.validator_value, error)


def compile_model(name: str, data: Any, where: Where) -> tuple[Model | None, list[SpecError]]:
    """Check and compile one model file; ``where(*keys)`` locates a key for messages."""

    problems = schemas.check(_FILE_VALIDATOR, data, SimpleNamespace(where=where))  # type: ignore[arg-type]
    if problems:
        return None, problems
    declared = data.get("name", name)
    if declared != name:
        return None, [SpecError(where("name"), f"the model is named '{declared}' but its file is '{name}'; make them equal")]
    compiler = _Compiler(name, where)
    model = compiler.model(data)
    return (None if compiler.problems else model), compiler.problems


def check_references(models: Mapping[str, Model], where: Mapping[str, Where], declared: Iterable[str] = ()) -> list[SpecError]:
    """Cross-model rules: a reference names a stored model (one that failed to compile
    has its own problems reported already)."""
    problems = []
    known = set(declared) | set(models)
    for model in models.values():
        for name, f in model.fields.items():
            if f.type != "reference":
                continue
            target = models.get(f.model or "")
            if f.model in known and target is None:
                continue
            if target is None:
                problems.append(SpecError(where[model.name]("fields", name, "model"), f"unknown model '{f.model}'"))
            elif target.transient:
                problems.append(SpecError(where[model.name]("fields", name, "model"), f"'{f.model}' is transient: nothing to refer to"))
    return problems


def compile_models(sources: Iterable[tuple[str, Any, Where]]) -> tuple[dict[str, Model], list[SpecError]]:
    """Compile several model files: ``(name, data, where)`` each; all problems at once."""
    models: dict[str, Model] = {}
    wheres: dict[str, Where] = {}
    problems: list[SpecError] = []
    declared: set[str] = set()
    for name, data, where in sources:
        declared.add(name)
        if name in models:
            problems.append(SpecError(where(), f"model '{name}' is declared twice"))
            continue
        model, found = compile_model(name, data, where)
        problems.extend(found)
        if model is not None:
            models[name], wheres[name] = model, where
    problems.extend(check_references(models, wheres, declared))
    return models, problems


def compile_documents(documents: Iterable[Any]) -> tuple[dict[str, Model], list[SpecError]]:
    """Compile loaded ``models/*.yaml`` documents; a model is named after its file."""
    return compile_models((PurePath(d.file).stem, d.data, d.where) for d in documents)


def merge(base: Mapping[str, Any], extension: Mapping[str, Any]) -> dict[str, Any]:
    """A model definition extended by another: new fields are added, and an existing field's
    options (default, description, length...) are overridden, but never its type.

    This is how an app's ``models/users.yaml`` extends the built-in ``users`` model.
    """
    fields = {name: _spec(spec) for name, spec in base.get("fields", {}).items()}
    for name, spec in (extension.get("fields") or {}).items():
        spec = _spec(spec)
        if name in fields and spec.get("type", fields[name]["type"]) != fields[name]["type"]:
            raise ValueError(f"field '{name}' is a {fields[name]['type']} field and cannot become a {spec['type']} field")
        fields[name] = {**fields.get(name, {}), **spec}
    return {**base, **{k: v for k, v in extension.items() if k != "fields"}, "fields": fields}


def _spec(spec: Any) -> dict[str, Any]:
    return {"type": spec} if isinstance(spec, str) else dict(spec)
