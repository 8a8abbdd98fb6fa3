"""Authenticator-app codes (TOTP) on both cache backends: RFC vectors, window, replay, sealing, nodes."""

from __future__ import annotations

import asyncio
import base64
import textwrap
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

from flowengine.context import Services
from flowengine.interpreter import run_flow
from flowengine.models import Secret
from flowengine.otp import Policy
from flowengine.spec.app import load_app
from flowengine.totp import STEP, TURN_TTL, Authenticator, hotp, new_secret, provisioning_uri, seal, totp, unseal
from flowengine.types import Reply

pytestmark = pytest.mark.anyio

APP_SECRET = b"k" * 32
RFC_KEY = b"12345678901234567890"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000_005.0  # 5 s into a step

    def __call__(self) -> float:
        return self.now


class Overlapping:
    """A cache on which ``parties`` checks surely overlap: a claim of a user's turn returns only
    once all of them have claimed. (The in-process cache never yields, so checks on it run one
    after another; on Redis one may finish while another still opens its connection.)"""

    def __init__(self, cache, parties: int) -> None:
        self._cache, self._parties, self._claimed = cache, parties, 0
        self._all = asyncio.Event()

    def __getattr__(self, name: str):
        return getattr(self._cache, name)

    async def increment(self, key: str, *args, **kwargs) -> int:
        count = await self._cache.increment(key, *args, **kwargs)
        if key.startswith("totp-turn:"):
            self._claimed += 1
            if self._claimed >= self._parties:
                self._all.set()
            await self._all.wait()
        return count


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def auth(cache, clock) -> Authenticator:
    return Authenticator(cache, APP_SECRET, clock)


def code_at(secret: str, at: float) -> str:
    return totp(base64.b32decode(secret), at)


async def enrolled(auth: Authenticator, clock: Clock, user: str = "u1") -> tuple[str, str]:
    """A confirmed secret of ``user`` and its seal; the clock moves past the confirming step."""
    secret = (await auth.setup(user, "ada@example.com", "Example"))["secret"]
    verdict, sealed = await auth.confirm(user, code_at(secret, clock.now))
    assert verdict.outcome == "verified"
    clock.now += 3 * STEP
    return secret, sealed


# --- the algorithm ----------------------------------------------------------------------


@pytest.mark.parametrize("at, expected", [
    (59, "94287082"), (1111111109, "07081804"), (1111111111, "14050471"),
    (1234567890, "89005924"), (2000000000, "69279037"), (20000000000, "65353130"),
])  # fmt: skip
def test_rfc_6238_appendix_b_sha1_vectors(at, expected):
    assert totp(RFC_KEY, at, digits=8) == expected


def test_rfc_4226_appendix_d_first_values():
    assert [hotp(RFC_KEY, c) for c in range(3)] == ["755224", "287082", "359152"]


def test_a_secret_is_20_random_bytes_in_base32():
    secret = new_secret()
    assert len(base64.b32decode(secret)) == 20 and secret != new_secret()


def test_the_uri_quotes_the_label_and_names_the_issuer():
    uri = provisioning_uri("JBSWY3DPEHPK3PXP", "ada@example.com", "Acme & Co: Sign-in")
    parts = urlparse(uri)
    assert (parts.scheme, parts.netloc) == ("otpauth", "totp")
    assert parts.path == "/Acme%20%26%20Co%3A%20Sign-in:ada%40example.com"
    query = parse_qs(parts.query)
    assert query["secret"] == ["JBSWY3DPEHPK3PXP"] and query["issuer"] == ["Acme & Co: Sign-in"]
    assert (query["digits"], query["period"], query["algorithm"]) == (["6"], ["30"], ["SHA1"])


# --- sealing ----------------------------------------------------------------------------


def test_a_sealed_secret_opens_only_for_its_user_and_app_secret():
    sealed = seal(APP_SECRET, "u1", "JBSWY3DPEHPK3PXP")
    assert "JBSWY3DPEHPK3PXP" not in sealed and sealed != seal(APP_SECRET, "u1", "JBSWY3DPEHPK3PXP")
    assert unseal(APP_SECRET, "u1", sealed) == "JBSWY3DPEHPK3PXP"
    assert unseal(APP_SECRET, "u2", sealed) is None
    assert unseal(b"another app secret", "u1", sealed) is None
    tampered = sealed[:-2] + ("A" if sealed[-2] != "A" else "B") + sealed[-1]
    for bad in (tampered, None, 42, "", "v1.", "v1.!!!", "v1." + "A" * 10_000):
        assert unseal(APP_SECRET, "u1", bad) is None


# --- enrolment and checking -------------------------------------------------------------


async def test_confirm_checks_the_pending_secret_once(auth, clock):
    secret = (await auth.setup("u1", "ada@example.com", "Example"))["secret"]
    verdict, sealed = await auth.confirm("u1", "000000" if code_at(secret, clock.now) != "000000" else "111111")
    assert verdict.outcome == "invalid" and sealed is None
    verdict, sealed = await auth.confirm("u1", code_at(secret, clock.now))
    assert verdict.outcome == "verified" and unseal(APP_SECRET, "u1", sealed) == secret
    assert (await auth.confirm("u1", code_at(secret, clock.now)))[0].outcome == "expired"


async def test_codes_of_the_steps_either_side_pass_two_away_fail(auth, clock):
    secret, sealed = await enrolled(auth, clock)
    now = clock.now
    for offset in (-2, 2):
        assert (await auth.verify("u1", code_at(secret, now + offset * STEP), sealed)).outcome == "invalid"
    for later, offset in enumerate((-1, 0, 1), start=1):
        clock.now = now + 10 * later * STEP  # a fresh step each time: no replay in the way
        assert (await auth.verify("u1", code_at(secret, clock.now + offset * STEP), sealed)).outcome == "verified"


async def test_a_used_code_and_an_older_step_are_refused(auth, clock):
    secret, sealed = await enrolled(auth, clock)
    code = code_at(secret, clock.now)
    assert (await auth.verify("u1", code, sealed)).outcome == "verified"
    assert (await auth.verify("u1", code, sealed)).outcome == "invalid"
    assert (await auth.verify("u1", code_at(secret, clock.now - STEP), sealed)).outcome == "invalid"
    clock.now += STEP
    assert (await auth.verify("u1", code, sealed)).outcome == "invalid"  # still in the window, still used


async def test_of_20_concurrent_right_codes_exactly_one_verifies(auth, clock):
    secret, sealed = await enrolled(auth, clock)
    code = code_at(secret, clock.now)
    verdicts = await asyncio.gather(*(auth.verify("u1", code, sealed) for _ in range(20)))
    assert [v.outcome for v in verdicts].count("verified") == 1


@pytest.mark.parametrize("steps", [(0, 1), (1, 0), (0, 0)])
async def test_of_concurrent_codes_of_neighbouring_steps_exactly_one_verifies(auth, cache, clock, steps):
    secret, sealed = await enrolled(auth, clock)
    racing = Authenticator(Overlapping(cache, parties=2), APP_SECRET, clock)
    codes = [code_at(secret, clock.now + step * STEP) for step in steps]
    verdicts = await asyncio.gather(*(racing.verify("u1", code, sealed) for code in codes))
    assert sorted(v.outcome for v in verdicts) == ["locked", "verified"]
    assert [v.retry_after for v in verdicts if v.outcome == "locked"] == [1]
    clock.now += 2 * STEP  # the turn is free again: the next step verifies
    assert (await auth.verify("u1", code_at(secret, clock.now), sealed)).outcome == "verified"


async def test_a_later_step_verifies_after_an_earlier_one_but_not_before(auth, clock):
    secret, sealed = await enrolled(auth, clock)
    assert (await auth.verify("u1", code_at(secret, clock.now), sealed)).outcome == "verified"
    assert (await auth.verify("u1", code_at(secret, clock.now + STEP), sealed)).outcome == "verified"
    assert (await auth.verify("u1", code_at(secret, clock.now), sealed)).outcome == "invalid"


async def test_a_check_waits_for_the_users_turn_which_expires(auth, clock, cache):
    secret, sealed = await enrolled(auth, clock)
    await cache.increment("totp-turn:u1", ttl=TURN_TTL)  # a check in another process, or one that died
    held = await auth.verify("u1", code_at(secret, clock.now), sealed)
    assert (held.outcome, held.retry_after) == ("locked", 1)
    assert 0 < await cache.ttl("totp-turn:u1") <= TURN_TTL
    assert await cache.get("otp-failures:u1") is None  # nothing was compared, nothing counted
    await cache.delete("totp-turn:u1")
    assert (await auth.verify("u1", code_at(secret, clock.now), sealed)).outcome == "verified"
    assert not await cache.exists("totp-turn:u1")  # each check gives its turn back


async def test_a_secret_field_read_sealed_verifies(auth, clock):
    secret, sealed = await enrolled(auth, clock)
    assert (await auth.verify("u1", code_at(secret, clock.now), Secret(sealed))).outcome == "verified"
    assert (await auth.verify("u2", code_at(secret, clock.now + STEP), Secret(sealed))).outcome == "invalid"


async def test_a_step_used_by_one_user_still_verifies_for_another(auth, clock):
    secret, sealed = await enrolled(auth, clock, "u1")
    other, other_sealed = await enrolled(auth, clock, "u2")
    assert (await auth.verify("u1", code_at(secret, clock.now), sealed)).outcome == "verified"
    assert (await auth.verify("u2", code_at(other, clock.now), other_sealed)).outcome == "verified"
    assert (await auth.verify("u2", code_at(secret, clock.now), sealed)).outcome == "invalid"  # not u2's seal


@pytest.mark.parametrize("code", [None, "", "12345", "1234567", "١٢٣٤٥٦", "12345é", "😀" * 6, "1" * 1_000_000,
                                  True, 1.5, [], {}, -1, 10**6])  # fmt: skip
async def test_malformed_codes_are_wrong_guesses_never_errors(auth, clock, code):
    secret, sealed = await enrolled(auth, clock)
    verdict = await auth.verify("u1", code, sealed)
    assert verdict.outcome == "invalid" and verdict.attempts_left == Policy().delay_after - 1


async def test_a_number_code_keeps_its_leading_zeros(auth, clock, monkeypatch):
    secret, sealed = await enrolled(auth, clock)
    monkeypatch.setattr("flowengine.totp.hotp", lambda key, step: "000042")
    assert (await auth.verify("u1", 42, sealed)).outcome == "verified"


async def test_wrong_codes_count_on_the_accounts_failure_counter(auth, clock, cache):
    secret, sealed = await enrolled(auth, clock)
    wrong = "000000" if code_at(secret, clock.now) != "000000" else "111111"
    for left in range(9, -1, -1):
        assert (await auth.verify("u1", wrong, sealed)).attempts_left == left
    locked = await auth.verify("u1", code_at(secret, clock.now), sealed)
    assert locked.outcome == "locked" and locked.retry_after == 30  # not compared, even if right
    clock.now += 30
    assert (await auth.verify("u1", code_at(secret, clock.now), sealed)).outcome == "verified"
    assert await cache.get("otp-failures:u1") is None  # a right code resets the count


async def test_a_used_step_key_expires_and_counters_keep_their_ttl(auth, clock, cache):
    secret, sealed = await enrolled(auth, clock)
    await auth.verify("u1", code_at(secret, clock.now), sealed)
    await auth.verify("u1", "abc", sealed)
    used, _ = await cache.keys("totp-used:*")
    assert used and all(0 < ttl <= 4 * STEP for ttl in [await cache.ttl(key) for key in used])
    assert 0 < await cache.ttl("otp-failures:u1")


# --- the nodes in a flow ----------------------------------------------------------------

FLOWS = {
    "setup": """
        service: setup
        start: make
        nodes:
          make: {type: totp-setup, user: params.query.user, account: "{{ params.query.email }}", issuer: Example, next: done}
          done: {type: return-success, body: make}
        """,
    "confirm": """
        service: confirm
        start: check
        nodes:
          check:
            type: totp-confirm
            user: params.query.user
            code: params.query.code
            verified: ok
            invalid: wrong
            expired: wrong
            locked: wrong
          ok: {type: return-success, body: check}
          wrong: {type: return-error, status: 400, code: wrong_code, message: Wrong code}
        """,
    "verify": """
        service: verify
        start: check
        nodes:
          check:
            type: totp-verify
            user: params.query.user
            code: params.query.code
            sealed: params.query.sealed
            verified: ok
            invalid: wrong
            locked: wrong
          ok: {type: return-success, body: check}
          wrong: {type: return-error, status: 400, code: wrong_code, message: Wrong code, details: check}
        """,
}


@pytest.fixture
def flows(tmp_path: Path):
    (tmp_path / "flows").mkdir()
    (tmp_path / "app.yaml").write_text("name: t\n")
    for name, text in FLOWS.items():
        (tmp_path / "flows" / f"{name}.yaml").write_text(textwrap.dedent(text))
    return load_app(tmp_path).flows


async def call(flows, services: Services, name: str, **query):
    scope = {"params": {"query": query, "path": {}, "headers": {}, "body": None},
             "session": None, "user": None, "env": {}}  # fmt: skip
    result = await run_flow(flows[name], services, scope)
    return result if isinstance(result, Reply) else Reply(200, result)


async def test_setup_confirm_verify_through_flows(flows, cache, clock):
    services = Services(cache=cache, clock=clock, secret=APP_SECRET)
    made = (await call(flows, services, "setup", user="u1", email="ada@example.com")).body
    assert made["uri"].startswith("otpauth://totp/Example:ada%40example.com?secret=" + made["secret"])
    assert (await call(flows, services, "confirm", user="u1", code="abc")).status == 400
    confirmed = (await call(flows, services, "confirm", user="u1", code=code_at(made["secret"], clock.now))).body
    assert confirmed["user"] == "u1" and unseal(APP_SECRET, "u1", confirmed["sealed"]) == made["secret"]
    clock.now += 3 * STEP
    code = code_at(made["secret"], clock.now)
    assert (await call(flows, services, "verify", user="u1", code=code, sealed=confirmed["sealed"])).body == {"user": "u1"}
    again = await call(flows, services, "verify", user="u1", code=code, sealed=confirmed["sealed"])
    assert again.status == 400
    moved = await call(flows, services, "verify", user="u2", code=code_at(made["secret"], clock.now + STEP),
                       sealed=confirmed["sealed"])  # fmt: skip
    assert moved.status == 400
