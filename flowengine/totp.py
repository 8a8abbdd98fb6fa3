"""Authenticator-app codes (TOTP, RFC 6238): a second factor that is not SMS.

SMS is a restricted authenticator (NIST 800-63B §5.1.3.3); an app offers this one beside
it. What authenticator apps expect: HMAC-SHA-1, 6 digits, a 30 s step, a base32 secret of
20 random bytes, enrolled by scanning an ``otpauth://`` URI as a QR code. The server must
read the secret again to check a code, so it is kept *sealed* (AES-GCM, never hashed):

- the key is derived from the app's ``secret`` with HKDF and a fixed label, so rotating the
  app secret makes every sealed secret unreadable (users enrol again);
- each seal has a random 96-bit nonce and binds the user id as associated data, so a
  sealed secret copied onto another account does not open there;
- a code verifies within ±1 step (clock drift), compared in constant time on bytes after an
  ASCII-only format check;
- each step verifies once per user, and a step no later than one already used is refused,
  so an observed code cannot be replayed. Checks of one user take turns: a check first
  claims ``totp-turn:{user}`` (an atomic increment with a TTL), and a check that finds the
  turn taken answers ``locked`` (retry in a second) without comparing. Inside its turn a
  check reads the last used step, compares, and records the new one, so of concurrent
  right codes, of one step or of neighbouring ones, exactly one verifies;
- wrong codes count on the account's consecutive-failure counter of ``flowengine.otp``
  (shared with SMS codes: delays after 10, disabled at 100, reset by a right code or by
  account recovery).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import re
import secrets
import struct
from typing import Any, Callable
from urllib.parse import quote, urlencode

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from flowengine.models import Secret
from flowengine.otp import OneTimeCodes, Policy, Verdict, failure_keys, reset_failures

DIGITS = 6
STEP = 30
WINDOW = 1  # steps accepted either side of now
SECRET_BYTES = 20
#: How long a secret made by setup waits for its first code.
PENDING_TTL = 600
_CODE = re.compile(r"[0-9]{6}", re.ASCII)
_SEAL_LABEL = b"flowengine totp secret v1"
_SEAL_PREFIX = "v1."
_MAX_SEALED = 200  # characters: a seal is about 80
#: How long a check may hold its user's turn: a process that dies holding it blocks no longer.
TURN_TTL = 10
#: How long the last used step is kept: past it, a code of that step is out of the window anyway.
USED_TTL = (2 * WINDOW + 2) * STEP


# --- RFC 4226 / 6238 ------------------------------------------------------------------


def new_secret() -> str:
    """A fresh base32 secret (20 bytes from ``secrets``: 32 characters, no padding)."""
    return base64.b32encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def hotp(key: bytes, counter: int, digits: int = DIGITS, digest: Any = hashlib.sha1) -> str:
    """RFC 4226: the code for ``counter`` (dynamic truncation of an HMAC), zero-padded."""
    mac = hmac.new(key, struct.pack(">Q", counter), digest).digest()
    offset = mac[-1] & 0x0F
    number = struct.unpack(">I", mac[offset : offset + 4])[0] & 0x7FFFFFFF
    return f"{number % 10**digits:0{digits}d}"


def totp(key: bytes, at: float, digits: int = DIGITS, step: int = STEP, digest: Any = hashlib.sha1) -> str:
    """RFC 6238: the code at Unix time ``at``."""
    return hotp(key, int(at // step), digits, digest)


def provisioning_uri(secret: str, account: str, issuer: str) -> str:
    """The ``otpauth://totp/Issuer:account?...`` URI an authenticator app scans as a QR code."""
    label = f"{quote(issuer, safe='')}:{quote(account, safe='')}"
    query = urlencode({"secret": secret, "issuer": issuer, "algorithm": "SHA1", "digits": DIGITS,
                       "period": STEP}, quote_via=quote)  # fmt: skip
    return f"otpauth://totp/{label}?{query}"


def _key(secret: str) -> bytes:
    return base64.b32decode(secret, casefold=True)


# --- sealing --------------------------------------------------------------------------


def _aead(app_secret: bytes) -> AESGCM:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_SEAL_LABEL).derive(app_secret)
    return AESGCM(key)


def _associated(user: str) -> bytes:
    return f"totp:{user}".encode()


def seal(app_secret: bytes, user: str, secret: str) -> str:
    """``secret`` encrypted for ``user`` under the app's secret: text to store."""
    nonce = secrets.token_bytes(12)
    box = _aead(app_secret).encrypt(nonce, secret.encode("ascii"), _associated(user))
    return _SEAL_PREFIX + base64.urlsafe_b64encode(nonce + box).decode("ascii")


def unseal(app_secret: bytes, user: str, sealed: Any) -> str | None:
    """The secret ``seal`` sealed for this user and app secret (as text, or as a ``secret``
    field read sealed); None for anything else."""
    if isinstance(sealed, Secret):
        sealed = sealed.reveal()
    if not isinstance(sealed, str) or not sealed.startswith(_SEAL_PREFIX) or len(sealed) > _MAX_SEALED:
        return None
    try:
        raw = base64.urlsafe_b64decode(sealed[len(_SEAL_PREFIX) :].encode("ascii"))
        return _aead(app_secret).decrypt(raw[:12], raw[12:], _associated(user)).decode("ascii")
    except (ValueError, binascii.Error, InvalidTag, UnicodeError):
        return None


# --- checking -------------------------------------------------------------------------


class Authenticator:
    """Enrol and check authenticator-app codes, keeping all state in ``cache``."""

    def __init__(self, cache: Any, secret: bytes, clock: Callable[[], float], policy: Policy = Policy()) -> None:
        self.cache = cache
        self.secret = secret
        self.clock = clock
        self.policy = policy
        self._account = OneTimeCodes(cache, secret, clock)  # the per-account failure counter

    async def setup(self, user: str, account: str, issuer: str) -> dict[str, Any]:
        """A new secret, kept sealed for ``user`` until confirmed: ``{uri, secret}`` to show once."""
        secret = new_secret()
        await self.cache.set(_pending_key(user), seal(self.secret, user, secret), ttl=PENDING_TTL)
        return {"uri": provisioning_uri(secret, account, issuer), "secret": secret}

    async def confirm(self, user: str, code: Any) -> tuple[Verdict, str | None]:
        """Check the first code of the pending secret; when verified, also its seal to store.

        ``expired`` when nothing is pending (never set up, confirmed already, or too late).
        """
        sealed = await self.cache.get(_pending_key(user))
        secret = unseal(self.secret, user, sealed)
        if secret is None:
            return Verdict("expired"), None
        verdict = await self._check(user, secret, code)
        if verdict.outcome == "verified" and await self.cache.take(_pending_key(user)) is None:
            return Verdict("expired"), None  # a concurrent confirm took it
        return verdict, sealed if verdict.outcome == "verified" else None

    async def verify(self, user: str, code: Any, sealed: Any) -> Verdict:
        """Check ``code`` against the secret sealed for ``user``; an unreadable seal never verifies."""
        secret = unseal(self.secret, user, sealed)
        if secret is None:
            return Verdict("invalid")
        return await self._check(user, secret, code)

    async def _check(self, user: str, secret: str, code: Any) -> Verdict:
        if await self.cache.increment(_turn_key(user), ttl=TURN_TTL) != 1:
            return Verdict("locked", retry_after=1)  # another check of this user is running
        try:
            return await self._check_in_turn(user, secret, code)
        finally:
            await self.cache.delete(_turn_key(user))

    async def _check_in_turn(self, user: str, secret: str, code: Any) -> Verdict:
        _, wait = await self._account.take_turn(user, self.policy)
        if wait is not None:
            return Verdict("locked", retry_after=None if math.isinf(wait) else max(1, math.ceil(wait)))
        step = _matching_step(_key(secret), code, self.clock())
        last = await self.cache.get(_used_key(user))
        if step is None or (isinstance(last, int) and step <= last):
            await self._account.count_failure(user, self.policy)
            failures = await self.cache.get(failure_keys(user)[0])
            left = self.policy.delay_after - (failures if isinstance(failures, int) else 0)
            return Verdict("invalid", attempts_left=max(0, left))
        await self.cache.set(_used_key(user), step, ttl=USED_TTL)  # a value, not a counter: SET is right
        await reset_failures(self.cache, user)
        return Verdict("verified")


def _matching_step(key: bytes, code: Any, now: float) -> int | None:
    """The step within ±WINDOW whose code is ``code``; None for no match or a malformed code."""
    if isinstance(code, int) and not isinstance(code, bool) and 0 <= code < 10**DIGITS:
        code = f"{code:0{DIGITS}d}"  # a JSON number loses leading zeros
    if not isinstance(code, str) or not _CODE.fullmatch(code):
        return None  # non-ASCII digits, emoji, megabytes: a wrong guess, never a crash
    given, found = code.encode("ascii"), None
    current = int(now // STEP)
    for step in range(current - WINDOW, current + WINDOW + 1):  # compare all: no early exit
        if hmac.compare_digest(hotp(key, step).encode("ascii"), given):
            found = step
    return found


def _pending_key(user: str) -> str:
    return f"totp-pending:{user}"


def _used_key(user: str) -> str:
    """The last step a code of ``user`` verified with."""
    return f"totp-used:{user}"


def _turn_key(user: str) -> str:
    return f"totp-turn:{user}"
