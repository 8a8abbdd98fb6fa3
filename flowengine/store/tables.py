"""Models as SQLAlchemy tables, and how values cross between Python and each driver.

A stored model is one table named after it: ``_id`` (primary key), ``createdAt``,
``updatedAt`` and one column per field. Lists and sub-objects are JSON columns (JSONB on
PostgreSQL), references are foreign keys to the other table's ``_id`` (``ON DELETE SET
NULL``: deleting an object never leaves a dangling id behind), ``unique`` gets a unique
index and ``indexed`` an index. Index and constraint names are deterministic, so the
migrator can recognise them and a driver's error can be traced back to its field.

All columns but the system ones are nullable: ``required`` is enforced by validation, so a
new required field can be added to a table that already holds objects.
"""

from __future__ import annotations

import hashlib
import json
from datetime import date, datetime
from typing import Any, Callable, Mapping

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from flowengine.models import Field, Model, iso

#: Storage kinds: what a field type becomes in the database.
KINDS = {
    "text": "text", "email": "text", "phone": "text", "reference": "text", "encrypted": "text", "secret": "text",
    "integer": "integer", "decimal": "decimal", "boolean": "boolean", "date": "date",
    "datetime": "datetime", "list": "json", "object": "json",
}  # fmt: skip

COLUMN_TYPES: dict[str, Callable[[], sa.types.TypeEngine]] = {
    "text": sa.Text,
    "integer": sa.BigInteger,
    "decimal": sa.Double,
    "boolean": lambda: sa.Boolean(create_constraint=False),
    "date": sa.Date,
    "datetime": lambda: sa.DateTime(timezone=True),
    "json": lambda: sa.JSON().with_variant(postgresql.JSONB(), "postgresql"),
}

#: Reflected SQLAlchemy types → storage kind (checked in this order).
_REFLECTED = (
    ("boolean", sa.Boolean), ("integer", sa.Integer), ("decimal", sa.Float), ("datetime", sa.DateTime),
    ("date", sa.Date), ("json", sa.JSON), ("text", sa.String),
)  # fmt: skip

_MAX_NAME = 60  # PostgreSQL cuts identifiers at 63 bytes


def kind_of(column_type: sa.types.TypeEngine) -> str:
    """The storage kind of a reflected column type ('other' when foreign to flowengine)."""
    for kind, cls in _REFLECTED:
        if isinstance(column_type, cls):
            return kind
    return "other"


def constraint_name(prefix: str, table: str, column: str) -> str:
    """``uq_users_email``; long names end in a digest so they stay unique and stable."""
    name = f"{prefix}_{table}_{column}"
    if len(name) <= _MAX_NAME:
        return name
    return f"{name[:_MAX_NAME - 13]}_{hashlib.sha1(name.encode()).hexdigest()[:12]}"


def build_tables(models: Mapping[str, Model], schema: str | None = None) -> sa.MetaData:
    """One table per stored model, in a fresh ``MetaData``."""
    metadata = sa.MetaData(schema=schema)
    for model in models.values():
        if not model.transient:
            _table(model, metadata)
    return metadata


def _table(model: Model, metadata: sa.MetaData) -> sa.Table:
    columns = [
        sa.Column("_id", sa.Text, primary_key=True),
        sa.Column("createdAt", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updatedAt", sa.DateTime(timezone=True), nullable=False),
        *(column(model.name, f, metadata.schema) for f in model.fields.values()),
    ]
    table = sa.Table(model.name, metadata, *columns)
    for f in model.fields.values():
        if f.unique or f.indexed:
            prefix = "uq" if f.unique else "ix"
            sa.Index(constraint_name(prefix, model.name, f.name), table.c[f.name], unique=f.unique)
    return table


def column(table: str, f: Field, schema: str | None) -> sa.Column:
    """The column of one field (with its foreign key when it is a reference)."""
    constraints = []
    if f.type == "reference":
        target = f"{schema}.{f.model}._id" if schema else f"{f.model}._id"
        constraints.append(sa.ForeignKey(target, ondelete="SET NULL", name=constraint_name("fk", table, f.name)))
    return sa.Column(f.name, COLUMN_TYPES[KINDS[f.type]](), *constraints, nullable=True)


# --- values in and out ------------------------------------------------------------------
#
# Statements run on the drivers directly (see store.py), so values are converted here,
# once per column, rather than by SQLAlchemy's type processors.

Convert = Callable[[Any], Any]


def _json_text(value: Any) -> Any:
    return None if value is None else json.dumps(value, separators=(",", ":"))


def _from_json_text(value: Any) -> Any:
    return None if value is None else json.loads(value)


def _from_sqlite_bool(value: Any) -> Any:
    return None if value is None else bool(value)


def _from_moment(value: Any) -> Any:
    if isinstance(value, datetime):
        return iso(value)
    return value.isoformat() if isinstance(value, date) else value


def _jsonb(value: Any) -> Any:
    from psycopg.types.json import Jsonb

    return None if value is None else Jsonb(value)


#: Per driver: storage kind → (to driver, from driver); None means "as is".
CONVERTERS: dict[str, dict[str, tuple[Convert | None, Convert | None]]] = {
    "sqlite": {"json": (_json_text, _from_json_text), "boolean": (None, _from_sqlite_bool)},
    "postgresql": {"json": (_jsonb, None), "datetime": (None, _from_moment), "date": (None, _from_moment)},
}


def storage_kind(model: Model, name: str) -> str:
    """The storage kind of a field or system column."""
    if name == "_id":
        return "text"
    if name in ("createdAt", "updatedAt"):
        return "datetime"
    return KINDS[model.fields[name].type]
