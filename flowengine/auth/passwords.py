"""Passwords: the policy a new one must meet, and bcrypt kept off the event loop.

bcrypt is slow on purpose (about 0.25 s at cost 12) and releases the GIL while it works, so
it runs in one process-wide pool with a thread per core: as many hashes run at once as
the machine can compute, the event loop keeps serving, and a burst of sign-ins queues in
the pool instead of oversubscribing the CPU (or starving the default thread pool that
email and file I/O use).

A password is ``min_length`` (8 by default) to 128 characters of any script. It is stored
pre-hashed (``flowengine/hashing.py``), so bcrypt's 72-byte limit neither cuts nor refuses
64 × "é"; a longer one, or text that is no Unicode (a lone surrogate), is refused with a 400
before any hashing.

A new password (sign-up, change, reset) must not be one that attackers try first (NIST SP
800-63B §5.1.1.2, ASVS 5 V6.2.4): one of the 8,346 common passwords in
``common-passwords.txt`` (those of Django's list of 20,000 that have 8 printable ASCII
characters or more), compared whole and case-blind, nor the app's name or the user's email
address, also with digits or symbols around it ("Twofactor2024!"). A refusal is a 400 that
says why.

A stored hash made at a lower cost than the app's, or before the pre-hash scheme, is
``outdated``: the auth service redoes it when the password is next proven right.
"""

from __future__ import annotations

import asyncio
import functools
import os
import secrets
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterable, TypeVar

from flowengine.errors import ValidationFailed
from flowengine.hashing import MAX_SECRET_CHARS, hash_secret
from flowengine.models import Encrypted

COMMON = Path(__file__).with_name("common-passwords.txt")

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

    def __init__(self, cost: int = 12, min_length: int = 8, avoid: Iterable[str] = ()) -> None:
        self.cost = cost
        self.min_length = min_length
        #: Words no new password may be (the app's name); each call adds the user's own.
        self.avoid = tuple(avoid)
        self._decoy: Encrypted | None = None

    async def start(self) -> None:
        """Hash the decoy that unknown accounts are checked against, at the real cost."""
        self._decoy = Encrypted(await self.hash(secrets.token_urlsafe(16)))

    def check_new(self, password: Any, field: str = "password", avoid: Iterable[str | None] = ()) -> str:
        """A new password that meets the policy, else a 400 naming the field and the reason.

        ``avoid``: the user's own words (their email address) besides the app's.
        """
        text = self.check_given(password, field)
        if len(text) < self.min_length:
            raise _invalid(field, f"{field} must be at least {self.min_length} characters long")
        if unicodedata.normalize("NFKC", text).casefold() in common_passwords():
            raise _invalid(field, f"{field} is too common: it is on the list of passwords attackers try first")
        if _core(text) in _context_words((*self.avoid, *avoid)):
            raise _invalid(field, f"{field} must not be the app's name or the email address")
        return text

    def check_given(self, password: Any, field: str = "password") -> str:
        """A password the hash can hold (sign-in: no length floor, old passwords still work)."""
        if not isinstance(password, str) or not password:
            raise _invalid(field, f"{field} is required")
        if len(password) > MAX_SECRET_CHARS:
            raise _invalid(field, f"{field} must be at most {MAX_SECRET_CHARS} characters long")
        try:
            password.encode()
        except UnicodeEncodeError:
            raise _invalid(field, f"{field} must be Unicode text") from None
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

    def outdated(self, sealed: Encrypted | None) -> bool:
        """Whether a right password's hash should be redone at this cost (security P3)."""
        return isinstance(sealed, Encrypted) and sealed.outdated(self.cost)


@functools.cache
def common_passwords() -> frozenset[str]:
    """The bundled list of common passwords (lower-case)."""
    lines = COMMON.read_text(encoding="utf-8").splitlines()
    return frozenset(line for line in lines if line and not line.startswith("# "))


def _core(text: str) -> str:
    """A word as compared with the app's name and the user's address: letters and digits,
    case-blind, without the digits at its ends ("Two-Factor 2024!" → "twofactor")."""
    kept = "".join(c for c in unicodedata.normalize("NFKC", text).casefold() if c.isalnum())
    return kept.strip("0123456789")


def _context_words(words: Iterable[str | None]) -> frozenset[str]:
    """The cores a new password may not have: each word's, and an address's part before the @."""
    found = set()
    for word in words:
        if word:
            found.update({_core(word), _core(word.partition("@")[0])})
    return frozenset(found - {""})


def _invalid(field: str, message: str) -> ValidationFailed:
    return ValidationFailed([{"origin": "client_error", "code": "validation_error", "message": message,
                              "details": {"field": field}}])  # fmt: skip
