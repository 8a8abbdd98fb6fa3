"""Shared fixtures: real Redis and PostgreSQL when the environment has them.

A test that needs a service asks for the ``redis_url`` or ``postgres_url`` fixture. When the
service is absent the test skips with the reason printed, unless ``FLOWENGINE_REQUIRE_REDIS=1``
or ``FLOWENGINE_REQUIRE_POSTGRES=1`` is set (``.ci/run`` sets both), in which case it fails.
"""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from pathlib import Path
from typing import Any, AsyncIterator
from urllib.parse import urlparse

import httpx
import bcrypt
import pytest

from flowengine.cache import MemoryCache, open_cache

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
POSTGRES_URL = os.environ.get(
    "TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def _reachable(url: str) -> bool:
    parts = urlparse(url)
    try:
        with socket.create_connection((parts.hostname, parts.port), timeout=1):
            return True
    except OSError:
        return False


def _service(url: str, name: str, require_var: str) -> str:
    if _reachable(url):
        return url
    reason = f"{name} is not reachable at {url}"
    if os.environ.get(require_var) == "1":
        pytest.fail(f"{reason}, and {require_var}=1 makes it required")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def redis_url() -> str:
    return _service(REDIS_URL, "Redis", "FLOWENGINE_REQUIRE_REDIS")


@pytest.fixture(scope="session")
def postgres_url() -> str:
    return _service(POSTGRES_URL, "PostgreSQL", "FLOWENGINE_REQUIRE_POSTGRES")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@contextlib.asynccontextmanager
async def app_client(app_dir: Path, **build_options: Any) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for the app in ``app_dir``, through the real ASGI app and its lifespan."""
    from flowengine.runtime import build

    asgi = build(app_dir, **build_options)
    async with asgi.router.lifespan_context(asgi):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi), base_url="http://test") as http:
            yield http


@pytest.fixture
def checkpw_calls(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The password each ``bcrypt.checkpw`` call is given from now on, in whichever thread:
    timing tests count checks (every path must spend exactly one)."""
    given: list[bytes] = []
    checkpw = bcrypt.checkpw

    def counted(password: bytes, hashed: bytes) -> bool:
        given.append(password)
        return checkpw(password, hashed)

    monkeypatch.setattr(bcrypt, "checkpw", counted)
    return given


@pytest.fixture(params=["memory", "redis"])
async def cache(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """The in-process cache, then Redis under a fresh namespace emptied afterwards: what must
    hold on one must hold on the other. (A test file may define its own ``cache``.)"""
    if request.param == "memory":
        yield MemoryCache()
        return
    backend = open_cache(request.getfixturevalue("redis_url"), f"test-{uuid.uuid4().hex}")
    yield backend
    keys, _ = await backend.keys("*", count=1000)
    if keys:
        await backend.delete(*keys)
    await backend.close()
