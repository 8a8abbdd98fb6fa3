"""Passwords: the policy for new ones (length, common passwords, the app's and user's words),
the decoy, outdated hashes, and the pool."""

from __future__ import annotations

import bcrypt
import pytest

from flowengine.auth.passwords import Passwords, common_passwords, cores, pool
from flowengine.errors import ValidationFailed
from flowengine.hashing import hash_secret
from flowengine.models import Encrypted

pytestmark = pytest.mark.anyio

TOO_COMMON = "password is too common: it is on the list of passwords attackers try first"
NOT_OURS = "password must not be the app's name or the email address"


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
        ("a" * 129, ("password", "password must be at most 128 characters long")),
        ("\ud800" * 8, ("password", "password must be Unicode text")),  # JSON can carry a lone surrogate
        ("password", ("password", TOO_COMMON)),
        ("12345678", ("password", TOO_COMMON)),
        ("PassWord1", ("password", TOO_COMMON)),  # compared case-blind
        ("Ｐａｓｓｗｏｒｄ１", ("password", TOO_COMMON)),  # full-width letters: NFKC makes them "password1"
        ("Twofactor", ("password", NOT_OURS)),  # the app's name
        ("two-factor 2024!", ("password", NOT_OURS)),
        ("ann.smith@example.com", ("password", NOT_OURS)),  # the user's address
        ("ANN.SMITH99", ("password", NOT_OURS)),  # or its part before the @
    ],
)
def test_a_new_password_must_meet_the_policy(password: object, expected: tuple[str, str]) -> None:
    with pytest.raises(ValidationFailed) as caught:
        Passwords(4, avoid=("twofactor",)).check_new(password, avoid=("ann.smith@example.com",))
    assert message(caught.value) == expected



def test_the_common_password_list_is_bundled_whole() -> None:
    common = common_passwords()
    assert len(common) >= 3000  # ASVS 5 V6.2.4: at least the top 3,000 (shorter ones fail the length rule)
    assert {"password", "12345678", "iloveyou", "qwertyuiop"} <= common
    assert all(len(entry) >= 8 and entry == entry.lower() for entry in common)


def test_the_policy_accepts_long_passwords_in_any_script() -> None:
    passwords = Passwords(4, min_length=10, avoid=("twofactor",))
    assert passwords.check_new("é" * 64) == "é" * 64  # 128 bytes: more than bcrypt itself reads
    assert passwords.check_new("€" * 25) == "€" * 25  # 75 bytes
    assert passwords.check_new("パスワードは長くても大丈夫です" * 8) == "パスワードは長くても大丈夫です" * 8  # 120 characters
    assert passwords.check_new("a" * 128) == "a" * 128
    assert passwords.check_new("ten chars!") == "ten chars!"
    assert passwords.check_new("my twofactor password") == "my twofactor password"  # containing the name is fine
    assert passwords.check_given("short") == "short"  # signing in: old passwords keep working
    with pytest.raises(ValidationFailed) as caught:
        passwords.check_new("nine char", "newPassword")
    assert message(caught.value) == ("newPassword", "newPassword must be at least 10 characters long")


async def test_hash_and_match_at_the_configured_cost() -> None:
    passwords = Passwords(5)
    digest = await passwords.hash("correct horse")
    assert digest.startswith("$fe1$2b$05$")
    assert await passwords.matches(Encrypted(digest), "correct horse")
    assert not await passwords.matches(Encrypted(digest), "correct horsE")


async def test_without_a_password_the_decoy_is_checked_and_never_matches() -> None:
    passwords = Passwords(4)
    await passwords.start()
    decoy = passwords._decoy
    assert decoy is not None and decoy._digest.startswith("$fe1$2b$04$")  # the same cost as real checks
    assert not await passwords.matches(None, "anything at all")
    assert not await passwords.matches(decoy, "anything at all")


async def test_the_decoy_is_made_on_first_need_when_not_started() -> None:
    passwords = Passwords(4)
    assert not await passwords.matches(None, "x")
    assert passwords._decoy is not None


def test_a_hash_of_a_lower_cost_or_the_bare_scheme_is_outdated() -> None:
    passwords = Passwords(10)
    bare = bcrypt.hashpw(b"correct horse", bcrypt.gensalt(10)).decode()  # as hashes were made before $fe1
    assert passwords.outdated(Encrypted(hash_secret("correct horse", 4)))
    assert passwords.outdated(Encrypted(bare))
    assert not passwords.outdated(Encrypted(hash_secret("correct horse", 10)))
    assert not Passwords(4).outdated(Encrypted(hash_secret("correct horse", 10)))  # a higher cost stays
    assert not passwords.outdated(None)


def test_the_pool_has_a_thread_per_core_and_is_shared() -> None:
    assert pool() is pool() and pool()._max_workers == cores() >= 1
