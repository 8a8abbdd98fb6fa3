"""SQLite, the embedded default: one file under the app's ``data/`` folder, in WAL mode.

How it stays off the event loop and still fast:

- **Writes** go to one writer thread with its own connection. SQLite admits one writer at
  a time anyway; queueing them in-process means runs never fight over the lock, so no
  "database is locked" reaches a client, and ``BEGIN IMMEDIATE`` with ``busy_timeout`` makes
  other processes wait politely. An ``asyncio.Lock`` keeps a run's grouped transaction from
  interleaving with other writes on that connection.
- **Reads** first run on the loop's own connection under a budget of SQLite VM steps
  (``set_progress_handler``). An indexed lookup finishes in microseconds, far below the
  budget, and skips the ~100 µs a thread hop costs; a read that would take longer (a scan)
  is interrupted within a fraction of a millisecond and rerun on a reader thread. That
  connection never waits for a lock (``busy_timeout = 0``: a busy database also sends the
  read to a thread), and WAL readers are never blocked by the writer.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Mapping

import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from flowengine.models import Model
from flowengine.store.migrate import migrate

#: Progress-handler calls (each after 1,000 VM steps) a read may take on the event loop.
INLINE_BUDGET = 20
READER_THREADS = 4
BUSY_TIMEOUT_MS = 10_000

_UNIQUE = re.compile(r"UNIQUE constraint failed: [^.]+\.(\w+)")


class SQLiteBackend:
    name = "sqlite"
    unavailable = (sqlite3.OperationalError,)

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.dialect = sa.create_engine("sqlite://", paramstyle="named").dialect
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="flowengine-sqlite-write")
        self._readers = ThreadPoolExecutor(READER_THREADS, thread_name_prefix="flowengine-sqlite-read")
        self._local = threading.local()
        self._opened: list[sqlite3.Connection] = []
        self._write_lock = asyncio.Lock()
        self._inline: sqlite3.Connection | None = None
        self._ticks = 0

    # --- lifecycle

    async def migrate(self, metadata: sa.MetaData, models: Mapping[str, Model], apply: bool) -> list[str]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return await asyncio.to_thread(self._migrate, metadata, models, apply)

    def _migrate(self, metadata: sa.MetaData, models: Mapping[str, Model], apply: bool) -> list[str]:
        engine = sa.create_engine(f"sqlite:///{self.path}", poolclass=NullPool,
                                  creator=lambda: self._connect(BUSY_TIMEOUT_MS, keep=False))  # fmt: skip
        sa.event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE"))
        try:
            with engine.begin() as connection:
                return migrate(connection, metadata, models, apply)
        finally:
            engine.dispose()

    async def start(self) -> None:
        inline = self._connect(0)
        inline.execute("PRAGMA journal_mode = WAL")
        inline.set_progress_handler(self._tick, 1000)
        self._inline = inline

    async def close(self) -> None:
        self._writer.shutdown(wait=True)
        self._readers.shutdown(wait=True)
        for connection in self._opened:
            connection.close()
        self._opened.clear()
        self._inline = None

    def _connect(self, busy_ms: int, keep: bool = True) -> sqlite3.Connection:
        connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, cached_statements=512)
        for pragma in (f"busy_timeout = {busy_ms}", "foreign_keys = ON", "synchronous = NORMAL"):
            connection.execute(f"PRAGMA {pragma}")
        if keep:
            self._opened.append(connection)
        return connection

    def _thread_connection(self) -> sqlite3.Connection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._local.connection = self._connect(BUSY_TIMEOUT_MS)
        return connection

    # --- reads

    def fetch_now(self, sql: str, params: Mapping[str, Any]) -> list[tuple] | None:
        """Rows of a short read done right here on the loop, or None when it must go to a thread."""
        if self._inline is None:
            return None
        self._ticks = 0
        try:
            return self._inline.execute(sql, params).fetchall()
        except sqlite3.OperationalError:
            return None  # over budget, or busy: spend a thread's time rather than the loop's

    async def fetch(self, sql: str, params: Mapping[str, Any]) -> list[tuple]:
        """Rows of a read outside any transaction."""
        rows = self.fetch_now(sql, params)
        return rows if rows is not None else await self._in(self._readers, _fetch, sql, params)

    def _tick(self) -> int:
        self._ticks += 1
        return self._ticks > INLINE_BUDGET

    # --- writes

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[_Session]:
        """A write transaction on the writer thread: committed on exit, rolled back on error."""
        async with self._write_lock:
            session = _Session(self)
            try:
                yield session
            except BaseException:
                if session.begun:
                    await asyncio.shield(self._in(self._writer, _finish, False))
                raise
            if session.begun:
                await self._in(self._writer, _finish, True)

    def _in(self, executor: ThreadPoolExecutor, job: Callable[..., Any], *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        return loop.run_in_executor(executor, lambda: job(self._thread_connection(), *args))

    @staticmethod
    def violation(error: BaseException) -> tuple[str, str | None] | None:
        """('unique', field) or ('reference', None) for a constraint error, else None."""
        if not isinstance(error, sqlite3.IntegrityError):
            return None
        unique = _UNIQUE.search(str(error))
        if unique:
            return "unique", unique[1]
        return ("reference", None) if "FOREIGN KEY" in str(error) else ("other", None)


class _Session:
    """Statements of one write transaction; the first one also begins it."""

    def __init__(self, backend: SQLiteBackend) -> None:
        self.backend = backend
        self.begun = False

    async def execute(self, sql: str, params: Mapping[str, Any]) -> list[tuple]:
        begin, self.begun = not self.begun, True
        return await self.backend._in(self.backend._writer, _execute, sql, params, begin)


def _fetch(connection: sqlite3.Connection, sql: str, params: Mapping[str, Any]) -> list[tuple]:
    return connection.execute(sql, params).fetchall()


def _execute(connection: sqlite3.Connection, sql: str, params: Mapping[str, Any], begin: bool) -> list[tuple]:
    if begin:
        connection.execute("BEGIN IMMEDIATE")
    return connection.execute(sql, params).fetchall()


def _finish(connection: sqlite3.Connection, commit: bool) -> None:
    if not connection.in_transaction:
        return
    try:
        connection.execute("COMMIT" if commit else "ROLLBACK")
    except sqlite3.Error:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise
