"""find-one by a unique field on a 100,000-row table: the data node vs the raw driver.

    python bench/store.py [--rows 100000] [--postgres URL]

For each database the same lookup runs three ways: the ``find-one`` node as the
interpreter calls it (the query param evaluated for the run, then the node, the store and
the driver), the store's SQL run directly with the driver's synchronous API (sqlite3,
psycopg), and for PostgreSQL also psycopg's async API. Figures are µs per lookup; the
ratios are node / raw driver (goal: at most 1.5). On PostgreSQL the fair baseline for a
server that must not block its event loop is the async driver: asyncio's own wake-ups cost
tens of µs per round trip that the synchronous API does not pay. The ways take turns for a few rounds and the
best round of each is shown, so a busy machine blurs the figures less.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import psycopg

from flowengine.context import RunContext, Services
from flowengine.graph import PARAM_COMPILERS, CompileContext
from flowengine.models import compile_models
from flowengine.spec.yamlfile import loads
from flowengine.store import Store, open_store
from flowengine_nodes import data

USERS = """\
fields:
  email: { type: email, required: true, unique: true }
  name: text
  age: integer
  active: boolean
"""
QUERY = "this.email == params.query.email"
DEFAULT_POSTGRES = os.environ.get("TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def models() -> dict[str, Any]:
    document = loads(USERS, "models/users.yaml")
    compiled, problems = compile_models([("users", document.data, document.where)])
    assert not problems, problems
    return compiled


def rows(count: int) -> list[tuple]:
    now = "2026-01-01T00:00:00.000Z"
    return [(f"{i:024x}", now, now, f"user{i}@example.com", f"User {i}", i % 90, i % 2) for i in range(count)]


def email(i: int, count: int) -> str:
    return f"user{(i * 7919) % count}@example.com"


ROUNDS = 5
Lookup = Callable[[int], Any]


async def best(ways: dict[str, Lookup], ops: int) -> dict[str, float]:
    """Best µs per lookup of each way (sync or async), over interleaved rounds."""
    found: dict[str, float] = {}
    for _ in range(ROUNDS):
        for name, run in ways.items():
            began = time.perf_counter()
            for i in range(ops):
                result = run(i)
                if asyncio.iscoroutine(result):
                    await result
            found[name] = min(found.get(name, float("inf")), (time.perf_counter() - began) / ops * 1e6)
    return found


async def node_way(store: Store, count: int) -> tuple[Lookup, str, dict[str, Any]]:
    """The find-one node as a run calls it, and the SQL the store runs with its constants."""
    query = PARAM_COMPILERS["query"](QUERY, CompileContext({"model": "users"}, store.models))
    ctx = RunContext(Services(store=store), scope={}, flow="bench")

    async def run(i: int) -> None:
        scope = {"params": {"query": {"email": email(i, count)}}}
        output, _ = await data.find_one(ctx, {"model": "users", "where": query.evaluate(scope), "encrypted": False})
        assert output == "found", email(i, count)

    await run(0)
    statement = next(s for key, s in store._statements.items() if key[0] == "select")
    return run, statement.sql, dict(statement.constants or {})


async def bench_sqlite(count: int, ops: int) -> list[tuple[str, float | None, float | None, float]]:
    with tempfile.TemporaryDirectory() as folder:
        store = open_store(None, models(), Path(folder))
        await store.start()
        path = store.backend.path
        with sqlite3.connect(path) as seed:
            seed.executemany("INSERT INTO users VALUES (?, ?, ?, ?, ?, ?, ?)", rows(count))
        node, sql, constants = await node_way(store, count)
        raw = sqlite3.connect(path)
        found = await best({"raw": lambda i: raw.execute(sql, {**constants, "q0": email(i, count)}).fetchone(),
                            "node": node}, ops)  # fmt: skip
        raw.close()
        await store.close()
    return [("sqlite", found["raw"], None, found["node"])]


async def bench_postgres(url: str, count: int, ops: int) -> list[tuple[str, float | None, float | None, float]]:
    schema = f"fe_bench_{secrets.token_hex(4)}"
    plain = url.replace("+psycopg", "")
    store = open_store(url, models(), ".", schema=schema)
    try:
        await store.start()
        with psycopg.connect(plain) as seed, seed.cursor().copy(f'COPY "{schema}".users FROM STDIN') as copy:
            for row in rows(count):
                copy.write_row(row)
        with psycopg.connect(plain, autocommit=True) as seed:
            seed.execute(f'ANALYZE "{schema}".users')
        node, sql, constants = await node_way(store, count)
        raw = psycopg.connect(plain, autocommit=True)
        raw_async_connection = await psycopg.AsyncConnection.connect(plain, autocommit=True)

        async def raw_async(i: int) -> Any:
            cursor = await raw_async_connection.execute(sql, {**constants, "q0": email(i, count)})
            return await cursor.fetchone()

        def raw_sync(i: int) -> Any:
            return raw.execute(sql, {**constants, "q0": email(i, count)}).fetchone()

        found = await best({"raw": raw_sync, "async": raw_async, "node": node}, ops)
        raw.close()
        await raw_async_connection.close()
    finally:
        await store.close()
        with psycopg.connect(plain, autocommit=True) as cleanup:
            cleanup.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    return [("postgresql", found["raw"], found["async"], found["node"])]


def reachable(url: str) -> bool:
    try:
        psycopg.connect(url.replace("+psycopg", ""), connect_timeout=2).close()
        return True
    except psycopg.OperationalError:
        return False


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--ops", type=int, default=10_000, help="lookups per round (a quarter on PostgreSQL)")
    parser.add_argument("--postgres", default=DEFAULT_POSTGRES)
    args = parser.parse_args()
    results = await bench_sqlite(args.rows, args.ops)
    if reachable(args.postgres):
        results += await bench_postgres(args.postgres, args.rows, max(args.ops // 4, 1000))
    else:
        print(f"PostgreSQL not reachable at {args.postgres}: skipped")
    print(f"find-one by unique email, {args.rows:,} rows (µs per lookup, best of {ROUNDS} rounds)")
    print(f"{'database':<12}{'raw sync':>10}{'raw async':>11}{'node':>9}{'node/sync':>11}{'node/async':>12}")
    for name, raw_sync, raw_async, node in results:
        shown_async = f"{raw_async:>11.1f}" if raw_async is not None else f"{'-':>11}"
        ratio_async = f"{node / raw_async:>11.2f}x" if raw_async is not None else f"{'-':>12}"
        print(f"{name:<12}{raw_sync:>10.1f}{shown_async}{node:>9.1f}{node / raw_sync:>10.2f}x{ratio_async}")


if __name__ == "__main__":
    asyncio.run(main())
