"""The store: an app's objects, validated by their models, kept in SQLite or PostgreSQL.

One interface (``create``, ``get``, ``find_one``, ``find_many``, ``count``, ``update``,
``update_fields``, ``delete``, ``transaction``) over two backends. SQLAlchemy Core defines
the tables, migrates them and builds and compiles every statement, once per statement
shape; each run then hands the cached SQL text and its bound values straight to the
driver. That split is the point: on a 100,000-row table an indexed lookup costs ~3 µs in
sqlite3 and ~100 µs over loopback in psycopg, while SQLAlchemy's engine adds ~15-40 µs of
Python per call, its async engine ~500 µs (greenlet plus aiosqlite's thread), and a worker
thread per call ~100 µs. So SQLite reads run on the event loop under a step budget and
writes on one writer thread (see ``sqlite.py``), and PostgreSQL uses psycopg's native
asyncio connections (see ``postgres.py``): nothing blocks the loop for longer than a
fraction of a millisecond, and every value is a bound parameter.

Writes are one transaction per call. ``async with store.transaction():`` groups the calls
of one run (it is bound to the running task through a context variable): they commit
together when the block ends, or not at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, Iterable, Mapping

import sqlalchemy as sa

from flowengine.errors import FlowError, ValidationFailed
from flowengine.models import HIDDEN, SEALED, Field, Model, hash_secret, iso
from flowengine.store.query import Filter
from flowengine.store.tables import CONVERTERS, KINDS, build_tables, constraint_name, storage_kind

MAX_LIMIT = 1000
BCRYPT_ROUNDS = 12
UPDATE_TYPES = ("set", "unset", "increment", "decrement", "push", "pull")

#: The write session of the running task's ``store.transaction()``, if any.
_TRANSACTION: contextvars.ContextVar[Any] = contextvars.ContextVar("flowengine_store_transaction", default=None)


def open_store(url: str | None, models: Mapping[str, Model], data_dir: str | Path, *, schema: str | None = None) -> Store:
    """The store an app's settings ask for: SQLite under ``data_dir`` unless ``url`` says
    ``postgres://``/``postgresql://`` (or ``sqlite:///path``)."""
    if not url:
        from flowengine.store.sqlite import SQLiteBackend

        return Store(SQLiteBackend(Path(data_dir) / "app.db"), models)
    if url.startswith("sqlite"):
        from flowengine.store.sqlite import SQLiteBackend

        return Store(SQLiteBackend(Path(sa.engine.make_url(url).database or Path(data_dir) / "app.db")), models)
    from flowengine.store.postgres import PostgresBackend

    return Store(PostgresBackend(url, schema), models, schema=schema)


@dataclass(frozen=True, slots=True)
class _Statement:
    """Compiled SQL, the columns it returns and how its rows become objects.

    ``constants`` are values SQLAlchemy itself bound while compiling (``LIMIT 1``,
    ``substr(x, 1, ...)``); each run's values are merged over them.
    """

    sql: str
    names: tuple[str, ...] = ()
    decoders: tuple[tuple[str, Callable[[Any], Any]], ...] = ()
    constants: Mapping[str, Any] | None = None

    def bind(self, values: Mapping[str, Any]) -> Mapping[str, Any]:
        return values if self.constants is None else {**self.constants, **values}

    def object(self, row: tuple) -> dict[str, Any]:
        item = dict(zip(self.names, row))
        for name, decode in self.decoders:
            value = item[name]
            if value is not None:
                item[name] = decode(value)
        return item

    def objects(self, rows: Iterable[tuple]) -> list[dict[str, Any]]:
        return list(map(self.object, rows))


class Store:
    """An app's stored objects, one backend, statements compiled once per shape."""

    def __init__(self, backend: Any, models: Mapping[str, Model], *, schema: str | None = None,
                 clock: Callable[[], float] = time.time) -> None:  # fmt: skip
        self.backend = backend
        self._fetch_now = getattr(backend, "fetch_now", None)
        self.models = dict(models)
        self.metadata = build_tables(self.models, schema)
        self.tables = {table.name: table for table in self.metadata.tables.values()}
        self.clock = clock
        self.bcrypt_rounds = BCRYPT_ROUNDS
        #: ``async (plain) -> hash`` for encrypted fields; the auth service installs its bcrypt pool here.
        self.hasher: Callable[[str], Awaitable[str]] | None = None
        self._statements: dict[tuple, _Statement] = {}
        self._constraints = {
            constraint_name(prefix, model.name, name): name
            for model in self.models.values() for name in model.fields for prefix in ("uq", "fk")
        }  # fmt: skip

    # --- lifecycle

    async def start(self) -> list[str]:
        """Create missing tables and columns (refusing destructive changes), then open."""
        changes = await self.backend.migrate(self.metadata, self.models, apply=True)
        await self.backend.start()
        return changes

    async def plan(self) -> list[str]:
        """What ``start`` would change, one line each; refused changes start with 'refused:'."""
        return await self.backend.migrate(self.metadata, self.models, apply=False)

    async def close(self) -> None:
        await self.backend.close()

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        """Group this run's store calls into one transaction (nested blocks join the outer)."""
        async with self._writing():
            yield

    # --- reads

    async def get(self, model: str, id: Any, *, sealed: bool = False, locked: bool = False) -> dict[str, Any] | None:
        """The object with ``_id`` = id, or None. ``sealed`` adds hidden fields (encrypted and
        secret) as ``Encrypted`` and ``Secret``; ``locked`` (inside a write) holds the row until
        the write ends."""
        stored = self._stored(model)
        if not isinstance(id, str):
            return None
        statement = self._select(stored, None, None, "locked" if locked else "one", sealed, by_id=True)
        rows = await self._read(statement, {"k_id": id})
        return statement.object(rows[0]) if rows else None

    async def find_one(self, model: str, where: Filter | None = None, *, sort: Mapping[str, str] | None = None,
                       sealed: bool = False) -> dict[str, Any] | None:  # fmt: skip
        statement = self._select(self._stored(model), where, sort, "one", sealed)
        rows = await self._read(statement, where.values if where else {})
        return statement.object(rows[0]) if rows else None

    async def find_many(self, model: str, where: Filter | None = None, *, sort: Mapping[str, str] | None = None,
                        limit: int = 100, page: int = 1, sealed: bool = False) -> list[dict[str, Any]]:  # fmt: skip
        limit, page = _whole("limit", limit, 1, MAX_LIMIT), _whole("page", page, 1, None)
        statement = self._select(self._stored(model), where, sort, "many", sealed)
        values = {**(where.values if where else {}), "k_limit": limit, "k_offset": (page - 1) * limit}
        return statement.objects(await self._read(statement, values))

    async def count(self, model: str, where: Filter | None = None) -> int:
        stored = self._stored(model)
        statement = self._cached(("count", model, where and where.query), lambda: self._count(stored, where))
        rows = await self._read(statement, where.values if where else {})
        return rows[0][0]

    # --- writes

    async def create(self, model: str, values: Any, *, scope: Mapping[str, Any] | None = None,
                     id: str | None = None, dry_run: bool = False) -> dict[str, Any]:  # fmt: skip
        """Validate and store a new object; a transient model's object is validated only.

        ``id`` chooses the new object's ``_id`` instead of a random one, for flow tests that
        seed objects their cases refer to. No client or flow reaches it: ``_id`` is no field,
        so values that hold one fail validation. ``dry_run`` does all the work but the write
        and answers what would have been stored: a sign-up with a taken address answers like
        a new one, in the same time.
        """
        definition = self._model(model)
        clean = definition.validate(values, scope=scope)
        definition.check_rules(clean)
        if definition.transient:
            return clean
        now = self._now()
        row = {"_id": id or secrets.token_hex(12), "createdAt": now, "updatedAt": now}
        row.update({name: clean.get(name) for name in definition.fields})
        await self._hash(definition, row)
        if not dry_run:
            statement = self._cached(("insert", model), lambda: self._insert(definition))
            await self._write(definition, statement, self._encode(definition, row), row)
        return {name: row[name] for name in self._columns(definition, sealed=False)}

    async def update(self, model: str, id: Any, values: Any) -> dict[str, Any] | None:
        """Replace the given fields of one object (``None`` removes a value); None if absent."""
        definition = self._stored(model)
        clean = definition.validate(values, partial=True)
        await self._hash(definition, clean)
        async with self._writing() as session:
            found = await self._update(definition, id, clean, {}, session)
            if found is not None:
                definition.check_rules(found)  # raising here rolls the update back
            return found

    async def update_fields(self, model: str, id: Any, updates: Iterable[Mapping[str, Any]]) -> dict[str, Any] | None:
        """Altogic's field updates: ``[{field, updateType, value}]`` with updateType set, unset,
        increment, decrement, push or pull. None when there is no such object."""
        definition = self._stored(model)
        sets, steps, lists = _plan_updates(definition, updates)
        async with self._writing() as session:
            if lists:
                current = await self.get(model, id, locked=True)
                if current is None:
                    return None
                sets.update({name: change(current.get(name)) for name, change in lists.items()})
            sets = definition.validate(sets, partial=True) if sets else {}
            await self._hash(definition, sets)
            found = await self._update(definition, id, sets, steps, session)
            if found is not None and steps:
                definition.validate({name: found[name] for name in steps}, partial=True)
            if found is not None:
                definition.check_rules(found)  # raising here rolls the update back
            return found

    async def delete(self, model: str, id: Any) -> bool:
        """Delete one object; False when there was none."""
        definition = self._stored(model)
        table = self.tables[model]
        statement = self._cached(("delete", model), lambda: self._compile(
            table.delete().where(table.c._id == sa.bindparam("k_id")).returning(table.c._id)))  # fmt: skip
        return bool(await self._write(definition, statement, {"k_id": id}, {}))

    # --- statements

    def _select(self, model: Model, where: Filter | None, sort: Mapping[str, str] | None, many: str,
                sealed: bool, by_id: bool = False) -> _Statement:  # fmt: skip
        order = tuple(sort.items()) if sort else ()
        key = ("select", model.name, where and where.query, order, many, sealed, by_id)
        statement = self._statements.get(key)
        if statement is None:
            statement = self._statements[key] = self._build_select(model, where, order, many, sealed, by_id)
        return statement

    def _build_select(self, model: Model, where: Filter | None, order: tuple, many: str, sealed: bool,
                      by_id: bool) -> _Statement:  # fmt: skip
        table = self.tables[model.name]
        names = self._columns(model, sealed)
        query = sa.select(*(table.c[name] for name in names))
        if by_id:
            query = query.where(table.c._id == sa.bindparam("k_id"))
        if where is not None:
            query = query.where(where.query.clause(table, self.backend.name))
        if order or many == "many":  # _id last: pages never skip or repeat an object
            query = query.order_by(*_ordering(model, table, order))
        if many == "many":
            query = query.limit(sa.bindparam("k_limit")).offset(sa.bindparam("k_offset"))
        elif not by_id:
            query = query.limit(1)
        if many == "locked" and self.backend.name == "postgresql":
            query = query.with_for_update()  # SQLite's writer lock already serialises writes
        return self._compile(query, model, names)

    def _count(self, model: Model, where: Filter | None) -> _Statement:
        table = self.tables[model.name]
        query = sa.select(sa.func.count()).select_from(table)
        if where is not None:
            query = query.where(where.query.clause(table, self.backend.name))
        return self._compile(query)

    def _insert(self, model: Model) -> _Statement:
        table = self.tables[model.name]
        return self._compile(table.insert().values({c.name: sa.bindparam(f"v_{c.name}") for c in table.columns}))

    def _update_statement(self, model: Model, sets: tuple[str, ...], steps: tuple[str, ...]) -> _Statement:
        table = self.tables[model.name]
        names = self._columns(model, sealed=False)
        changes: dict[str, Any] = {name: sa.bindparam(f"v_{name}") for name in (*sets, "updatedAt")}
        changes.update({name: sa.func.coalesce(table.c[name], 0) + sa.bindparam(f"s_{name}") for name in steps})
        query = table.update().where(table.c._id == sa.bindparam("k_id")).values(changes)
        return self._compile(query.returning(*(table.c[name] for name in names)), model, names)

    def _compile(self, query: Any, model: Model | None = None, names: tuple[str, ...] = ()) -> _Statement:
        """SQL text for this backend's driver, and a decoder for each column that needs one."""
        compiled = query.compile(dialect=self.backend.dialect)
        constants = {key: value for key, value in compiled.params.items() if value is not None}
        decoders = []
        for name in names:
            assert model is not None
            if name in model.fields and model.fields[name].type in HIDDEN:
                decoders.append((name, SEALED[model.fields[name].type]))
            elif (decode := self._converter(model, name)[1]) is not None:
                decoders.append((name, decode))
        return _Statement(str(compiled), names, tuple(decoders), constants or None)

    def _converter(self, model: Model, name: str) -> tuple[Any, Any]:
        return CONVERTERS[self.backend.name].get(storage_kind(model, name), (None, None))

    def _cached(self, key: tuple, build: Callable[[], _Statement]) -> _Statement:
        statement = self._statements.get(key)
        if statement is None:
            statement = self._statements[key] = build()
        return statement

    def _columns(self, model: Model, sealed: bool) -> tuple[str, ...]:
        shown = (name for name, f in model.fields.items() if sealed or f.type not in HIDDEN)
        return ("_id", "createdAt", "updatedAt", *shown)

    # --- running

    def _session(self) -> Any:
        session = _TRANSACTION.get()
        return session if session is not None and session.backend is self.backend else None

    async def _read(self, statement: _Statement, values: Mapping[str, Any]) -> list[tuple]:
        session = _TRANSACTION.get()
        try:
            if session is not None and session.backend is self.backend:
                return await session.execute(statement.sql, statement.bind(values))
            if self._fetch_now is not None:  # SQLite: a short read needs no await at all
                rows = self._fetch_now(statement.sql, statement.bind(values))
                if rows is not None:
                    return rows
            return await self.backend.fetch(statement.sql, statement.bind(values))
        except self.backend.unavailable as exc:
            raise _unavailable(exc) from exc

    @contextlib.asynccontextmanager
    async def _writing(self) -> AsyncIterator[Any]:
        """The running task's write session: joined if one is open, else opened for the block."""
        session = self._session()
        if session is not None:
            yield session
            return
        async with self.backend.write() as session:
            token = _TRANSACTION.set(session)
            try:
                yield session
            finally:
                _TRANSACTION.reset(token)

    async def _write(self, model: Model, statement: _Statement, values: Mapping[str, Any], row: Mapping[str, Any],
                     session: Any = None) -> list[tuple]:  # fmt: skip
        try:
            if session is not None:
                return await session.execute(statement.sql, statement.bind(values))
            async with self._writing() as session:
                return await session.execute(statement.sql, statement.bind(values))
        except self.backend.unavailable as exc:
            raise _unavailable(exc) from exc
        except Exception as exc:
            violation = self.backend.violation(exc)
            if violation is None:
                raise
            raise await self._explain(model, violation, row) from None

    async def _update(self, model: Model, id: Any, sets: Mapping[str, Any], steps: Mapping[str, Any],
                      session: Any = None) -> dict[str, Any] | None:  # fmt: skip
        if not isinstance(id, str):
            return None
        key = ("update", model.name, tuple(sets), tuple(steps))
        statement = self._cached(key, lambda: self._update_statement(model, tuple(sets), tuple(steps)))
        values = self._encode(model, {**sets, "updatedAt": self._now()})
        values.update({f"s_{name}": amount for name, amount in steps.items()})
        values["k_id"] = id
        rows = await self._write(model, statement, values, sets, session)
        return statement.object(rows[0]) if rows else None

    async def _explain(self, model: Model, violation: tuple[str, str | None], row: Mapping[str, Any]) -> FlowError:
        kind, name = violation
        field = name if name in model.fields else self._constraints.get(name or "")
        if kind == "reference" and field is None:
            field = await self._dangling(model, row)
        details = {"field": field, "model": model.name}
        if kind == "unique":
            return FlowError("unique_violation", f"another {model.name} object already has this {field}",
                             status=409, details=details)  # fmt: skip
        if kind == "reference" and field is not None:
            target = model.fields[field].model
            return FlowError("invalid_reference", f"field '{field}' refers to a {target} object that does not exist",
                             status=400, details=details)  # fmt: skip
        return FlowError("constraint_violation", f"the {model.name} object breaks a database constraint", status=409,
                         details={"model": model.name})  # fmt: skip

    async def _dangling(self, model: Model, row: Mapping[str, Any]) -> str | None:
        """The reference field whose value names no object (SQLite does not say which)."""
        for name, f in model.fields.items():
            value = row.get(name)
            if f.type == "reference" and value is not None and await self.get(f.model, value) is None:  # type: ignore[arg-type]
                return name
        return None

    # --- helpers

    def _model(self, name: str) -> Model:
        model = self.models.get(name)
        if model is None:
            raise FlowError("unknown_model", f"there is no model '{name}'", status=500, details={"model": name})
        return model

    def _stored(self, name: str) -> Model:
        model = self._model(name)
        if model.transient:
            raise FlowError("transient_model", f"model '{name}' is transient: its objects are never stored",
                            status=500, details={"model": name})  # fmt: skip
        return model

    def _now(self) -> str:
        return iso(datetime.fromtimestamp(self.clock(), timezone.utc))

    def _encode(self, model: Model, row: Mapping[str, Any]) -> dict[str, Any]:
        """Column values as the driver binds them, named like the statements' ``v_`` params."""
        values = {}
        for name, value in row.items():
            encode = self._converter(model, name)[0]
            values[f"v_{name}"] = encode(value) if encode is not None and value is not None else value
        return values

    async def _hash(self, model: Model, values: dict[str, Any]) -> None:
        for name in model.encrypted:
            if values.get(name) is not None:
                plain = values[name]
                values[name] = await (self.hasher(plain) if self.hasher else asyncio.to_thread(hash_secret, plain, self.bcrypt_rounds))


# --- update plans -----------------------------------------------------------------------


def _plan_updates(model: Model, updates: Iterable[Mapping[str, Any]]) -> tuple[dict, dict, dict]:
    """Split Altogic updates into plain sets, numeric steps and list changes (all checked)."""
    sets: dict[str, Any] = {}
    steps: dict[str, Any] = {}
    lists: dict[str, Callable[[Any], Any]] = {}
    problems = []
    for update in updates:
        name, kind, value = update.get("field"), update.get("updateType"), update.get("value")
        problem = _update_problem(model, name, kind, value)
        if problem:
            problems.append(_item(model, str(name), problem))
        elif kind in ("set", "unset"):
            sets[name] = value if kind == "set" else None
        elif kind in ("increment", "decrement"):
            steps[name] = value if kind == "increment" else -value
        else:
            lists[name] = _pusher(value) if kind == "push" else _puller(value)
    if problems:
        raise ValidationFailed(problems)
    return sets, steps, lists


def _update_problem(model: Model, name: Any, kind: Any, value: Any) -> str | None:
    f: Field | None = model.fields.get(name) if isinstance(name, str) else None
    if f is None:
        return f"'{name}' is not a field of {model.name}"
    if kind not in UPDATE_TYPES:
        return f"updateType of '{name}' must be one of {', '.join(UPDATE_TYPES)}"
    if kind in ("increment", "decrement"):
        if KINDS[f.type] not in ("integer", "decimal"):
            return f"field '{name}' is {f.type}, which cannot be incremented"
        number = (int,) if f.type == "integer" else (int, float)
        if isinstance(value, bool) or not isinstance(value, number):
            return f"the {kind} of field '{name}' must be {'an integer' if f.type == 'integer' else 'a number'}"
    if kind in ("push", "pull") and f.type != "list":
        return f"field '{name}' is not a list, so nothing can be pushed or pulled"
    return None


def _pusher(value: Any) -> Callable[[Any], list]:
    return lambda current: [*(current or []), value]


def _puller(value: Any) -> Callable[[Any], list]:
    return lambda current: [item for item in (current or []) if item != value]


def _ordering(model: Model, table: sa.Table, order: tuple) -> list[Any]:
    clauses = []
    for name, direction in order:
        f = model.fields.get(name)
        if name not in ("_id", "createdAt", "updatedAt") and (f is None or KINDS[f.type] == "json" or f.type in HIDDEN):
            raise FlowError("invalid_sort", f"cannot sort {model.name} by '{name}'", status=500,
                            details={"field": name, "model": model.name})  # fmt: skip
        column = table.c[name]
        clauses.append(column.desc() if str(direction).lower() == "desc" else column.asc())
    return [*clauses, table.c._id.asc()]


def _whole(name: str, value: Any, low: int, high: int | None) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        bound = f"from {low} to {high}" if high is not None else f"from {low} up"
        raise FlowError("invalid_paging", f"{name} must be a whole number {bound}", status=400, details={"field": name})
    return value


def _item(model: Model, name: str, message: str) -> dict[str, Any]:
    return {"origin": "client_error", "code": "validation_error", "message": message,
            "details": {"field": name, "model": model.name}}  # fmt: skip


def _unavailable(exc: Exception) -> FlowError:
    text = str(exc).lower()
    if "locked" in text or "busy" in text or "connect" in text or "closed" in text or "timeout" in text:
        return FlowError("database_unavailable", "The database is busy or unreachable; try again", status=503)
    return FlowError("database_error", "The database could not run the query", status=500)
