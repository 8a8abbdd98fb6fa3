"""The reference app (tutorial 3) over HTTP: the two-factor story, and its hardening.

Each test serves a fresh copy of the repository's app (``two_factor_harness``): codes travel
by SMS through the real ``twilio`` SDK to a local fake of Twilio's Messages API, which
records what it was asked to send; a test reads each code from there, as a user reads their
phone. The security tests run on the in-process cache and on real Redis.

(The same story through the official ``altogic`` npm client is ``test_altogic_client.py``.)
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from typing import Any

import bcrypt
import httpx
import pytest
from two_factor_harness import (
    FOREIGN_PHONE, OTHER_PHONE, PHONE, TWILIO_FROM, TwoFactorApp, User, contains_code, on_both_caches,
)  # fmt: skip
from two_factor_harness import cache_kind, fake_twilio, two_factor_app  # noqa: F401 (fixtures)

from flowengine.otp import OneTimeCodes

pytestmark = pytest.mark.anyio


def error_of(response: httpx.Response) -> tuple[int, str]:
    """(status, code) of an error answer, after checking the Altogic error shape."""
    items = response.json()["errors"]
    assert len(items) == 1 and {"origin", "code", "message"} <= set(items[0]), items
    return response.status_code, items[0]["code"]


def another_code(code: str) -> str:
    return f"{(int(code) + 1) % 1_000_000:06d}"


# --- the tutorial's story -------------------------------------------------------------------------


async def test_the_tutorial_story_signs_in_with_an_sms_code(two_factor_app: TwoFactorApp) -> None:
    app = two_factor_app
    user = await app.verified_user()
    # 1. Set the phone number: a code goes by SMS, through Twilio's API.
    answer = await app.set_phone(user, PHONE)
    assert answer.status_code == 200, answer.text
    assert set(answer.json()) >= {"challengeId", "expiresIn"} and answer.json()["expiresIn"] == 300
    [sent] = app.twilio.requests
    assert (sent["form"]["To"], sent["form"]["From"]) == (PHONE, TWILIO_FROM)
    assert sent["auth"] == (app.twilio.account_sid, app.twilio.auth_token)
    # 2-3. The code from the SMS verifies the phone; the answer is the updated user.
    code = app.code_sent_to(PHONE)
    assert not contains_code(answer.text, code)
    verified = await app.verify_phone(user, code, PHONE)
    assert verified.status_code == 200, verified.text
    assert verified.json()["_id"] == user.id
    assert (verified.json()["phone"], verified.json()["phoneVerified"]) == (PHONE, True)
    # 4. Two-factor sign-in on, through the data API as Toggle2FA.js does it.
    toggled = await app.update_user(user, {"twoFactorAuth": True})
    assert toggled.status_code == 200, toggled.text
    assert toggled.json()["twoFactorAuth"] is True
    # 5. Sign in: the password is right, so a code goes by SMS and there is no session yet.
    challenged = await app.sign_in(user.email)
    assert challenged.status_code == 200, challenged.text
    assert "user" not in challenged.json() and "session" not in challenged.json()
    assert challenged.json()["phone"] == PHONE and challenged.json()["challengeId"]
    assert len(app.texts_to(PHONE)) == 2
    # 6-7. The code, with the phone number the answer named: {session, found}.
    code = app.code_sent_to(PHONE)
    assert not contains_code(challenged.text, code)
    done = await app.verify_sign_in(code, challenged.json()["phone"])
    assert done.status_code == 200, done.text
    assert done.json()["found"]["_id"] == user.id and done.json()["session"]["userId"] == user.id
    me = await app.me(User(user.email, user.id, done.json()["session"]["token"]))
    assert me.status_code == 200 and me.json()["_id"] == user.id
    # Two-factor sign-in off again: the password alone signs in.
    assert (await app.update_user(user, {"twoFactorAuth": False})).json()["twoFactorAuth"] is False
    direct = await app.sign_in(user.email)
    assert direct.status_code == 200 and direct.json()["user"]["_id"] == user.id
    assert len(app.texts_to(PHONE)) == 2


async def test_without_two_factor_sign_in_answers_user_and_session(two_factor_app: TwoFactorApp) -> None:
    app = two_factor_app
    user = await app.verified_user()
    answer = await app.sign_in(user.email)
    assert answer.status_code == 200, answer.text
    assert answer.json()["user"]["_id"] == user.id and answer.json()["user"]["twoFactorAuth"] is False
    assert "$2" not in answer.text and answer.json()["user"].get("password") is None  # never a hash
    me = await app.me(User(user.email, user.id, answer.json()["session"]["token"]))
    assert me.status_code == 200 and me.json()["_id"] == user.id
    assert app.twilio.requests == []


async def test_two_factor_cannot_be_turned_on_without_a_verified_phone(two_factor_app: TwoFactorApp) -> None:
    app = two_factor_app
    user = await app.verified_user()
    refused = await app.update_user(user, {"twoFactorAuth": True})
    assert error_of(refused) == (400, "validation_error")
    assert refused.json()["errors"][0]["details"]["field"] == "twoFactorAuth"
    assert (await app.me(user)).json()["twoFactorAuth"] is False
    # A phone set but not yet verified is not enough either.
    assert (await app.set_phone(user, PHONE)).status_code == 200
    assert error_of(await app.update_user(user, {"twoFactorAuth": True})) == (400, "validation_error")
    assert (await app.sign_in(user.email)).json()["session"]["token"]


async def test_another_users_object_cannot_be_toggled(two_factor_app: TwoFactorApp) -> None:
    app = two_factor_app
    owner = await app.verified_user("ann")
    await app.with_phone(owner)
    stranger = await app.verified_user("bob")
    refused = await app.update_user(stranger, {"twoFactorAuth": True}, id=owner.id)
    assert error_of(refused) == (403, "not_owner")
    assert (await app.me(owner)).json()["twoFactorAuth"] is False


async def test_the_phone_fields_cannot_be_written_through_the_data_api(two_factor_app: TwoFactorApp) -> None:
    app = two_factor_app
    user = await app.verified_user()
    refused = await app.update_user(user, {"phone": PHONE, "phoneVerified": True, "twoFactorAuth": True})
    assert refused.status_code == 400
    fields = {item["details"]["field"] for item in refused.json()["errors"]}
    assert {"phone", "phoneVerified"} <= fields
    me = (await app.me(user)).json()
    assert (me.get("phone"), me["phoneVerified"], me["twoFactorAuth"]) == (None, False, False)


async def test_verify_phone_stores_the_number_the_code_was_sent_to(two_factor_app: TwoFactorApp) -> None:
    app = two_factor_app
    user = await app.verified_user()
    assert (await app.set_phone(user, PHONE)).status_code == 200
    verified = await app.verify_phone(user, app.code_sent_to(PHONE), OTHER_PHONE)
    assert verified.status_code == 200, verified.text
    assert (verified.json()["phone"], verified.json()["phoneVerified"]) == (PHONE, True)
    assert (await app.me(user)).json()["phone"] == PHONE


async def test_another_users_challenge_does_not_verify_a_phone(two_factor_app: TwoFactorApp) -> None:
    app = two_factor_app
    owner, other = await app.verified_user("ann"), await app.verified_user("bob")
    challenge = (await app.set_phone(owner, PHONE)).json()["challengeId"]
    code = app.code_sent_to(PHONE)
    taken = await app.verify_phone(other, code, PHONE, challengeId=challenge)
    assert error_of(taken) == (400, "code_expired")
    assert (await app.me(other)).json()["phoneVerified"] is False
    assert (await app.verify_phone(owner, code, PHONE)).json()["phone"] == PHONE


# --- hardening: guesses, single use, purpose, binding -----------------------------------------------


@on_both_caches
async def test_a_thousand_wrong_codes_get_five_evaluations(two_factor_app: TwoFactorApp,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    app = two_factor_app
    user = await app.two_factor_user()
    challenge = (await app.sign_in(user.email)).json()["challengeId"]
    code = app.code_sent_to(PHONE)
    evaluated = count_comparisons(monkeypatch)
    answers = []
    # Whoever has the password has the challenge, and may guess from many addresses: the
    # per-address rate limit is not what stops them.
    for guess in range(1000):
        wrong = another_code(code) if guess == 0 else f"{(int(code) + 7 * guess) % 1_000_000:06d}"
        ip = f"198.51.{guess // 250}.{guess % 250}"
        answers.append(await app.verify_sign_in(wrong, PHONE, ip=ip, challengeId=challenge))
    assert len(evaluated) == 5
    assert [error_of(a) for a in answers[:5]] == [(400, "invalid_code")] * 5
    assert [a.json()["errors"][0]["details"]["attemptsLeft"] for a in answers[:5]] == [4, 3, 2, 1, 0]
    assert {error_of(a) for a in answers[5:]} <= {(400, "code_expired"), (429, "too_many_attempts")}
    assert await app.session_count(user) == 1  # the one from signing up


@on_both_caches
async def test_the_right_code_after_the_lock_is_rejected(two_factor_app: TwoFactorApp) -> None:
    app = two_factor_app
    user = await app.verified_user()
    assert (await app.set_phone(user, PHONE)).status_code == 200
    code = app.code_sent_to(PHONE)
    for _ in range(5):
        assert error_of(await app.verify_phone(user, another_code(code), PHONE)) == (400, "invalid_code")
    late = await app.verify_phone(user, code, PHONE)
    assert error_of(late) in {(400, "code_expired"), (429, "too_many_attempts")}
    assert (await app.me(user)).json()["phoneVerified"] is False


@on_both_caches
async def test_fifty_concurrent_right_codes_make_exactly_one_session(two_factor_app: TwoFactorApp) -> None:
    app = two_factor_app
    user = await app.two_factor_user()
    challenge = (await app.sign_in(user.email)).json()["challengeId"]
    code = app.code_sent_to(PHONE)
    before = await app.session_count(user)
    sent = (app.verify_sign_in(code, PHONE, ip=f"198.51.100.{i}", challengeId=challenge) for i in range(50))
    answers = await asyncio.gather(*sent)
    won = [a for a in answers if a.status_code == 200]
    assert len(won) == 1, [a.text for a in answers]
    assert {error_of(a) for a in answers if a.status_code != 200} <= {(400, "code_expired"), (429, "too_many_attempts")}
    assert await app.session_count(user) == before + 1


@on_both_caches
async def test_a_sign_in_code_is_rejected_by_verify_phone(two_factor_app: TwoFactorApp) -> None:
    app = two_factor_app
    user = await app.two_factor_user(PHONE)
    assert (await app.set_phone(user, OTHER_PHONE)).status_code == 200  # a phone change is pending
    challenged = await app.sign_in(user.email)
    sign_in_code = app.code_sent_to(PHONE)
    assert error_of(await app.verify_phone(user, sign_in_code, PHONE)) == (400, "invalid_code")
    named = await app.verify_phone(user, sign_in_code, PHONE, challengeId=challenged.json()["challengeId"])
    assert error_of(named) == (400, "code_expired")
    assert (await app.me(user)).json()["phone"] == PHONE
    # It was a good code, for what it was issued for.
    assert (await app.verify_sign_in(sign_in_code, PHONE)).status_code == 200


@on_both_caches
async def test_verify_sign_in_without_a_password_step_is_rejected(two_factor_app: TwoFactorApp) -> None:
    app = two_factor_app
    user = await app.two_factor_user(PHONE)
    guessed = await app.verify_sign_in(f"{secrets.randbelow(10**6):06d}", PHONE)
    assert error_of(guessed) == (400, "code_expired")
    assert error_of(await app.sign_in(user.email, "wrong password")) == (401, "invalid_credentials")
    assert len(app.texts_to(PHONE)) == 1  # only set-phone's: a wrong password texts nothing
    # A code in hand for another purpose (here a phone change) signs nobody in.
    await app.forget_spacing()
    assert (await app.set_phone(user, PHONE)).status_code == 200
    phone_code = app.code_sent_to(PHONE)
    assert error_of(await app.verify_sign_in(phone_code, PHONE)) == (400, "code_expired")
    assert await app.session_count(user) == 1


@on_both_caches
async def test_a_stranger_with_the_phone_number_cannot_burn_a_sign_in_code(two_factor_app: TwoFactorApp) -> None:
    """The tutorial's {code, phoneNumber} must find only the challenge of whoever passed the
    password step; else anyone who knows the number can spend its guesses and lock the account."""
    app = two_factor_app
    user = await app.two_factor_user(PHONE)
    assert (await app.sign_in(user.email)).status_code == 200
    code = app.code_sent_to(PHONE)
    for _ in range(5):
        stranger = await app.verify_sign_in(another_code(code), PHONE, ip="192.0.2.66")
        assert stranger.status_code in (400, 429)
    done = await app.verify_sign_in(code, PHONE)
    assert done.status_code == 200, done.text


@on_both_caches
async def test_a_new_code_does_not_reset_the_account_failure_count(two_factor_app: TwoFactorApp) -> None:
    app = two_factor_app
    user = await app.verified_user()
    for _ in range(2):
        assert (await app.set_phone(user, PHONE)).status_code == 200
        code = app.code_sent_to(PHONE)
        for _ in range(5):
            assert error_of(await app.verify_phone(user, another_code(code), PHONE)) == (400, "invalid_code")
        await app.forget_spacing()
    assert (await app.set_phone(user, PHONE)).status_code == 200
    assert error_of(await app.verify_phone(user, app.code_sent_to(PHONE), PHONE)) == (429, "too_many_attempts")


@on_both_caches
async def test_a_code_expires_after_300_seconds(two_factor_app: TwoFactorApp) -> None:
    app = two_factor_app
    user = await app.verified_user()
    assert (await app.set_phone(user, PHONE)).status_code == 200
    app.clock.advance(301)
    assert error_of(await app.verify_phone(user, app.code_sent_to(PHONE), PHONE)) == (400, "code_expired")
    assert (await app.set_phone(user, OTHER_PHONE)).status_code == 200
    app.clock.advance(299)
    assert (await app.verify_phone(user, app.code_sent_to(OTHER_PHONE), OTHER_PHONE)).status_code == 200
    assert (await app.update_user(user, {"twoFactorAuth": True})).status_code == 200
    assert (await app.sign_in(user.email)).status_code == 200
    app.clock.advance(301)
    assert error_of(await app.verify_sign_in(app.code_sent_to(OTHER_PHONE), OTHER_PHONE)) == (400, "code_expired")


# --- hardening: sends --------------------------------------------------------------------------------


@on_both_caches
async def test_a_second_code_within_a_minute_is_refused_with_retry_after(two_factor_app: TwoFactorApp) -> None:
    app = two_factor_app
    user = await app.verified_user()
    assert (await app.set_phone(user, PHONE)).status_code == 200
    again = await app.set_phone(user, PHONE)
    assert error_of(again) == (429, "too_many_requests")
    assert 1 <= int(again.headers["Retry-After"]) <= 60
    assert len(app.texts_to(PHONE)) == 1
    # Spacing is per number and purpose: another number, or signing in right after, is fine.
    assert (await app.set_phone(user, OTHER_PHONE)).status_code == 200
    await app.verify_phone(user, app.code_sent_to(OTHER_PHONE), OTHER_PHONE)
    assert (await app.update_user(user, {"twoFactorAuth": True})).status_code == 200
    assert (await app.sign_in(user.email)).status_code == 200
    assert len(app.twilio.requests) == 3


@on_both_caches
async def test_at_most_five_codes_per_number_and_purpose_in_ten_minutes(two_factor_app: TwoFactorApp) -> None:
    app = two_factor_app
    user = await app.two_factor_user(PHONE)  # phone-verify code 1
    for _ in range(5):  # sign-in codes 1 to 5, each a minute after the last
        await app.forget_spacing()
        assert (await app.sign_in(user.email)).status_code == 200
    await app.forget_spacing()
    sixth = await app.sign_in(user.email)
    assert error_of(sixth) == (429, "too_many_requests") and int(sixth.headers["Retry-After"]) >= 1
    stranger = await app.verified_user("bob")  # the cap is the number's, whoever asks
    for _ in range(4):  # phone-verify codes 2 to 5
        await app.forget_spacing()
        assert (await app.set_phone(stranger, PHONE)).status_code == 200
    await app.forget_spacing()
    assert error_of(await app.set_phone(stranger, PHONE)) == (429, "too_many_requests")
    assert len(app.texts_to(PHONE)) == 10


@on_both_caches
async def test_a_stranger_texting_my_number_does_not_use_up_my_sign_in_codes(two_factor_app: TwoFactorApp) -> None:
    app = two_factor_app
    owner = await app.two_factor_user(PHONE)
    stranger = await app.verified_user("mallory")
    for _ in range(5):  # set-phone with the owner's number until its cap says no
        await app.forget_spacing()
        await app.set_phone(stranger, PHONE)
    await app.forget_spacing()
    assert error_of(await app.set_phone(stranger, PHONE)) == (429, "too_many_requests")
    assert (await app.sign_in(owner.email)).status_code == 200
    signed_in = await app.verify_sign_in(app.code_sent_to(PHONE), PHONE)
    assert signed_in.status_code == 200 and signed_in.json()["session"]["token"]


async def test_no_sms_to_a_country_outside_the_allowed_ones(two_factor_app: TwoFactorApp) -> None:
    app = two_factor_app
    user = await app.verified_user()
    refused = await app.set_phone(user, FOREIGN_PHONE)
    assert 400 <= refused.status_code < 500
    assert error_of(refused) == (400, "sms_country_not_allowed")
    assert app.twilio.requests == []


async def test_a_refused_number_leaves_the_pending_code_alone(two_factor_app: TwoFactorApp) -> None:
    """A bad input gets its 4xx and nothing stored: no challenge, no send counted."""
    app = two_factor_app
    user = await app.verified_user()
    assert (await app.set_phone(user, PHONE)).status_code == 200
    assert error_of(await app.set_phone(user, FOREIGN_PHONE)) == (400, "sms_country_not_allowed")
    verified = await app.verify_phone(user, app.code_sent_to(PHONE), PHONE)
    assert verified.status_code == 200, verified.text
    assert [key for key, _ in await app.cache_entries() if FOREIGN_PHONE in key] == []


@on_both_caches
async def test_a_spent_sms_budget_refuses_before_any_code_is_made(two_factor_app: TwoFactorApp) -> None:
    app = two_factor_app
    user = await app.verified_user()
    for _ in range(30):  # what 30 texts this hour have counted (Twilio's default budget)
        await app.services.cache.increment("sms-budget", ttl=3600)
    refused = await app.set_phone(user, PHONE)
    assert error_of(refused) == (429, "too_many_requests") and 3500 < int(refused.headers["Retry-After"]) <= 3600
    assert app.twilio.requests == []
    assert [key for key, _ in await app.cache_entries() if PHONE in key] == []  # no challenge, no send counted


# --- hardening: nothing leaks -------------------------------------------------------------------------


@on_both_caches
async def test_the_code_never_appears_in_logs_or_cache_values(two_factor_app: TwoFactorApp,
                                                              caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    app = two_factor_app
    caplog.set_level(logging.DEBUG)
    user = await app.verified_user()
    assert (await app.set_phone(user, PHONE)).status_code == 200
    assert (await app.verify_phone(user, another_code(app.code_sent_to(PHONE)), PHONE)).status_code == 400
    await app.verify_phone(user, app.code_sent_to(PHONE), PHONE)
    await app.update_user(user, {"twoFactorAuth": True})
    assert (await app.sign_in(user.email)).status_code == 200
    pending = app.code_sent_to(PHONE)  # still in the cache, as its challenge
    entries = await app.cache_entries()
    assert any(key.startswith("otp:sign-in:") for key, _ in entries)
    assert (await app.verify_sign_in(pending, PHONE)).status_code == 200
    codes = app.codes_sent()
    assert len(codes) == 2
    logged = "\n".join(record.getMessage() for record in caplog.records)
    kept = "\n".join(f"{key} {value!r}" for key, value in [*entries, *await app.cache_entries()])
    for code in codes:
        assert not contains_code(logged, code), f"the code {code} was logged"
        assert not contains_code(kept, code), f"the code {code} is in the cache"


async def test_a_wrong_password_and_an_unknown_email_answer_alike(two_factor_app: TwoFactorApp) -> None:
    app = two_factor_app
    user = await app.two_factor_user()
    wrong = await app.sign_in(user.email, "not the password")
    unknown = await app.sign_in(f"nobody-{secrets.token_hex(4)}@example.com")
    assert error_of(wrong) == (401, "invalid_credentials")
    assert (unknown.status_code, unknown.content) == (wrong.status_code, wrong.content)
    assert len(app.twilio.requests) == 1  # set-phone's only


async def test_an_unknown_email_costs_a_bcrypt_check_like_a_wrong_password(two_factor_app: TwoFactorApp,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """No timing tell either: a quick 401 would say that no account has this email."""
    app = two_factor_app
    user = await app.verified_user()
    checks = count_bcrypt_checks(monkeypatch)
    assert (await app.sign_in(user.email, "not the password")).status_code == 401
    assert len(checks) == 1
    assert (await app.sign_in(f"nobody-{secrets.token_hex(4)}@example.com", "not the password")).status_code == 401
    assert len(checks) == 2, "signing in with an unknown email checked no password"


async def test_an_unverified_email_gets_the_same_generic_401(two_factor_app: TwoFactorApp) -> None:
    app = two_factor_app
    email, _ = await app.signed_up()
    unverified = await app.sign_in(email)
    wrong = await app.sign_in(email, "not the password")
    assert error_of(unverified) == (401, "invalid_credentials")
    assert (unverified.status_code, unverified.content) == (wrong.status_code, wrong.content)


def count_comparisons(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Each code the one-time codes compare with a challenge's digest, from now on."""
    compared: list[Any] = []
    matches = OneTimeCodes._matches

    def counted(self: OneTimeCodes, record: dict[str, Any], code: Any) -> bool:
        compared.append(code)
        return matches(self, record, code)

    monkeypatch.setattr(OneTimeCodes, "_matches", counted)
    return compared


def count_bcrypt_checks(monkeypatch: pytest.MonkeyPatch) -> list[None]:
    """One item per bcrypt password check made from now on (in whichever thread)."""
    checks: list[None] = []
    checkpw = bcrypt.checkpw

    def counted(password: bytes, hashed: bytes) -> bool:
        checks.append(None)
        return checkpw(password, hashed)

    monkeypatch.setattr(bcrypt, "checkpw", counted)
    return checks
