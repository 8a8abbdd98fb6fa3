"""Encrypted fields as stored: how a secret (a password) is hashed, and checked against its hash.

A secret is stored as ``$fe1$2b$12$<salt and hash>``: bcrypt (cost in the hash, here 12) of
the base64 of HMAC-SHA-384 of the secret's NFKC form. bcrypt reads at most 72 bytes, which
is 25 × "€" or 24 CJK characters; the pre-hash turns any text of up to ``MAX_SECRET_CHARS``
characters into 64 ASCII bytes (and no NUL byte, where bcrypt would stop reading), so a long
or non-Latin password is neither refused nor cut. NFKC makes the look-alike spellings a
keyboard may type (a precomposed "é" or "e" plus an accent) one password (NIST SP 800-63B
§5.1.1.2). The HMAC key is fixed and public: it is no pepper, it separates domains, so a
leaked list of plain SHA-384 digests from some other site cannot be tried directly against
these bcrypt hashes ("password shucking", OWASP Password Storage Cheat Sheet). Anyone who
moves the hashes to another system can verify them with the same three steps.

Hashes made before this scheme (or imported from elsewhere) are bare bcrypt of the secret's
UTF-8 bytes (``$2b$10$...``, also ``$2a$``/``$2y$``). They keep working; ``outdated`` says
which hashes the auth service redoes at the next sign-in (a bare one, or a cost below the
app's).

``matches`` costs exactly one bcrypt check, whatever it is given: a text that cannot be the
secret (not text, empty, too long, over 72 bytes for a bare hash) is still checked, as a
dummy against the same hash, before the answer False. A known account therefore takes as
long to refuse as an unknown one checked against a decoy (security A3).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import re
import unicodedata
from typing import Any

import bcrypt

#: The scheme's mark before the bcrypt hash; a later scheme takes another (``$fe2``).
SCHEME = "$fe1"
#: The longest secret the scheme takes, in characters (ASVS 4 2.1.2: at least 64 allowed, more than 128 refused).
MAX_SECRET_CHARS = 128
#: bcrypt reads only this many bytes: a bare hash cannot hold a longer secret.
BCRYPT_MAX_BYTES = 72
_KEY = b"flowengine encrypted field v1"
_HASH = re.compile(r"(\$fe1)?(\$2[aby]\$([0-9]{2})\$[./A-Za-z0-9]{53})")
#: What a dummy check compares: never a secret's key (the scheme's keys are 64 base64 characters).
_DUMMY = b"\x01dummy"


def hash_secret(plain: str, rounds: int = 12) -> str:
    """The stored form of a validated secret (slow on purpose: call it off the event loop)."""
    key = _key(plain, versioned=True)
    if key is None:
        raise ValueError(f"a secret must be Unicode text of at most {MAX_SECRET_CHARS} characters")
    return SCHEME + bcrypt.hashpw(key, bcrypt.gensalt(rounds)).decode()


def matches(plain: Any, digest: str) -> bool:
    """Whether ``plain`` is the secret hashed in ``digest``: one bcrypt check, every time.

    Empty text never matches; a malformed ``digest`` is checked as a decoy (at cost 12) and
    never matches either.
    """
    shape = _HASH.fullmatch(digest) if isinstance(digest, str) else None
    hashed = shape[2].encode() if shape is not None else _decoy()
    key = _key(plain, versioned=shape[1] is not None) if shape is not None and plain != "" else None
    try:  # without a key (``plain`` cannot be the secret) a dummy is checked: the same work
        found = bcrypt.checkpw(key or _DUMMY, hashed)
    except ValueError:  # bcrypt's own refusal of a hash it cannot read (a cost below 4)
        return False
    return found and key is not None


def cost(digest: Any) -> int | None:
    """The bcrypt cost a stored hash was made with; None when it is no hash of either scheme."""
    shape = _HASH.fullmatch(digest) if isinstance(digest, str) else None
    return int(shape[3]) if shape is not None else None


def outdated(digest: Any, rounds: int) -> bool:
    """Whether a hash should be redone at ``rounds``: made at a lower cost, or by the bare scheme."""
    found = cost(digest)
    return found is not None and (found < rounds or not digest.startswith(SCHEME))


@functools.cache
def _decoy() -> bytes:
    """A bcrypt hash at the usual cost (12), made once, to spend a check on when there is no hash."""
    return bcrypt.hashpw(b"decoy", bcrypt.gensalt(12))


def _key(plain: Any, versioned: bool) -> bytes | None:
    """What bcrypt reads for ``plain`` under the scheme; None when ``plain`` cannot be a secret."""
    if not isinstance(plain, str) or len(plain) > MAX_SECRET_CHARS:
        return None
    try:
        if versioned:
            normal = unicodedata.normalize("NFKC", plain).encode()
            return base64.b64encode(hmac.digest(_KEY, normal, hashlib.sha384))
        data = plain.encode()
    except UnicodeEncodeError:  # a lone surrogate, as JSON can carry ("\ud800")
        return None
    return data if len(data) <= BCRYPT_MAX_BYTES and b"\0" not in data else None
