"""Encrypted fields as stored: the pre-hashed scheme, the bare bcrypt hashes made before it,
and one bcrypt check for every answer."""

from __future__ import annotations

from typing import Any

import bcrypt
import pytest

from flowengine.hashing import SCHEME, cost, hash_secret, matches, outdated

SECRET = "correct horse battery"

@pytest.fixture(scope="module")
def bare() -> str:
    """A hash as they were made before the scheme (and as other systems make them)."""
    return bcrypt.hashpw(SECRET.encode(), bcrypt.gensalt(4)).decode()


def test_a_secret_is_stored_as_bcrypt_of_its_pre_hash_with_the_cost_in_it() -> None:
    digest = hash_secret(SECRET, 5)
    assert digest.startswith(f"{SCHEME}$2b$05$") and len(digest) == len(SCHEME) + 60
    assert cost(digest) == 5 and matches(SECRET, digest)
    assert not matches(SECRET + " ", digest) and not matches(SECRET.upper(), digest)


def test_long_and_non_latin_secrets_are_neither_refused_nor_cut() -> None:
    for secret in ("é" * 64, "€" * 25, "パスワード" * 25, "a" * 128):
        assert matches(secret, hash_secret(secret, 4)), secret
    shared = "x" * 72  # bcrypt alone would read only these 72 bytes of both
    assert not matches(shared + "tail one", hash_secret(shared + "tail two", 4))
    with pytest.raises(ValueError):
        hash_secret("a" * 129, 4)


def test_look_alike_spellings_are_one_secret() -> None:
    digest = hash_secret("caf\u00e9 au lait", 4)  # é as one code point
    assert matches("cafe\u0301 au lait", digest)  # e plus a combining accent: NFKC makes it é
    assert not matches("cafe au lait", digest)


def test_bare_bcrypt_hashes_keep_working(bare: str) -> None:
    assert matches(SECRET, bare) and not matches("wrong", bare)
    assert matches(SECRET, "$2a$" + bare[4:]) and matches(SECRET, "$2y$" + bare[4:])
    assert cost(bare) == 4


@pytest.mark.parametrize("scheme", ["engine", "bare"])
@pytest.mark.parametrize(
    "plain",
    [SECRET, "wrong", None, 12, "", "a" * 129, "\ud800", "€" * 25, SECRET + "\0more", "x" * 1_000_000],
    ids=["right", "wrong", "null", "number", "empty", "129 chars", "lone surrogate", "75 bytes", "nul", "1 MB"],
)
def test_every_answer_costs_one_bcrypt_check(checkpw_calls: list[bytes], bare: str, scheme: str, plain: Any) -> None:
    digest = hash_secret(SECRET, 4) if scheme == "engine" else bare
    checkpw_calls.clear()
    assert matches(plain, digest) is (plain == SECRET)
    assert len(checkpw_calls) == 1  # an input the hash cannot hold takes as long as a wrong one


def test_a_malformed_hash_never_matches_yet_costs_a_check(checkpw_calls: list[bytes]) -> None:
    for digest in (None, "", SECRET, "$fe1" + "x" * 60, "$fe2$2b$04$" + "a" * 53, "$2b$04$" + "é" * 53):
        checkpw_calls.clear()
        assert matches(SECRET, digest) is False and len(checkpw_calls) == 1
        assert cost(digest) is None and not outdated(digest, 12)
    below_bcrypts_least = "$2b$03$" + hash_secret(SECRET, 4)[-53:]  # the hash's shape, a cost bcrypt refuses
    assert matches(SECRET, below_bcrypts_least) is False


def test_an_empty_secret_can_be_stored_but_never_matches() -> None:
    assert not matches("", hash_secret("", 4))


def test_outdated_hashes_are_bare_or_of_a_lower_cost(bare: str) -> None:
    assert outdated(bare, 4)  # the bare scheme, whatever its cost
    assert outdated(hash_secret(SECRET, 4), 5)
    assert not outdated(hash_secret(SECRET, 5), 5) and not outdated(hash_secret(SECRET, 6), 5)
