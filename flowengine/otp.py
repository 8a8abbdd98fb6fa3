"""One-time codes (SMS, email): issued to a challenge, checked with strict limits.

A *challenge* is what a flow issues when it needs a code confirmed: it belongs to one
purpose (``sign-in``, ``phone-verify``, ...), one user and one destination, and lives in
the shared cache so that every server process sees it. The design fixes what a naive
"cache the code under the phone number" flow gets wrong:

- codes are 6+ digits from ``secrets`` (leading zeros allowed) and expire (default 300 s);
- only an HMAC of the code is stored, and it is compared in constant time on bytes;
- each challenge allows 5 guesses, counted atomically before the comparison, then is locked;
- a per-user failure counter is not reset by asking for a new code;
- success is claimed atomically, so of many concurrent right answers exactly one wins;
- the user and the destination come from the challenge, never from the request;
- sends to one number are spaced (60 s) and capped (5 per 10 min), per purpose.

A challenge is found by its id (the strong form a client can send back), or through the
latest challenge of a purpose for a *handle* (the phone number, or the user id), which is
how the tutorial's wire shape (``{code, phoneNumber}``) keeps working.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
from dataclasses import dataclass
from typing import Any, Callable

from flowengine import limits

log = logging.getLogger("flowengine.otp")

_DIGITS = re.compile(r"[0-9]{4,10}", re.ASCII)


@dataclass(frozen=True)
class Policy:
    """The limits of one kind of code; the defaults follow NIST 800-63B and OWASP."""

    digits: int = 6
    ttl: float = 300.0
    attempts: int = 5
    spacing: float = 60.0
    sends_per_window: int = 5
    send_window: float = 600.0
    user_failures: int = 10
    failure_window: float = 3600.0


@dataclass(frozen=True)
class Verdict:
    """What checking a code found: ``verified``, ``invalid``, ``expired`` or ``locked``."""

    outcome: str
    challenge: dict[str, Any] | None = None
    attempts_left: int = 0


class OneTimeCodes:
    """Issue and check codes, keeping all state in ``cache``."""

    def __init__(self, cache: Any, secret: bytes, clock: Callable[[], float]) -> None:
        self.cache = cache
        self.secret = secret
        self.clock = clock

    async def issue(self, purpose: str, user: str, destination: str, handle: str, policy: Policy) -> dict[str, Any]:
        """A new challenge and its code (the code is returned once and stored only as an HMAC)."""
        await self._throttle_sends(purpose, destination, policy)
        challenge_id = secrets.token_urlsafe(18)
        code = f"{secrets.randbelow(10**policy.digits):0{policy.digits}d}"
        expires = self.clock() + policy.ttl
        record = {"id": challenge_id, "purpose": purpose, "user": user, "destination": destination,
                  "digest": self._digest(challenge_id, code), "expires": expires,
                  "digits": policy.digits, "attempts": policy.attempts, "ttl": policy.ttl}  # fmt: skip
        await self.cache.set(_challenge_key(purpose, challenge_id), record, ttl=policy.ttl)
        await self.cache.set(_latest_key(purpose, handle), challenge_id, ttl=policy.ttl)
        return {"challengeId": challenge_id, "code": code, "expiresIn": int(policy.ttl), "destination": destination}

    async def check(
        self, purpose: str, code: Any, policy: Policy, challenge_id: Any = None, handle: Any = None, owner: Any = None
    ) -> Verdict:
        """Check ``code`` against the challenge named by id, else the latest one for ``handle``.

        The challenge carries the limits it was issued with; ``policy`` adds the per-user ones.
        With ``owner``, a challenge of another user is treated as missing.
        """
        record = await self._find(purpose, challenge_id, handle)
        if record is None or record["expires"] <= self.clock():
            return Verdict("expired")
        if owner is not None and record["user"] != str(owner):
            return Verdict("expired")
        key = _challenge_key(purpose, record["id"])
        if await self._user_locked(record["user"], policy):
            return Verdict("locked", record)
        tries = await self.cache.increment(f"otp-tries:{record['id']}", ttl=record["ttl"])
        if tries > record["attempts"]:
            return Verdict("locked", record)  # kept until it expires, so it keeps saying so
        if not self._matches(record, code):
            await self.cache.increment(f"otp-failures:{record['user']}", ttl=policy.failure_window)
            return Verdict("invalid", record, record["attempts"] - tries)
        if await self.cache.increment(f"otp-claimed:{record['id']}", ttl=record["ttl"]) != 1:
            return Verdict("expired")  # a concurrent request used this code first
        await self.cache.delete(key, f"otp-failures:{record['user']}")
        return Verdict("verified", record)

    async def _find(self, purpose: str, challenge_id: Any, handle: Any) -> dict[str, Any] | None:
        if not isinstance(challenge_id, str) or not challenge_id:
            if not isinstance(handle, str) or not handle:
                return None
            challenge_id = await self.cache.get(_latest_key(purpose, handle))
            if not isinstance(challenge_id, str):
                return None
        record = await self.cache.get(_challenge_key(purpose, challenge_id))
        return record if isinstance(record, dict) and record.get("purpose") == purpose else None

    async def _user_locked(self, user: str, policy: Policy) -> bool:
        failures = await self.cache.get(f"otp-failures:{user}")
        return isinstance(failures, int) and failures >= policy.user_failures

    async def _throttle_sends(self, purpose: str, destination: str, policy: Policy) -> None:
        # Both per purpose: a stranger asking set-phone to text someone's number must not use
        # up that owner's sign-in codes. One number still gets at most sends_per_window codes
        # per purpose the app has (two in the reference app) in a window.
        await limits.hit(self.cache, f"otp-spacing:{purpose}:{destination}", 1, policy.spacing,
                         "Wait before asking for another code")  # fmt: skip
        await limits.hit(self.cache, f"otp-sends:{purpose}:{destination}", policy.sends_per_window,
                         policy.send_window, "Too many codes were sent to this number")  # fmt: skip

    def _digest(self, challenge_id: str, code: str) -> str:
        return hmac.new(self.secret, f"{challenge_id}:{code}".encode(), hashlib.sha256).hexdigest()

    def _matches(self, record: dict[str, Any], code: Any) -> bool:
        if isinstance(code, int) and not isinstance(code, bool) and 0 <= code < 10 ** record["digits"]:
            code = f"{code:0{record['digits']}d}"  # a JSON number loses leading zeros
        text = code
        if not isinstance(text, str) or not _DIGITS.fullmatch(text):
            return False  # non-ASCII digits, emoji, megabytes: a wrong guess, never a crash
        expected = record["digest"].encode()
        return hmac.compare_digest(self._digest(record["id"], text).encode(), expected)


def _challenge_key(purpose: str, challenge_id: str) -> str:
    return f"otp:{purpose}:{challenge_id}"


def _latest_key(purpose: str, handle: str) -> str:
    return f"otp-latest:{purpose}:{handle}"

