"""Passwords: the policy a new one must meet, and bcrypt kept off the event loop.

bcrypt is slow on purpose (about 0.25 s at cost 12) and releases the GIL while it works, so
it runs in one process-wide pool with a thread per core: as many hashes run at once as
the machine can compute, the event loop keeps serving, and a burst of sign-ins queues in
the pool instead of oversubscribing the CPU (or starving the default thread pool that
email and file I/O use).

bcrypt reads only the first 72 bytes of a password. Rather than silently cut a longer one
(two passwords sharing 72 bytes would both match), it is refused with a 400 that says so,
before any hashing.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, TypeVar

from flowengine.errors import ValidationFailed
from flowengine.models import MAX_SECRET_BYTES, Encrypted, hash_secret

T = TypeVar("T")

_POOL: ThreadPoolExecutor | None = None


def cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def pool() -> ThreadPoolExecutor:
    """The process's bcrypt pool (made on first use)."""
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=cores(), thread_name_prefix="bcrypt")
    return _POOL


async def in_pool(work: Callable[..., T], *args: Any) -> T:
    return await asyncio.get_running_loop().run_in_executor(pool(), work, *args)


class Passwords:
    """Checks, hashes and verifies passwords at one cost with one policy."""

    def __init__(self, cost: int = 12, min_length: int = 8) -> None:
        self.cost = cost
        self.min_length = min_length
        self._decoy: Encrypted | None = None

    async def start(self) -> None:
        """Hash the decoy that unknown accounts are checked against, at the real cost."""
        self._decoy = Encrypted(await self.hash(secrets.token_urlsafe(16)))

    def check_new(self, password: Any, field: str = "password") -> str:
        """A new password that meets the policy, else a 400 naming the field."""
        text = self.check_given(password, field)
        if len(text) < self.min_length:
            raise _invalid(field, f"{field} must be at least {self.min_length} characters long")
        return text

    def check_given(self, password: Any, field: str = "password") -> str:
        """A password as bcrypt can read it (sign-in: no length floor, old passwords still work)."""
        if not isinstance(password, str) or not password:
            raise _invalid(field, f"{field} is required")
        if len(password.encode()) > MAX_SECRET_BYTES:
            raise _invalid(field, f"{field} must be at most {MAX_SECRET_BYTES} bytes long (UTF-8)")
        return password

    async def hash(self, plain: str) -> str:
        return await in_pool(hash_secret, plain, self.cost)

    async def matches(self, sealed: Encrypted | None, plain: str) -> bool:
        """Whether ``plain`` is the password sealed in ``sealed``.

        With no password to check (an unknown account, or one without a password) the decoy
        is checked instead, so the answer takes as long either way.
        """
        target = sealed if isinstance(sealed, Encrypted) else self._decoy
        if target is None:  # not started: make the decoy now rather than answer faster
            await self.start()
            target = self._decoy
        assert target is not None
        found = await in_pool(target.matches, plain)
        return found and target is sealed


def _invalid(field: str, message: str) -> ValidationFailed:
    return ValidationFailed([{"origin": "client_error", "code": "validation_error", "message": message,
                              "details": {"field": field}}])  # fmt: skip
