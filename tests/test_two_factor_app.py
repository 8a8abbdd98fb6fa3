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
import re
import secrets
from typing import Any

import bcrypt
import httpx
import pytest
from two_factor_harness import (
    AUTH, FOREIGN_PHONE, OTHER_PHONE, PASSWORD, PHONE, TWILIO_FROM, TwoFactorApp, User, contains_code, on_both_caches,
)  # fmt: skip
from two_factor_harness import cache_kind, fake_twilio, two_factor_app  # noqa: F401 (fixtures)

from flowengine.otp import OneTimeCodes
from flowengine.runtime import configure_logging

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


async def test_the_built_in_sign_ins_cannot_skip_the_second_factor(two_factor_app: TwoFactorApp) -> None:
    """auth.second_factor: a 2FA account signs in only through the app's own two-factor flow."""
    app = two_factor_app
    user = await app.two_factor_user()
    texts = len(app.texts_to(PHONE))
    password_only = await app.call("POST", f"{AUTH}/signin-email", json={"email": user.email, "password": PASSWORD})
    assert error_of(password_only) == (403, "second_factor_required")
    assert (await app.call("POST", f"{AUTH}/send-magic?email={user.email}")).status_code == 200
    await app.services.auth.mailer.drain()  # the link leaves in the background
    link = re.search(r"http://testserver/_auth/magic\?key=[^\s<>\"')]+", await app.latest_email(user.email))
    assert link, "no magic link in the email"
    outcome = await app.open_link(link[0])
    granted = await app.call("GET", f"{AUTH}/grant?key={outcome['access_token']}")
    assert error_of(granted) == (403, "second_factor_required")
    assert len(app.texts_to(PHONE)) == texts  # nothing was texted, no session was made
    assert len(await app.services.auth.sessions.of_user(user.id)) == 1  # only the one from the setup
    challenged = await app.sign_in(user.email)  # the app's flow: password, then the SMS code
    done = await app.verify_sign_in(app.code_sent_to(PHONE), challenged.json()["phone"])
    assert done.status_code == 200, done.text


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
    waiting = await app.verify_phone(user, app.code_sent_to(PHONE), PHONE)  # 10 in a row: the account waits 30 s
    assert error_of(waiting) == (429, "too_many_attempts")
    assert waiting.headers["Retry-After"] == "30" and waiting.json()["errors"][0]["details"] == {"retryAfter": 30}
    app.clock.advance(30)
    assert (await app.verify_phone(user, app.code_sent_to(PHONE), PHONE)).status_code == 200


@on_both_caches
async def test_a_hundred_wrong_codes_in_a_row_turn_sms_codes_off_until_a_password_reset(two_factor_app: TwoFactorApp) -> None:
    """Security O5. The count is put at 100 directly: 100 wrong guesses would take days of delays."""
    app = two_factor_app
    user = await app.two_factor_user(PHONE)
    await app.services.cache.set(f"otp-failures:{user.id}", 100)
    assert (await app.sign_in(user.email)).status_code == 200
    refused = await app.verify_sign_in(app.code_sent_to(PHONE), PHONE)
    assert error_of(refused) == (429, "too_many_attempts") and "Retry-After" not in refused.headers
    # Account recovery: the reset link from the account's email.
    assert (await app.call("POST", f"{AUTH}/send-reset?email={user.email}")).status_code == 200
    link = re.search(r"http://testserver/_auth/reset\?key=\S+", (await app.emails_to(user.email))[-1]["text"])
    key = (await app.open_link(link[0]))["access_token"]
    reset = await app.call("POST", f"{AUTH}/reset-pwd?key={key}", json={"newPassword": "a brand new password"})
    assert reset.status_code == 200, reset.text
    await app.forget_spacing()
    assert (await app.sign_in(user.email, "a brand new password")).status_code == 200
    assert (await app.verify_sign_in(app.code_sent_to(PHONE), PHONE)).status_code == 200


@on_both_caches
async def test_a_code_expires_after_300_seconds(two_factor_app: TwoFactorApp) -> None:
    app = two_factor_app
    user = await app.verified_user()
    assert (await app.set_phone(user, PHONE)).status_code == 200
    app.clock.advance(301)
    user = await app.signed_in_again(user)  # changing the phone needs a session at most 5 minutes old
    assert error_of(await app.verify_phone(user, app.code_sent_to(PHONE), PHONE)) == (400, "code_expired")
    assert (await app.set_phone(user, OTHER_PHONE)).status_code == 200
    app.clock.advance(299)
    assert (await app.verify_phone(user, app.code_sent_to(OTHER_PHONE), OTHER_PHONE)).status_code == 200
    user = await app.signed_in_again(user)
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


def numbers(count: int) -> list[str]:
    """``count`` US mobile numbers, none of them PHONE or OTHER_PHONE."""
    return [f"+141555501{i:02d}" for i in range(count)]


async def test_one_account_gets_at_most_five_phone_codes_an_hour(two_factor_app: TwoFactorApp) -> None:
    """Security O9: an account texting number after number must not spend the app's budget."""
    app = two_factor_app
    user = await app.verified_user()
    *five, sixth = numbers(6)
    for number in five:
        assert (await app.set_phone(user, number)).status_code == 200
    refused = await app.set_phone(user, sixth)
    assert error_of(refused) == (429, "too_many_requests") and 3500 < int(refused.headers["Retry-After"]) <= 3600
    assert len(app.twilio.requests) == 5
    other = await app.verified_user("bob")  # the limit is the account's
    assert (await app.set_phone(other, sixth)).status_code == 200


async def test_one_address_gets_at_most_ten_phone_codes_an_hour(two_factor_app: TwoFactorApp) -> None:
    app = two_factor_app
    users = [await app.verified_user(tag) for tag in ("ann", "bob", "cat")]
    unused = iter(numbers(12))
    for user in users[:2]:
        for _ in range(5):
            assert (await app.set_phone(user, next(unused))).status_code == 200
    refused = await app.set_phone(users[2], next(unused))
    assert error_of(refused) == (429, "too_many_requests") and 3500 < int(refused.headers["Retry-After"]) <= 3600
    assert len(app.twilio.requests) == 10
    elsewhere = await app.call("POST", "/users/set-phone", user=users[2], ip="198.51.100.20",
                               params={"phoneNumber": next(unused)})  # fmt: skip
    assert elsewhere.status_code == 200, elsewhere.text


async def test_one_address_gets_at_most_ten_sign_in_codes_an_hour(two_factor_app: TwoFactorApp) -> None:
    app = two_factor_app
    phones = numbers(3)
    users = [await app.two_factor_user(number, tag) for number, tag in zip(phones, ("ann", "bob", "cat"))]
    for user in users[:2]:
        for _ in range(5):  # each number's own cap is 5 codes in 10 minutes
            await app.forget_spacing()
            assert (await app.sign_in(user.email)).status_code == 200
    await app.forget_spacing()
    refused = await app.sign_in(users[2].email)
    assert error_of(refused) == (429, "too_many_requests") and 3500 < int(refused.headers["Retry-After"]) <= 3600
    assert len(app.texts_to(phones[2])) == 1  # set-phone's only
    # Only texts are counted: from the same address, a wrong password still gets its 401 and
    # an account without two-factor sign-in still signs in.
    assert error_of(await app.sign_in(users[2].email, "not the password")) == (401, "invalid_credentials")
    plain = await app.verified_user("dan")
    assert (await app.sign_in(plain.email)).json()["session"]["token"]


async def test_the_31st_code_check_from_one_address_in_5_minutes_is_refused(two_factor_app: TwoFactorApp) -> None:
    """Security A1: verify 30 / 5 min / address, on both code checks."""
    app = two_factor_app
    user = await app.verified_user()
    for _ in range(30):
        assert error_of(await app.verify_phone(user, "123456", PHONE)) == (400, "code_expired")
        assert error_of(await app.verify_sign_in("123456", PHONE)) == (400, "code_expired")
    for refused in (await app.verify_phone(user, "123456", PHONE), await app.verify_sign_in("123456", PHONE)):
        assert error_of(refused) == (429, "too_many_requests") and 1 <= int(refused.headers["Retry-After"]) <= 300
    elsewhere = await app.call("POST", "/users/verify-phone", user=user, ip="198.51.100.20",
                               json={"code": "123456", "phoneNumber": PHONE})  # fmt: skip
    assert error_of(elsewhere) == (400, "code_expired")


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


async def test_the_access_log_hides_numbers_emails_and_tokens(caplog: pytest.LogCaptureFixture,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """Security A5: the tutorial's set-phone puts the number in the query string (as does
    check-phone); a server's access log must not keep it, nor emails, passwords or tokens."""
    access = logging.getLogger("uvicorn.access")
    monkeypatch.setattr(access, "filters", [])  # the filter configure_logging adds goes with the test
    configure_logging()
    caplog.set_level(logging.INFO, logger="uvicorn.access")
    paths = {
        "/users/set-phone?phoneNumber=%2B14155552671": "/users/set-phone?phoneNumber=[redacted]",
        "/phone/check?x=1&phoneNumber=+14155552671&y=2": "/phone/check?x=1&phoneNumber=[redacted]&y=2",
        "/lookup?email=ada%40example.com&phone=%2B14155552671": "/lookup?email=[redacted]&phone=[redacted]",
        "/_auth/verify?key=secret-token": "/_auth/verify?key=[redacted]",
        "/users?password=hunter2&page=2": "/users?password=[redacted]&page=2",
    }
    for path in paths:  # as uvicorn logs a request
        access.info('%s - "%s %s HTTP/%s" %d', "203.0.113.7:50000", "POST", path, "1.1", 200)
    assert caplog.messages == [f'203.0.113.7:50000 - "POST {path} HTTP/1.1" 200' for path in paths.values()]


async def test_a_wrong_password_and_an_unknown_email_answer_alike(two_factor_app: TwoFactorApp) -> None:
    app = two_factor_app
    user = await app.two_factor_user()
    wrong = await app.sign_in(user.email, "not the password")
    unknown = await app.sign_in(f"nobody-{secrets.token_hex(4)}@example.com")
    assert error_of(wrong) == (401, "invalid_credentials")
    assert (unknown.status_code, unknown.content) == (wrong.status_code, wrong.content)
    assert len(app.twilio.requests) == 1  # set-phone's only


async def test_an_unknown_email_costs_a_bcrypt_check_like_a_wrong_password(two_factor_app: TwoFactorApp,
                                                                          checkpw_calls: list[bytes]) -> None:  # fmt: skip
    """No timing tell either: a quick 401 would say that no account has this email."""
    app = two_factor_app
    user = await app.verified_user()
    checkpw_calls.clear()
    checks = checkpw_calls  # from here on
    assert (await app.sign_in(user.email, "not the password")).status_code == 401
    assert len(checks) == 1
    assert (await app.sign_in(f"nobody-{secrets.token_hex(4)}@example.com", "not the password")).status_code == 401
    assert len(checks) == 2, "signing in with an unknown email checked no password"


@pytest.mark.parametrize("scheme", ["engine", "bare"])
@pytest.mark.parametrize("password", ["x" * 100, "é" * 50, "x" * 1000], ids=["100 B", "50 é", "1000 B"])
async def test_a_long_password_costs_one_bcrypt_check_for_known_and_unknown_emails(
    two_factor_app: TwoFactorApp, checkpw_calls: list[bytes], scheme: str, password: str
) -> None:  # fmt: skip
    """Security A3 through the sign-in flow (find-one, then ECOMPARE): a password longer than
    bcrypt reads must not make a known account answer at once while an unknown one spends a
    decoy check. ``bare``: an account hashed before the engine pre-hashed (bcrypt alone)."""
    app = two_factor_app
    store, hasher = app.services.store, app.services.store.hasher
    store.hasher = bare_bcrypt if scheme == "bare" else hasher
    user = await app.verified_user()
    store.hasher = hasher
    stored = (await app.services.auth.find_user(user.email, sealed=True))["password"]._digest
    assert stored.startswith("$2b$12$" if scheme == "bare" else "$fe1$2b$12$")
    checkpw_calls.clear()
    checks = checkpw_calls  # from here on
    known = await app.sign_in(user.email, password)
    assert len(checks) == 1, "a known account answered without a bcrypt check"
    unknown = await app.sign_in(f"nobody-{secrets.token_hex(4)}@example.com", password)
    assert len(checks) == 2
    assert (known.status_code, known.content) == (unknown.status_code, unknown.content) and known.status_code == 401


async def bare_bcrypt(plain: str) -> str:
    """A password hash as flowengine made them before ``$fe1``: bcrypt of the UTF-8 bytes alone."""
    return await asyncio.to_thread(lambda: bcrypt.hashpw(plain.encode(), bcrypt.gensalt(12)).decode())


async def test_an_unverified_email_gets_the_same_generic_401(two_factor_app: TwoFactorApp) -> None:
    app = two_factor_app
    email, _ = await app.signed_up()
    unverified = await app.sign_in(email)
    wrong = await app.sign_in(email, "not the password")
    assert error_of(unverified) == (401, "invalid_credentials")
    assert (unverified.status_code, unverified.content) == (wrong.status_code, wrong.content)


# --- hardening: a recent sign-in, notices, other sessions (security S3, S4, S6, A4) ------------------


async def test_a_session_signed_in_over_5_minutes_ago_cannot_turn_two_factor_off(two_factor_app: TwoFactorApp) -> None:
    app = two_factor_app
    user = await app.two_factor_user()  # set up right after signing in, as the tutorial's user does
    app.clock.advance(301)
    refused = await app.update_user(user, {"twoFactorAuth": False})
    assert error_of(refused) == (401, "reauth_required")
    assert refused.json()["errors"][0]["message"].startswith("Sign in again to make this change")
    assert (await app.me(user)).json()["twoFactorAuth"] is True  # the session itself still works
    challenged = await app.sign_in(user.email)
    assert "session" not in challenged.json()  # and signing in still asks for the code
    # Signing in again, code included, gives a session that may.
    signed_in = await app.verify_sign_in(app.code_sent_to(PHONE), PHONE)
    fresh = User(user.email, user.id, signed_in.json()["session"]["token"])
    assert (await app.update_user(fresh, {"twoFactorAuth": False})).json()["twoFactorAuth"] is False


async def test_a_session_signed_in_over_5_minutes_ago_cannot_change_the_phone(two_factor_app: TwoFactorApp) -> None:
    app = two_factor_app
    user = await app.verified_user()
    await app.with_phone(user, PHONE)
    app.clock.advance(301)
    assert error_of(await app.set_phone(user, OTHER_PHONE)) == (401, "reauth_required")
    assert app.texts_to(OTHER_PHONE) == []  # no code made, no text sent
    user = await app.signed_in_again(user)
    app.clock.advance(150)
    assert (await app.set_phone(user, OTHER_PHONE)).status_code == 200
    app.clock.advance(160)  # the code lives 300 s; the session was signed in 310 s ago
    code = app.code_sent_to(OTHER_PHONE)  # made under a fresh session: finishing needs no new sign-in
    verified = await app.verify_phone(user, code, OTHER_PHONE)
    assert verified.status_code == 200 and verified.json()["phone"] == OTHER_PHONE


async def test_a_new_phone_tells_the_email_and_signs_out_the_other_devices(two_factor_app: TwoFactorApp) -> None:
    app = two_factor_app
    user = await app.verified_user()
    other = await app.signed_in_again(user)  # another device
    before = len(await app.emails_to(user.email))
    await app.with_phone(user, PHONE)
    [notice] = (await app.emails_to(user.email))[before:]
    assert notice["subject"] == "A new phone number is on your Two-factor demo account"
    assert "ending in 71" in notice["text"] and PHONE not in notice["text"]  # the number itself stays off email
    assert error_of(await app.me(other)) == (401, "invalid_session_token")
    assert (await app.me(user)).status_code == 200  # the device that made the change stays signed in


async def test_two_factor_on_or_off_tells_the_email_and_signs_out_the_other_devices(two_factor_app: TwoFactorApp) -> None:
    app = two_factor_app
    user = await app.verified_user()
    await app.with_phone(user)
    other = await app.signed_in_again(user)
    before = len(await app.emails_to(user.email))
    assert (await app.update_user(user, {"twoFactorAuth": True})).status_code == 200
    [on] = (await app.emails_to(user.email))[before:]
    assert "two factor auth turned on" in on["text"] and "security setting" in on["subject"]
    assert error_of(await app.me(other)) == (401, "invalid_session_token")
    # Another device signs in (with the code); turning it off signs that one out too.
    await app.sign_in(user.email)
    other = User(user.email, user.id, (await app.verify_sign_in(app.code_sent_to(PHONE), PHONE)).json()["session"]["token"])
    assert (await app.update_user(user, {"twoFactorAuth": False})).status_code == 200
    off = (await app.emails_to(user.email))[-1]
    assert "two factor auth turned off" in off["text"]
    assert error_of(await app.me(other)) == (401, "invalid_session_token")
    assert (await app.me(user)).status_code == 200
    # Writing what is already there changes nothing: no notice, nobody signed out.
    other = await app.signed_in_again(user)
    count = len(await app.emails_to(user.email))
    assert (await app.update_user(user, {"twoFactorAuth": False})).status_code == 200
    assert len(await app.emails_to(user.email)) == count
    assert (await app.me(other)).status_code == 200


def count_comparisons(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Each code the one-time codes compare with a challenge's digest, from now on."""
    compared: list[Any] = []
    matches = OneTimeCodes._matches

    def counted(self: OneTimeCodes, record: dict[str, Any], code: Any) -> bool:
        compared.append(code)
        return matches(self, record, code)

    monkeypatch.setattr(OneTimeCodes, "_matches", counted)
    return compared
