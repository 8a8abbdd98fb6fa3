"""Stored data: models as tables in SQLite or PostgreSQL, queried with Altogic queries."""

from flowengine.store.migrate import MigrationError
from flowengine.store.query import CompiledQuery, Filter, QueryError, compile_query
from flowengine.store.store import Store, open_store

__all__ = ["CompiledQuery", "Filter", "MigrationError", "QueryError", "Store", "compile_query", "open_store"]
