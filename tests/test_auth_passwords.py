"""Passwords: the policy for new ones, bcrypt's 72 bytes, the decoy, and the pool."""

from __future__ import annotations

import bcrypt
import pytest

from flowengine.auth.passwords import Passwords, cores, pool
from flowengine.errors import ValidationFailed
from flowengine.models import Encrypted

pytestmark = pytest.mark.anyio


def message(error: ValidationFailed) -> tuple[str, str]:
    (item,) = error.items
    return item["details"]["field"], item["message"]


@pytest.mark.parametrize(
    ("password", "expected"),
    [
        (None, ("password", "password is required")),
        ("", ("password", "password is required")),
        (12345678, ("password", "password is required")),
        ("seven77", ("password", "password must be at least 8 characters long")),
        ("a" * 73, ("password", "password must be at most 72 bytes long (UTF-8)")),
        ("€" * 25, ("password", "password must be at most 72 bytes long (UTF-8)")),  # 25 characters, 75 bytes
    ],
)
def test_a_new_password_must_meet_the_policy(password: object, expected: tuple[str, str]) -> None:
    with pytest.raises(ValidationFailed) as caught:
        Passwords(4).check_new(password)
    assert message(caught.value) == expected


def test_the_policy_accepts_what_bcrypt_reads_whole() -> None:
    passwords = Passwords(4, min_length=10)
    assert passwords.check_new("€" * 24) == "€" * 24  # 72 bytes
    assert passwords.check_new("ten chars!") == "ten chars!"
    assert passwords.check_given("short") == "short"  # signing in: old passwords keep working
    with pytest.raises(ValidationFailed) as caught:
        passwords.check_new("nine char", "newPassword")
    assert message(caught.value) == ("newPassword", "newPassword must be at least 10 characters long")


async def test_hash_and_match_at_the_configured_cost() -> None:
    passwords = Passwords(5)
    digest = await passwords.hash("correct horse")
    assert digest.startswith("$2b$05$") and bcrypt.checkpw(b"correct horse", digest.encode())
    assert await passwords.matches(Encrypted(digest), "correct horse")
    assert not await passwords.matches(Encrypted(digest), "correct horsE")


async def test_without_a_password_the_decoy_is_checked_and_never_matches() -> None:
    passwords = Passwords(4)
    await passwords.start()
    decoy = passwords._decoy
    assert decoy is not None and decoy._digest.startswith("$2b$04$")  # the same cost as real checks
    assert not await passwords.matches(None, "anything at all")
    assert not await passwords.matches(decoy, "anything at all")


async def test_the_decoy_is_made_on_first_need_when_not_started() -> None:
    passwords = Passwords(4)
    assert not await passwords.matches(None, "x")
    assert passwords._decoy is not None


def test_the_pool_has_a_thread_per_core_and_is_shared() -> None:
    assert pool() is pool() and pool()._max_workers == cores() >= 1
