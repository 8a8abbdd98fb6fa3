"""Bringing the database in line with the models, without ever losing data.

At start the store compares each stored model with its table (through SQLAlchemy's
inspector) and makes the safe changes: missing tables, new columns, new or dropped
indexes. A change that would lose or reinterpret data — a field whose type changed, a
field removed while objects still hold a value, a field made unique while objects share a
value — is refused, and every such problem is reported at once, naming model and field.
``migrate(..., apply=False)`` only describes: that is ``flowengine migrate --plan``.

It runs on a short-lived synchronous SQLAlchemy connection inside one transaction (DDL is
transactional on both databases), under ``BEGIN IMMEDIATE`` on SQLite and an advisory lock
on PostgreSQL, so servers starting together do not race each other.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import sqlalchemy as sa

from flowengine.models import Model
from flowengine.store.tables import KINDS, kind_of

Step = tuple[str, Callable[[], Any]]


class MigrationError(Exception):
    """Changes the store refuses to make; ``problems`` has one line per model field."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("the database cannot follow the models without losing data:\n  " + "\n  ".join(problems))
        self.problems = problems


def migrate(connection: sa.Connection, metadata: sa.MetaData, models: Mapping[str, Model], apply: bool) -> list[str]:
    """Describe (and, with ``apply``, make) the changes; refused ones raise ``MigrationError``
    when applying and are listed as ``refused: ...`` lines when only planning."""
    inspector = sa.inspect(connection)
    steps: list[Step] = []
    refused: list[str] = []
    for table in metadata.sorted_tables:
        if inspector.has_table(table.name, schema=table.schema):
            _compare(_Table(connection, inspector, table, models[table.name]), steps, refused)
        else:
            steps.append((f"create table {table.name} ({', '.join(table.c.keys())})", lambda t=table: t.create(connection)))
    if not apply:
        return [text for text, _ in steps] + [f"refused: {problem}" for problem in refused]
    if refused:
        raise MigrationError(refused)
    for _, step in steps:
        step()
    return [text for text, _ in steps]


class _Table:
    """One existing table, its wanted form and a few queries about its data."""

    def __init__(self, connection: sa.Connection, inspector: Any, table: sa.Table, model: Model) -> None:
        self.connection = connection
        self.table = table
        self.model = model
        self.columns = {c["name"]: c for c in inspector.get_columns(table.name, schema=table.schema)}
        self.references = {
            fk["constrained_columns"][0]: fk["referred_table"]
            for fk in inspector.get_foreign_keys(table.name, schema=table.schema)
            if len(fk["constrained_columns"]) == 1
        }
        self.indexes = {i["name"]: i for i in inspector.get_indexes(table.name, schema=table.schema)}

    def ours(self, name: str) -> bool:
        return name.startswith((f"uq_{self.table.name}_", f"ix_{self.table.name}_"))

    def holding(self, column: str) -> int:
        """How many rows hold a value in ``column``."""
        c = sa.column(column)
        query = sa.select(sa.func.count()).select_from(sa.table(self.table.name, c, schema=self.table.schema))
        return self.connection.execute(query.where(c.is_not(None))).scalar_one()

    def has_duplicates(self, column: str) -> bool:
        c = sa.column(column)
        source = sa.table(self.table.name, c, schema=self.table.schema)
        query = sa.select(c).select_from(source).where(c.is_not(None)).group_by(c).having(sa.func.count() > 1)
        return self.connection.execute(query.limit(1)).first() is not None


def _compare(existing: _Table, steps: list[Step], refused: list[str]) -> None:
    table, model = existing.table, existing.model
    about = f"model '{model.name}'"
    for column in table.columns:
        found = existing.columns.get(column.name)
        if found is None:
            steps.append((f"{model.name}: add field {column.name}", lambda c=column: _add_column(existing, c)))
            continue
        was, wanted = _describe(kind_of(found["type"]), existing.references.get(column.name)), _wanted(model, column.name)
        if was != wanted:
            refused.append(f"{about}: field '{column.name}' changes type from {was} to {wanted}; "
                           "give the new field another name, or convert the column by hand")  # fmt: skip
    for name in existing.columns.keys() - table.columns.keys():
        held = existing.holding(name)
        if held:
            refused.append(f"{about}: field '{name}' was removed but {held} object(s) still hold a value; "
                           "put the field back, or clear the column by hand")  # fmt: skip
    _compare_indexes(existing, steps, refused)


def _compare_indexes(existing: _Table, steps: list[Step], refused: list[str]) -> None:
    table, model = existing.table, existing.model
    wanted = {index.name: index for index in table.indexes}
    for name, index in wanted.items():
        if name in existing.indexes:
            continue
        column = next(iter(index.columns)).name
        if index.unique and column in existing.columns and existing.has_duplicates(column):
            refused.append(f"model '{model.name}': field '{column}' cannot become unique: "
                           "some objects share a value")  # fmt: skip
            continue
        what = "unique index" if index.unique else "index"
        steps.append((f"{model.name}: add {what} on {column}", lambda i=index: i.create(existing.connection)))
    for name in existing.indexes.keys() - wanted.keys():
        if existing.ours(name):
            steps.append((f"{model.name}: drop index {name}", lambda n=name: _drop_index(existing, n)))


def _wanted(model: Model, column: str) -> str:
    if column == "_id":
        return "text"
    if column in ("createdAt", "updatedAt"):
        return "datetime"
    field = model.fields[column]
    return _describe(KINDS[field.type], field.model if field.type == "reference" else None)


def _describe(kind: str, reference: str | None) -> str:
    return f"reference to {reference}" if reference else kind


def _add_column(existing: _Table, column: sa.Column) -> None:
    """``ALTER TABLE ... ADD COLUMN``; a reference brings its foreign key inline, the only
    form SQLite accepts on an existing table. Identifiers are quoted by the dialect."""
    dialect = existing.connection.dialect
    quote = dialect.identifier_preparer
    spec = str(sa.schema.CreateColumn(column).compile(dialect=dialect))
    for fk in column.foreign_keys:
        target = quote.format_table(fk.column.table)
        spec += f" CONSTRAINT {quote.quote(fk.name)} REFERENCES {target} ({quote.quote('_id')}) ON DELETE SET NULL"
    existing.connection.exec_driver_sql(f"ALTER TABLE {quote.format_table(existing.table)} ADD COLUMN {spec}")


def _drop_index(existing: _Table, name: str) -> None:
    quote = existing.connection.dialect.identifier_preparer
    schema = existing.table.schema
    qualified = f"{quote.quote_schema(schema)}.{quote.quote(name)}" if schema else quote.quote(name)
    existing.connection.exec_driver_sql(f"DROP INDEX {qualified}")

