"""PostgreSQL, for production: chosen by a ``DATABASE_URL``.

Statements run on psycopg 3's native asyncio connections, kept in a small pool: no thread
hop, no greenlet, one round trip per read (connections are in autocommit mode, so a read
is not wrapped in BEGIN/ROLLBACK), and psycopg prepares statements it sees repeatedly.
The pool is a few lines because it needs only this: reuse idle connections, cap how many
are open, and drop a connection that broke or was left mid-transaction (a cancelled run).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, AsyncIterator, Mapping

import psycopg
import sqlalchemy as sa
from psycopg import errors as pg_errors
from psycopg.pq import ExecStatus, TransactionStatus
from sqlalchemy.pool import NullPool

from flowengine.models import Model
from flowengine.store.migrate import migrate

POOL_SIZE = 10
CONNECT_TIMEOUT = 5
_LOCK_KEY = 0x666C6F77  # "flow": one migrator at a time across servers


def normalise_url(url: str) -> str:
    """``postgres://``, ``postgresql://`` or ``postgresql+psycopg://`` → SQLAlchemy's psycopg URL."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("postgres", "postgresql", "postgresql+psycopg"):
        raise ValueError(f"not a PostgreSQL URL: {scheme}://...")
    return f"postgresql+psycopg://{rest}"


class PostgresBackend:
    name = "postgresql"
    unavailable = (psycopg.OperationalError, psycopg.InterfaceError)

    def __init__(self, url: str, schema: str | None = None, pool_size: int = POOL_SIZE) -> None:
        self.url = normalise_url(url)
        self.schema = schema
        self.dialect = sa.create_engine(self.url).dialect
        self._pool = _Pool(self.url.replace("postgresql+psycopg://", "postgresql://", 1), pool_size)

    async def migrate(self, metadata: sa.MetaData, models: Mapping[str, Model], apply: bool) -> list[str]:
        return await asyncio.to_thread(self._migrate, metadata, models, apply)

    def _migrate(self, metadata: sa.MetaData, models: Mapping[str, Model], apply: bool) -> list[str]:
        engine = sa.create_engine(self.url, poolclass=NullPool, connect_args={"connect_timeout": CONNECT_TIMEOUT})
        try:
            with engine.begin() as connection:
                connection.execute(sa.select(sa.func.pg_advisory_xact_lock(_LOCK_KEY)))
                if self.schema and apply:
                    connection.execute(sa.schema.CreateSchema(self.schema, if_not_exists=True))
                return migrate(connection, metadata, models, apply)
        finally:
            engine.dispose()

    async def start(self) -> None:
        async with self._pool.connection():
            pass  # fail at start, not at the first request, when the server is unreachable

    async def close(self) -> None:
        await self._pool.close()

    async def fetch(self, sql: str, params: Mapping[str, Any]) -> list[tuple]:
        async with self._pool.connection() as connection:
            return await _run(connection, sql, params)

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[_Session]:
        async with self._pool.connection() as connection:
            async with connection.transaction():
                yield _Session(self, connection)

    @staticmethod
    def violation(error: BaseException) -> tuple[str, str | None] | None:
        """('unique' | 'reference', constraint name) for a constraint error, else None."""
        if isinstance(error, pg_errors.UniqueViolation):
            return "unique", error.diag.constraint_name
        if isinstance(error, pg_errors.ForeignKeyViolation):
            return "reference", error.diag.constraint_name
        return ("other", None) if isinstance(error, psycopg.IntegrityError) else None


class _Session:
    def __init__(self, backend: PostgresBackend, connection: psycopg.AsyncConnection) -> None:
        self.backend = backend
        self.connection = connection

    async def execute(self, sql: str, params: Mapping[str, Any]) -> list[tuple]:
        return await _run(self.connection, sql, params)


async def _run(connection: psycopg.AsyncConnection, sql: str, params: Mapping[str, Any]) -> list[tuple]:
    cursor = await connection.execute(sql, params)
    result = cursor.pgresult  # not cursor.description, which builds a column object per column
    return await cursor.fetchall() if result is not None and result.status == ExecStatus.TUPLES_OK else []


class _Pool:
    def __init__(self, conninfo: str, size: int) -> None:
        self._conninfo = conninfo
        self._slots = asyncio.Semaphore(size)
        self._idle: list[psycopg.AsyncConnection] = []

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection]:
        async with self._slots:
            connection = self._idle.pop() if self._idle else await self._connect()
            try:
                yield connection
            finally:
                if connection.closed or connection.info.transaction_status != TransactionStatus.IDLE:
                    await connection.close()
                else:
                    self._idle.append(connection)

    async def _connect(self) -> psycopg.AsyncConnection:
        return await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True, connect_timeout=CONNECT_TIMEOUT)

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for connection in idle:
            await connection.close()
