"""One-time codes (SMS, email): issued to a challenge, checked with strict limits.

A *challenge* is what a flow issues when it needs a code confirmed: it belongs to one
purpose (``sign-in``, ``phone-verify``, ...), one user and one destination, and lives in
the shared cache so that every server process sees it. The design fixes what a naive
"cache the code under the phone number" flow gets wrong:

- codes are 6+ digits from ``secrets`` (leading zeros allowed) and expire (default 300 s);
- only an HMAC of the code is stored, and it is compared in constant time on bytes;
- each challenge allows 5 guesses, counted atomically before the comparison, then is locked;
- each account counts its consecutive wrong codes, whatever the challenge: a new code does not
  reset the count, only a right code (or account recovery: ``reset_failures``) does. After 10,
  one guess is compared per delay (30 s, doubling, at most an hour; the others answer
  ``locked`` and are not counted); at 100 the account's codes are disabled (NIST 800-63B);
- success is claimed atomically, so of many concurrent right answers exactly one wins;
- the user and the destination come from the challenge, never from the request;
- sends to one number are spaced (60 s) and capped (5 per 10 min), per purpose;
- when fewer than half the codes of a purpose issued in an hour are verified (codes going to
  numbers nobody reads: SMS pumping), one warning is logged for that hour.

A challenge is found by its id (the strong form a client can send back), or through the
latest challenge of a purpose for a *handle* (the phone number, or the user id), which is
how the tutorial's wire shape (``{code, phoneNumber}``) keeps working.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import re
import secrets
from dataclasses import dataclass
from typing import Any, Callable

from flowengine import limits

log = logging.getLogger("flowengine.otp")

_DIGITS = re.compile(r"[0-9]{4,10}", re.ASCII)

#: The conversion alert: judged only from this many codes of a purpose in an hour (fewer is noise).
ALERT_AFTER = 20
HOUR = 3600.0


@dataclass(frozen=True)
class Policy:
    """The limits of one kind of code; the defaults follow NIST 800-63B and OWASP."""

    digits: int = 6
    ttl: float = 300.0
    attempts: int = 5
    spacing: float = 60.0
    sends_per_window: int = 5
    send_window: float = 600.0
    delay_after: int = 10  # consecutive wrong codes of one account before guesses wait
    first_delay: float = 30.0  # then the wait doubles with each wrong code ...
    max_delay: float = 3600.0  # ... up to this
    disable_after: int = 100  # consecutive wrong codes that disable the account's codes
    failures_kept: float = 30 * 86400.0  # a count is forgotten this long after its last failure

    def delay(self, failures: int) -> float:
        """Seconds the next guess waits after ``failures`` consecutive wrong codes."""
        if failures < self.delay_after:
            return 0.0
        return min(self.first_delay * 2.0 ** min(failures - self.delay_after, 64), self.max_delay)


@dataclass(frozen=True)
class Verdict:
    """What checking a code found: ``verified``, ``invalid``, ``expired`` or ``locked``."""

    outcome: str
    challenge: dict[str, Any] | None = None
    attempts_left: int = 0
    #: ``locked`` while the account's guesses wait: whole seconds until the next is compared.
    retry_after: int | None = None

    def failure(self) -> tuple[str, Any]:
        """A check node's output and value when the code did not verify."""
        if self.outcome == "invalid":
            return "invalid", {"attemptsLeft": self.attempts_left}
        if self.outcome == "locked" and self.retry_after is not None:
            return "locked", {"retryAfter": self.retry_after}
        return self.outcome, None


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
        await self._watch_conversion(purpose)
        return {"challengeId": challenge_id, "code": code, "expiresIn": int(policy.ttl), "destination": destination}

    async def check(
        self, purpose: str, code: Any, policy: Policy, challenge_id: Any = None, handle: Any = None, owner: Any = None
    ) -> Verdict:
        """Check ``code`` against the challenge named by id, else the latest one for ``handle``.

        The challenge carries the limits it was issued with; ``policy`` adds the per-account
        ones. With ``owner``, a challenge of another user is treated as missing.
        """
        record = await self._find(purpose, challenge_id, handle)
        if record is None or record["expires"] <= self.clock():
            return Verdict("expired")
        if owner is not None and record["user"] != str(owner):
            return Verdict("expired")
        user = record["user"]
        turn, wait = await self.take_turn(user, policy)
        if wait is not None:  # not compared, and not a guess of this challenge
            return Verdict("locked", record, retry_after=None if math.isinf(wait) else max(1, math.ceil(wait)))
        tries = await self.cache.increment(f"otp-tries:{record['id']}", ttl=record["ttl"])
        if tries > record["attempts"]:
            if turn is not None:
                await self.cache.delete(turn)  # nothing was compared: the account's turn is still open
            return Verdict("locked", record)  # kept until it expires, so it keeps saying so
        if not self._matches(record, code):
            await self.count_failure(user, policy)
            return Verdict("invalid", record, record["attempts"] - tries)
        if await self.cache.increment(f"otp-claimed:{record['id']}", ttl=record["ttl"]) != 1:
            return Verdict("expired")  # a concurrent request used this code first
        await self.cache.delete(_challenge_key(purpose, record["id"]), *failure_keys(user))
        await self.cache.increment(self._hourly("verified", purpose), ttl=HOUR)
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

    async def take_turn(self, user: str, policy: Policy) -> tuple[str | None, float | None]:
        """May a guess for ``user`` be compared now: ``(turn, None)`` if so, else ``(None, seconds)``.

        Past ``delay_after`` failures, the last failure's record names a *turn* that one guess
        claims once its delay is over; a concurrent guess finds it taken. ``turn`` is its key
        (None below ``delay_after``), ``seconds`` is inf once the codes are disabled.
        """
        failures_key, last_key = failure_keys(user)
        failures = await self.cache.get(failures_key)  # read before the record: see count_failure
        failures = failures if isinstance(failures, int) else 0
        if failures >= policy.disable_after:
            return None, math.inf
        if failures < policy.delay_after:
            return None, None
        last = await self.cache.get(last_key)
        last = last if isinstance(last, dict) else {"at": 0.0, "turn": f"{user}:{failures}"}  # lost: wait no more
        left = last["at"] + policy.delay(failures) - self.clock()
        if left > 0:
            return None, left
        turn = f"otp-turn:{last['turn']}"
        if await self.cache.increment(turn, ttl=60) != 1:
            return None, policy.delay(failures + 1)  # another guess is being compared right now
        return turn, None

    async def count_failure(self, user: str, policy: Policy) -> None:
        """Count a wrong code of ``user``; both keys live ``failures_kept`` past the last failure.

        The count goes up before the record of this failure (its time and a new turn) is
        written, so a guess that reads the new count with the old record finds the old turn taken.
        """
        failures_key, last_key = failure_keys(user)
        failures = await self.cache.increment(failures_key, ttl=policy.failures_kept)
        await self.cache.expire(failures_key, policy.failures_kept)
        await self.cache.set(last_key, {"at": self.clock(), "turn": secrets.token_urlsafe(12)}, ttl=policy.failures_kept)
        if failures == policy.disable_after:
            log.warning("one-time codes disabled for user %s after %d wrong codes in a row; "
                        "a password reset enables them again", user, failures)  # fmt: skip

    async def _throttle_sends(self, purpose: str, destination: str, policy: Policy) -> None:
        # Both per purpose: a stranger asking set-phone to text someone's number must not use
        # up that owner's sign-in codes. One number still gets at most sends_per_window codes
        # per purpose the app has (two in the reference app) in a window.
        await limits.hit(self.cache, f"otp-spacing:{purpose}:{destination}", 1, policy.spacing,
                         "Wait before asking for another code")  # fmt: skip
        await limits.hit(self.cache, f"otp-sends:{purpose}:{destination}", policy.sends_per_window,
                         policy.send_window, "Too many codes were sent to this number")  # fmt: skip

    async def _watch_conversion(self, purpose: str) -> None:
        """Count an issued code; warn once an hour when under half of ALERT_AFTER or more were verified."""
        issued = await self.cache.increment(self._hourly("issued", purpose), ttl=HOUR)
        if issued < ALERT_AFTER:
            return
        verified = await self.cache.get(self._hourly("verified", purpose))
        verified = verified if isinstance(verified, int) else 0
        if 2 * verified < issued and await self.cache.increment(self._hourly("alerted", purpose), ttl=HOUR) == 1:
            log.warning("one-time codes for %s: %d of the %d issued this hour were verified (under 50 %%; SMS pumping?)",
                        purpose, verified, issued)  # fmt: skip

    def _hourly(self, counter: str, purpose: str) -> str:
        """The key of a count over the current clock hour (the same hour for every process)."""
        return f"otp-{counter}:{purpose}:{int(self.clock() // HOUR)}"

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


async def reset_failures(cache: Any, user: str) -> None:
    """Account recovery: forget ``user``'s wrong codes, so their codes work again at once."""
    await cache.delete(*failure_keys(user))


def failure_keys(user: str) -> tuple[str, str]:
    """The consecutive-failure count of an account, and the record of its last failure."""
    return f"otp-failures:{user}", f"otp-last-failure:{user}"


def _challenge_key(purpose: str, challenge_id: str) -> str:
    return f"otp:{purpose}:{challenge_id}"


def _latest_key(purpose: str, handle: str) -> str:
    return f"otp-latest:{purpose}:{handle}"

