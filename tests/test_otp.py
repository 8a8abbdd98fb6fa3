"""One-time codes on both cache backends: limits, single use, binding, throttling, expiry."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest

from flowengine.cache import MemoryCache, open_cache
from flowengine.errors import FlowError
from flowengine.otp import OneTimeCodes, Policy

pytestmark = pytest.mark.anyio

PHONE = "+14155552671"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["memory", "redis"])
async def cache(request):
    if request.param == "memory":
        backend = MemoryCache()
    else:
        backend = open_cache(request.getfixturevalue("redis_url"), f"otp-test-{uuid.uuid4().hex}")
    yield backend
    if request.param == "redis":
        keys, _ = await backend.keys("*", count=1000)
        if keys:
            await backend.delete(*keys)
    await backend.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def codes(cache, clock) -> OneTimeCodes:
    return OneTimeCodes(cache, b"k" * 32, clock)


async def issue(codes: OneTimeCodes, purpose: str = "sign-in", user: str = "u1", to: str = PHONE, **policy):
    return await codes.issue(purpose, user, to, to, Policy(**policy))


async def test_codes_are_six_ascii_digits_from_a_csprng_with_leading_zeros(codes, monkeypatch):
    drawn = []
    real = __import__("secrets").randbelow

    def spy(n):
        drawn.append(n)
        return 42 if len(drawn) == 1 else real(n)

    monkeypatch.setattr("flowengine.otp.secrets.randbelow", spy)
    challenge = await issue(codes)
    assert drawn == [10**6] and challenge["code"] == "000042"


async def test_the_right_code_verifies_once_and_names_the_user_and_number_of_the_challenge(codes):
    challenge = await issue(codes, user="alice")
    verdict = await codes.check("sign-in", challenge["code"], Policy(), handle=PHONE)
    assert verdict.outcome == "verified"
    assert (verdict.challenge["user"], verdict.challenge["destination"]) == ("alice", PHONE)
    again = await codes.check("sign-in", challenge["code"], Policy(), handle=PHONE)
    assert again.outcome == "expired"


async def test_a_number_code_keeps_its_leading_zeros(codes, monkeypatch):
    monkeypatch.setattr("flowengine.otp.secrets.randbelow", lambda n: 4321)
    challenge = await issue(codes)
    assert challenge["code"] == "004321"
    assert (await codes.check("sign-in", 4321, Policy(), challenge_id=challenge["challengeId"])).outcome == "verified"


async def test_a_thousand_wrong_guesses_are_five_evaluations_then_locked(codes):
    challenge = await issue(codes)
    wrong = "999999" if challenge["code"] != "999999" else "111111"
    outcomes = [(await codes.check("sign-in", wrong, Policy(), handle=PHONE)).outcome for _ in range(1000)]
    assert outcomes[:5] == ["invalid"] * 5
    assert set(outcomes[5:]) <= {"locked", "expired"}
    assert (await codes.check("sign-in", challenge["code"], Policy(), handle=PHONE)).outcome in {"locked", "expired"}


async def test_concurrent_wrong_guesses_are_counted_atomically(codes):
    challenge = await issue(codes)
    wrong = "999999" if challenge["code"] != "999999" else "111111"
    verdicts = await asyncio.gather(*(codes.check("sign-in", wrong, Policy(), handle=PHONE) for _ in range(50)))
    assert sum(v.outcome == "invalid" for v in verdicts) == 5


async def test_fifty_concurrent_right_codes_verify_exactly_once(codes):
    challenge = await issue(codes)
    verdicts = await asyncio.gather(
        *(codes.check("sign-in", challenge["code"], Policy(), handle=PHONE) for _ in range(50))
    )
    assert sum(v.outcome == "verified" for v in verdicts) == 1


async def test_a_code_never_verifies_another_purpose(codes):
    challenge = await issue(codes, purpose="sign-in")
    verdict = await codes.check("phone-verify", challenge["code"], Policy(), challenge_id=challenge["challengeId"])
    assert verdict.outcome == "expired"
    assert (await codes.check("phone-verify", challenge["code"], Policy(), handle=PHONE)).outcome == "expired"


async def test_without_a_challenge_nothing_verifies(codes):
    assert (await codes.check("sign-in", "123456", Policy(), handle=PHONE)).outcome == "expired"
    assert (await codes.check("sign-in", "123456", Policy())).outcome == "expired"


async def test_a_code_works_just_before_its_lifetime_and_not_after(codes, clock):
    first = await issue(codes, to="+14155550001")
    clock.now += 299
    assert (await codes.check("sign-in", first["code"], Policy(), handle="+14155550001")).outcome == "verified"
    second = await issue(codes, to="+14155550002")
    clock.now += 301
    assert (await codes.check("sign-in", second["code"], Policy(), handle="+14155550002")).outcome == "expired"


async def test_sends_are_spaced_and_capped_per_number_and_purpose(codes, cache):
    await issue(codes, purpose="phone-verify")
    with pytest.raises(FlowError) as spaced:
        await issue(codes, purpose="phone-verify")
    assert spaced.value.status == 429 and 1 <= spaced.value.details["retryAfter"] <= 60
    await issue(codes, purpose="sign-in")  # verifying a phone then signing in right away works
    for _ in range(4):  # a minute apart each: 2nd to 5th phone-verify code
        await cache.delete(f"otp-spacing:phone-verify:{PHONE}")
        await issue(codes, purpose="phone-verify")
    await cache.delete(f"otp-spacing:phone-verify:{PHONE}")
    with pytest.raises(FlowError) as capped:
        await issue(codes, purpose="phone-verify")
    assert capped.value.status == 429 and "Too many codes" in capped.value.message
    assert 60 < capped.value.details["retryAfter"] <= 600
    await cache.delete(f"otp-spacing:sign-in:{PHONE}")
    await issue(codes, purpose="sign-in")  # phone-verify's cap leaves sign-in codes alone


async def test_a_new_code_does_not_reset_the_users_failure_count(codes, cache):
    policy = Policy(user_failures=10)
    for round_ in range(2):
        await cache.delete(f"otp-spacing:sign-in:{PHONE}", f"otp-sends:sign-in:{PHONE}")
        challenge = await issue(codes)
        wrong = "999999" if challenge["code"] != "999999" else "111111"
        for _ in range(5):
            await codes.check("sign-in", wrong, policy, handle=PHONE)
    await cache.delete(f"otp-spacing:sign-in:{PHONE}", f"otp-sends:sign-in:{PHONE}")
    fresh = await issue(codes)
    assert (await codes.check("sign-in", fresh["code"], policy, handle=PHONE)).outcome == "locked"


async def test_hostile_codes_are_wrong_guesses_not_errors(codes):
    await issue(codes)
    hostile = ["١٢٣٤٥٦", "12345é", "🙂" * 6, "1" * 1_000_000, None, True, ["123456"], {"a": 1}, -5]
    verdicts = [(await codes.check("sign-in", guess, Policy(), handle=PHONE)).outcome for guess in hostile]
    assert verdicts[:5] == ["invalid"] * 5  # then the code is burned
    assert set(verdicts[5:]) <= {"expired", "locked"}


async def test_the_cache_never_holds_the_code(codes, cache):
    challenge = await issue(codes)
    keys, _ = await cache.keys("*", count=1000)
    stored = json.dumps([await cache.get(key) for key in keys])
    assert challenge["code"] not in stored


async def test_a_challenge_of_another_user_is_treated_as_missing(codes):
    challenge = await issue(codes, purpose="phone-verify", user="alice")
    by_id = await codes.check("phone-verify", challenge["code"], Policy(), challenge_id=challenge["challengeId"], owner="mallory")
    assert by_id.outcome == "expired"
    mine = await codes.check("phone-verify", challenge["code"], Policy(), challenge_id=challenge["challengeId"], owner="alice")
    assert mine.outcome == "verified"
