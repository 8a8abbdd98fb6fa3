"""One-time codes on both cache backends: limits, single use, binding, throttling, expiry."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from flowengine.errors import FlowError
from flowengine.otp import OneTimeCodes, Policy, reset_failures

pytestmark = pytest.mark.anyio

PHONE = "+14155552671"
OTHER = "+14155550199"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


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


async def fresh(codes: OneTimeCodes, cache, user: str = "u1") -> dict:
    """A new sign-in code for PHONE, as if the send spacing and cap were over (their TTLs run on real time)."""
    await cache.delete(f"otp-spacing:sign-in:{PHONE}", f"otp-sends:sign-in:{PHONE}")
    return await issue(codes, user=user)


def wrong(challenge: dict) -> str:
    return f"{(int(challenge['code']) + 1) % 10**6:06d}"


async def check(codes: OneTimeCodes, code: str):
    return await codes.check("sign-in", code, Policy(), handle=PHONE)


async def ten_failures_across_resends(codes: OneTimeCodes, cache) -> None:
    for _ in range(2):
        challenge = await fresh(codes, cache)
        assert [(await check(codes, wrong(challenge))).outcome for _ in range(5)] == ["invalid"] * 5


def test_the_delay_doubles_from_30_seconds_to_an_hour():
    assert [Policy().delay(n) for n in (0, 9, 10, 11, 12, 16, 17, 99)] == [0, 0, 30, 60, 120, 1920, 3600, 3600]


async def test_a_new_code_does_not_reset_the_accounts_failures_and_the_tenth_makes_guesses_wait(codes, cache, clock):
    """Security O5: the count survives resends; a wrong guess while waiting is neither compared nor counted."""
    await ten_failures_across_resends(codes, cache)
    challenge = await fresh(codes, cache)
    for _ in range(7):  # the right code too: nothing is compared while the account waits
        verdict = await check(codes, challenge["code"])
        assert (verdict.outcome, verdict.retry_after) == ("locked", 30)
    clock.now += 29
    assert (await check(codes, wrong(challenge))).retry_after == 1
    clock.now += 1
    verdict = await check(codes, wrong(challenge))  # compared: the challenge's first guess
    assert (verdict.outcome, verdict.attempts_left) == ("invalid", 4)
    verdict = await check(codes, challenge["code"])  # the 11th failure doubled the delay
    assert (verdict.outcome, verdict.retry_after) == ("locked", 60)
    clock.now += 59
    assert (await check(codes, challenge["code"])).retry_after == 1
    clock.now += 1
    assert (await check(codes, challenge["code"])).outcome == "verified"


async def test_a_right_code_resets_the_accounts_failures(codes, cache, clock):
    await ten_failures_across_resends(codes, cache)
    clock.now += 30
    assert (await check(codes, (await fresh(codes, cache))["code"])).outcome == "verified"
    assert await cache.get("otp-failures:u1") is None
    for guesses in (5, 4):  # 9 more wrong codes are all compared at once: the count started over
        challenge = await fresh(codes, cache)
        assert [(await check(codes, wrong(challenge))).outcome for _ in range(guesses)] == ["invalid"] * guesses
    assert (await check(codes, challenge["code"])).outcome == "verified"


async def test_of_concurrent_guesses_after_the_delay_one_is_compared(codes, cache, clock):
    await ten_failures_across_resends(codes, cache)
    challenge = await fresh(codes, cache)
    clock.now += 30
    verdicts = await asyncio.gather(*(check(codes, wrong(challenge)) for _ in range(20)))
    assert sorted(v.outcome for v in verdicts) == ["invalid"] + ["locked"] * 19
    assert {v.retry_after for v in verdicts if v.outcome == "locked"} <= {30, 60}  # 30: read as the count rose
    assert await cache.get("otp-failures:u1") == 11


async def test_guessing_on_a_used_up_code_after_the_delay_leaves_the_accounts_turn_open(codes, cache, clock):
    await ten_failures_across_resends(codes, cache)
    used_up = await fresh(codes, cache)
    await cache.set(f"otp-tries:{used_up['challengeId']}", 5)
    clock.now += 30
    assert (await check(codes, used_up["code"])).outcome == "locked"
    assert (await check(codes, (await fresh(codes, cache))["code"])).outcome == "verified"


async def test_a_hundred_failures_in_a_row_disable_the_accounts_codes_until_a_reset(codes, cache, clock):
    for _ in range(100):  # an hour apart, each on a new code: every guess is compared
        clock.now += 3600
        assert (await check(codes, wrong(await fresh(codes, cache)))).outcome == "invalid"
    for _ in range(3):  # waiting and new codes do not help, and nothing is compared
        clock.now += 86400
        verdict = await check(codes, (await fresh(codes, cache))["code"])
        assert (verdict.outcome, verdict.retry_after) == ("locked", None)
    await reset_failures(cache, "u1")  # account recovery: a password reset calls this
    challenge = await fresh(codes, cache)
    assert (await check(codes, challenge["code"])).outcome == "verified"


async def test_the_count_is_kept_30_days_after_the_last_failure(codes, cache):
    challenge = await fresh(codes, cache)
    await check(codes, wrong(challenge))
    await cache.expire("otp-failures:u1", 60)
    await check(codes, wrong(challenge))
    assert 30 * 86400 - 60 < await cache.ttl("otp-failures:u1") <= 30 * 86400
    assert 30 * 86400 - 60 < await cache.ttl("otp-last-failure:u1") <= 30 * 86400


async def test_each_account_counts_its_own_failures(codes, cache):
    await ten_failures_across_resends(codes, cache)
    other = await codes.issue("sign-in", "u2", OTHER, OTHER, Policy())
    assert (await codes.check("sign-in", other["code"], Policy(), handle=OTHER)).outcome == "verified"


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


async def test_an_hour_with_fewer_than_half_the_codes_verified_logs_one_warning(codes, clock, caplog):
    """Security O10: codes sent to numbers nobody reads (SMS pumping) show as a low verify/send ratio."""
    caplog.set_level(logging.WARNING, logger="flowengine.otp")
    for i in range(20):  # half of 20 verified: not below 50 %
        challenge = await issue(codes, to=f"+141555501{i:02d}")
        if i % 2 == 0:
            assert (await codes.check("sign-in", challenge["code"], Policy(), challenge_id=challenge["challengeId"])).outcome == "verified"
    await issue(codes, purpose="phone-verify")  # another purpose counts apart
    assert caplog.records == []
    for i in range(20, 23):  # 10 of 21, 22, 23: one warning for the hour, not one per code
        await issue(codes, to=f"+141555501{i:02d}")
    [warning] = caplog.records
    assert warning.levelno == logging.WARNING
    assert warning.getMessage() == (
        "one-time codes for sign-in: 10 of the 21 issued this hour were verified (under 50 %; SMS pumping?)")
    clock.now += 3600  # a new hour counts afresh
    await issue(codes, to="+14155550199")
    assert len(caplog.records) == 1


async def test_a_few_unverified_codes_are_no_alarm(codes, caplog):
    caplog.set_level(logging.WARNING, logger="flowengine.otp")
    for i in range(19):  # fewer than 20 codes in the hour: too few to judge
        await issue(codes, to=f"+141555501{i:02d}")
    assert caplog.records == []
