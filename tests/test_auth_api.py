"""The auth API end to end over HTTP: every route, every link, every redirect outcome.

Each test serves ``tests/apps/auth_app`` as the runtime does (SQLite store, real SMTP on
loopback, the cache in-process and in Redis) and drives it as the Altogic client does:
the same paths, query strings left unencoded, the ``Session`` header. Emails are read from
the SMTP server and their links opened as a browser does (the button of the page a link
shows is pressed); the redirect to the app's page is read, not followed.
"""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Any
from urllib.parse import quote

import pytest

from auth_harness import API_KEY, CHROME, IPHONE, PASSWORD, REDIRECT, AuthApp, errors_of, link_form, new_email
from auth_harness import auth_apps, cache_url, smtp_inbox  # noqa: F401 (fixtures: the app on both caches)
from flowengine.auth.config import DAY

pytestmark = pytest.mark.anyio

SESSION_KEYS = {"userId", "token", "creationDtm", "accessGroupKeys", "userAgent"}


def headers(session: dict[str, Any], **extra: str) -> dict[str, str]:
    return {"Session": session["token"], **extra}


# --- sign up ---------------------------------------------------------------------------------


async def test_sign_up_with_confirmation_mails_a_link_that_confirms_and_grants_a_session(auth_apps) -> None:
    app: AuthApp = await auth_apps()
    email = new_email()
    response = await app.sign_up(email, profile="Ann")
    assert response.status_code == 200
    answer = response.json()
    assert answer["session"] is None
    assert answer["user"]["email"] == email and answer["user"]["name"] == "Ann"
    assert answer["user"]["emailVerified"] is False and answer["user"]["provider"] == "altogic"
    assert answer["user"]["providerUserId"] == answer["user"]["_id"]
    assert "password" not in answer["user"]

    mail = await app.inbox.wait_for(email)
    assert mail.subject == f"Confirm your email address for {app.services.settings['name']}"
    assert mail.link.startswith("http://testserver/_auth/verify?key=") and mail.link in mail.html
    assert "24 hours" in mail.text
    redirect = await app.follow(mail.link)
    assert set(redirect) == {"status", "action", "access_token"}
    assert (redirect["status"], redirect["action"]) == ("200", "email-confirm")

    granted = await app.call("GET", f"grant?key={redirect['access_token']}", headers={"User-Agent": IPHONE})
    assert granted.status_code == 200
    user, session = granted.json()["user"], granted.json()["session"]
    assert user["emailVerified"] is True and user["lastLoginAt"] is not None
    assert set(session) == SESSION_KEYS and session["userId"] == user["_id"]
    assert session["userAgent"] == {"family": "Mobile Safari", "major": "16", "minor": "5", "patch": None,
                                    "device": {"family": "iPhone", "brand": "Apple", "model": "iPhone"},
                                    "os": {"family": "iOS", "major": "16", "minor": "5", "patch": None}}  # fmt: skip
    me = await app.call("GET", "user", headers=headers(session))
    assert me.status_code == 200 and me.json()["_id"] == user["_id"]

    # The link and the grant work once.
    again = await app.follow(mail.link)
    assert again == {"status": "400", "action": "email-confirm", "error": "Invalid or expired access token"}
    regrant = await app.call("GET", f"grant?key={redirect['access_token']}")
    assert regrant.status_code == 400 and errors_of(regrant) == [("invalid_access_token", "client_error")]


async def test_sign_up_without_confirmation_signs_in_at_once(auth_apps) -> None:
    app = await auth_apps(confirm_email=False)
    email = new_email()
    answer = (await app.sign_up(email, headers={"User-Agent": CHROME})).json()
    assert set(answer["session"]) == SESSION_KEYS and answer["session"]["userAgent"]["family"] == "Chrome"
    assert answer["user"]["lastLoginAt"] is not None
    me = await app.call("GET", "user", headers=headers(answer["session"]))
    assert me.json()["email"] == email
    assert app.inbox.to(email) == []


async def test_name_or_user_data_as_an_object_sets_the_apps_own_fields(auth_apps) -> None:
    app = await auth_apps(confirm_email=False)
    answer = (await app.sign_up(new_email(), profile={"name": "Bo", "nickname": "bobo", "twoFactorAuth": False})).json()
    assert (answer["user"]["name"], answer["user"]["nickname"], answer["user"]["role"]) == ("Bo", "bobo", "member")


@pytest.mark.parametrize(
    ("profile", "fields"),
    [
        ({"emailVerified": True}, ["emailVerified"]),
        ({"password": "x" * 10, "provider": "google"}, ["password", "provider"]),
        ({"role": "admin", "_id": "me"}, ["_id", "role"]),
        ({"nickname": "x" * 21}, ["nickname"]),
        ({"shoeSize": 44}, ["shoeSize"]),
        (["Ann"], []),
    ],
    ids=["verified-without-api-key", "auth-fields", "readonly-and-system", "too-long", "unknown-field", "a-list"],
)
async def test_name_or_user_data_cannot_set_what_auth_manages(auth_apps, profile: Any, fields: list[str]) -> None:
    app = await auth_apps()
    email = new_email()
    response = await app.sign_up(email, profile=profile)
    assert response.status_code == 400
    found = sorted(item["details"]["field"] for item in response.json()["errors"])
    assert found == [".".join(["nameOrUserData", *([f] if f else [])]) for f in fields or [""]]
    assert await app.auth.find_user(email) is None


async def test_email_verified_is_taken_from_a_server_with_the_api_key(auth_apps) -> None:
    app = await auth_apps()
    email = new_email()
    response = await app.sign_up(email, profile={"name": "Cy", "emailVerified": True}, headers={"Authorization": API_KEY})
    answer = response.json()
    assert answer["user"]["emailVerified"] is True and set(answer["session"]) == SESSION_KEYS
    assert app.inbox.to(email) == []


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"email": "not-an-email", "password": PASSWORD}, "email", "email must be a valid email address"),
        ({"password": PASSWORD}, "email", "email is required"),
        ({"email": "a@example.com", "password": "short"}, "password", "password must be at least 8 characters long"),
        ({"email": "a@example.com", "password": "€" * 129}, "password", "password must be at most 128 characters long"),
        ({"email": "a@example.com", "password": "x" * 10_000}, "password", "password must be at most 128 characters long"),
        ({"email": "a@example.com", "password": "password"}, "password",
         "password is too common: it is on the list of passwords attackers try first"),
        ({"email": "a@example.com", "password": "12345678"}, "password",
         "password is too common: it is on the list of passwords attackers try first"),
        ({"email": "ann.smith@example.com", "password": "Ann.Smith2024"}, "password",
         "password must not be the app's name or the email address"),
        ({"email": "a@example.com"}, "password", "password is required"),
    ],
)
async def test_sign_up_refuses_bad_input_with_a_clear_400(auth_apps, body: dict, field: str, message: str) -> None:
    app = await auth_apps()
    response = await app.call("POST", "signup-email", json=body)
    assert response.status_code == 400
    (item,) = response.json()["errors"]
    assert (item["code"], item["details"]["field"], item["message"]) == ("validation_error", field, message)


async def test_an_address_signs_up_once(auth_apps) -> None:
    app = await auth_apps(confirm_email=False)  # a sign-up answers a session: no pretending then
    email = new_email()
    await app.sign_up(email)
    again = await app.sign_up(email.upper())
    assert again.status_code == 409 and errors_of(again) == [("email_not_unique", "client_error")]


async def test_a_sign_up_with_a_taken_address_answers_like_a_new_one_and_tells_the_owner(auth_apps) -> None:
    app = await auth_apps()  # confirm_email on: a sign-up answers {user, session: null}
    owner, stranger = new_email("owner"), new_email("new")
    await app.confirmed_user(owner)
    taken, fresh = await app.sign_up(owner.upper(), "another good passphrase"), await app.sign_up(stranger)
    assert (taken.status_code, fresh.status_code) == (200, 200)
    shape = lambda answer: {k: type(v).__name__ for k, v in answer.json()["user"].items()}  # noqa: E731
    assert shape(taken) == shape(fresh) and list(taken.json()) == list(fresh.json()) == ["user", "session"]
    assert taken.json()["session"] is None and taken.json()["user"]["email"] == owner
    assert (await app.sign_in(owner)).status_code == 200  # the account is untouched
    assert (await app.sign_in(owner, "another good passphrase")).status_code == 401
    notice = await app.inbox.wait_for(owner, 2)  # after the verification email
    assert "already has one" in notice.text and "/_auth/" not in notice.text  # no link to act on


# --- sign in, sessions, sign out ------------------------------------------------------------------


async def test_sign_in_answers_user_and_session(auth_apps) -> None:
    app = await auth_apps()
    email = new_email()
    await app.confirmed_user(email)
    response = await app.sign_in(email.upper(), headers={"User-Agent": CHROME})
    assert response.status_code == 200
    user, session = response.json()["user"], response.json()["session"]
    assert user["email"] == email and "password" not in user
    assert len(session["token"]) >= 43 and session["userAgent"]["os"]["family"] == "Linux"


async def test_an_unconfirmed_address_is_told_only_to_whoever_knows_the_password(auth_apps) -> None:
    app = await auth_apps()
    email = new_email()
    await app.sign_up(email)
    right = await app.sign_in(email)
    wrong = await app.sign_in(email, "not the password")
    assert right.status_code == 403 and errors_of(right) == [("email_not_verified", "client_error")]
    assert right.json()["errors"][0]["message"] == "The email address has not been verified yet."  # what the apps compare
    assert wrong.status_code == 401 and errors_of(wrong) == [("invalid_credentials", "client_error")]


@pytest.mark.parametrize("how", ["session-header", "bearer", "cookie"])
async def test_a_session_token_is_read_from_header_bearer_or_cookie(auth_apps, how: str) -> None:
    app = await auth_apps(confirm_email=False)
    token = (await app.sign_up(new_email())).json()["session"]["token"]
    sent = {"session-header": {"Session": token}, "bearer": {"Authorization": f"Bearer {token}"}, "cookie": {}}[how]
    if how == "cookie":
        app.http.cookies.set("session_token", token)
    assert (await app.call("GET", "user", headers=sent)).status_code == 200


@pytest.mark.parametrize(
    ("sent", "code"),
    [({}, "missing_session_token"), ({"Session": "x" * 43}, "invalid_session_token"), ({"Session": "../etc"}, "invalid_session_token")],
    ids=["missing", "unknown", "malformed"],
)
async def test_session_errors_use_the_codes_the_client_watches(auth_apps, sent: dict, code: str) -> None:
    app = await auth_apps()
    for path in ("user", "sessions"):
        response = await app.call("GET", path, headers=sent)
        assert response.status_code == 401 and errors_of(response) == [(code, "session_token_error")]
    flow = await app.call("GET", "/me", headers=sent)
    assert flow.status_code == 401 and errors_of(flow) == [(code, "session_token_error")]


async def test_flows_with_a_required_session_see_session_and_user(auth_apps) -> None:
    app = await auth_apps(confirm_email=False)
    session = (await app.sign_up(new_email(), headers={"User-Agent": CHROME})).json()["session"]
    answer = (await app.call("GET", "/me", headers=headers(session))).json()
    assert answer["session"] == session
    assert answer["user"]["_id"] == session["userId"] and "password" not in answer["user"]


async def test_sessions_lists_every_session_and_signs_out_another_by_its_listed_token(auth_apps) -> None:
    app = await auth_apps(confirm_email=False)
    email = new_email()
    laptop = (await app.sign_up(email, headers={"User-Agent": CHROME})).json()["session"]
    phone = (await app.sign_in(email, headers={"User-Agent": IPHONE})).json()["session"]

    listed = (await app.call("GET", "sessions", headers=headers(laptop))).json()
    assert [s["userAgent"]["family"] for s in listed] == ["Chrome", "Mobile Safari"]
    assert all(set(s) == SESSION_KEYS for s in listed)
    mine, other = listed
    assert mine["token"] == laptop["token"]  # the caller's own, which the client compares with its own
    assert other["token"] != phone["token"]  # never another session's secret...
    refused = await app.call("GET", "user", headers={"Session": other["token"]})
    assert refused.status_code == 401  # ...and the handle signs nobody in

    out = await app.call("POST", "signout", json={"token": other["token"]}, headers=headers(laptop))
    assert out.status_code == 200 and out.json() is None
    assert (await app.call("GET", "user", headers=headers(phone))).status_code == 401
    assert (await app.call("GET", "user", headers=headers(laptop))).status_code == 200


async def test_sign_out_ends_the_callers_session_or_another_by_its_token(auth_apps) -> None:
    app = await auth_apps(confirm_email=False)
    email = new_email()
    first = (await app.sign_up(email)).json()["session"]
    second = (await app.sign_in(email)).json()["session"]
    await app.call("POST", "signout", json={"token": second["token"]}, headers=headers(first))
    assert (await app.call("GET", "user", headers=headers(second))).status_code == 401
    own = await app.call("POST", "signout", json={}, headers=headers(first))  # signOut() sends {}
    assert own.status_code == 200
    assert errors_of(await app.call("GET", "user", headers=headers(first))) == [("invalid_session_token", "session_token_error")]


async def test_a_user_cannot_sign_out_someone_elses_session(auth_apps) -> None:
    app = await auth_apps(confirm_email=False)
    ann = (await app.sign_up(new_email("ann"))).json()["session"]
    bob = (await app.sign_up(new_email("bob"))).json()["session"]
    bobs_handle = (await app.call("GET", "sessions", headers=headers(bob))).json()[0]["token"]
    for handle in (bob["token"], bobs_handle):
        response = await app.call("POST", "signout", json={"token": handle}, headers=headers(ann))
        assert response.status_code == 200
    assert (await app.call("GET", "user", headers=headers(bob))).status_code == 200


async def test_sign_out_all_and_all_except_the_current_one(auth_apps) -> None:
    app = await auth_apps(confirm_email=False)
    email = new_email()
    sessions = [(await app.sign_up(email)).json()["session"]] + [(await app.sign_in(email)).json()["session"] for _ in range(3)]
    response = await app.call("POST", "signout-all-except", headers=headers(sessions[1]))  # no body, as the client sends it
    assert response.status_code == 200
    alive = [(await app.call("GET", "user", headers=headers(s))).status_code for s in sessions]
    assert alive == [401, 200, 401, 401]
    assert (await app.call("POST", "signout-all", headers=headers(sessions[1]))).status_code == 200
    assert (await app.call("GET", "user", headers=headers(sessions[1]))).status_code == 401


async def test_a_session_ends_24_hours_after_sign_in_even_when_kept_alive(auth_apps) -> None:
    app = await auth_apps(confirm_email=False)  # the defaults: 24 hours, 1 hour idle (security S2)
    session = (await app.sign_up(new_email())).json()["session"]
    statuses = []
    for _ in range(28):  # used every 50 minutes, so never idle: 28 x 50 min < 24 h
        app.clock.advance(50 * 60)
        statuses.append((await app.call("GET", "user", headers=headers(session))).status_code)
    app.clock.advance(DAY - 28 * 50 * 60 - 1)
    statuses.append((await app.call("GET", "user", headers=headers(session))).status_code)  # 24 h - 1 s
    assert statuses == [200] * 29
    app.clock.advance(2)  # 24 h + 1 s
    ended = await app.call("GET", "user", headers=headers(session))
    assert errors_of(ended) == [("invalid_session_token", "session_token_error")]


async def test_a_session_left_unused_for_an_hour_ends(auth_apps) -> None:
    app = await auth_apps(confirm_email=False)
    email = new_email()
    await app.sign_up(email)
    idle = (await app.sign_in(email)).json()["session"]
    app.clock.advance(3599)
    assert (await app.call("GET", "user", headers=headers(idle))).status_code == 200
    app.clock.advance(3601)  # 1 h + 1 s since its last use
    assert errors_of(await app.call("GET", "user", headers=headers(idle))) == [("invalid_session_token", "session_token_error")]


async def test_shorter_session_limits_hold(auth_apps) -> None:
    app = await auth_apps(confirm_email=False, session={"lifetime": "12h", "idle": "30m"})  # NIST rev 3's AAL2
    email = new_email()
    session = (await app.sign_up(email)).json()["session"]
    for _ in range(24):  # 24 x 29 min < 12 h < 25 x 29 min
        app.clock.advance(29 * 60)
        assert (await app.call("GET", "user", headers=headers(session))).status_code == 200
    app.clock.advance(29 * 60)
    assert (await app.call("GET", "user", headers=headers(session))).status_code == 401
    idle = (await app.sign_in(email)).json()["session"]
    app.clock.advance(30 * 60 + 1)
    assert (await app.call("GET", "user", headers=headers(idle))).status_code == 401


async def test_ending_other_sessions_needs_a_recent_sign_in(auth_apps) -> None:
    """Security S3: a stolen session that is not fresh cannot sign the owner out of their devices."""
    app = await auth_apps(confirm_email=False)
    email = new_email()
    old = (await app.sign_up(email)).json()["session"]
    other = (await app.sign_in(email)).json()["session"]
    app.clock.advance(301)
    attempts = [("signout", {"token": other["token"]}), ("signout-all-except", None), ("signout-all", None)]
    for path, body in attempts:
        refused = await app.call("POST", path, json=body, headers=headers(old))
        assert refused.status_code == 401 and errors_of(refused) == [("reauth_required", "session_token_error")]
        assert "signed in within the last 5 minutes" in refused.json()["errors"][0]["message"]
    assert (await app.call("GET", "user", headers=headers(other))).status_code == 200
    assert (await app.call("GET", "user", headers=headers(old))).status_code == 200  # still signed in
    fresh = (await app.sign_in(email)).json()["session"]
    assert (await app.call("POST", "signout-all-except", headers=headers(fresh))).status_code == 200
    assert [(await app.call("GET", "user", headers=headers(s))).status_code for s in (old, other, fresh)] == [401, 401, 200]


async def test_signing_out_ones_own_session_needs_no_recent_sign_in(auth_apps) -> None:
    app = await auth_apps(confirm_email=False)
    session = (await app.sign_up(new_email())).json()["session"]
    app.clock.advance(3000)
    assert (await app.call("POST", "signout", json={"token": session["token"]}, headers=headers(session))).status_code == 200
    assert (await app.call("GET", "user", headers=headers(session))).status_code == 401


async def test_how_long_a_session_stays_fresh_is_a_setting(auth_apps) -> None:
    app = await auth_apps(confirm_email=False, session={"fresh": "30m"})
    email = new_email()
    session = (await app.sign_up(email)).json()["session"]
    await app.sign_in(email)
    app.clock.advance(29 * 60)
    assert (await app.call("POST", "signout-all-except", headers=headers(session))).status_code == 200


async def test_last_use_is_written_at_most_once_a_minute(auth_apps) -> None:
    app = await auth_apps(confirm_email=False)
    session = (await app.sign_up(new_email())).json()["session"]
    row = await app.auth.sessions.find(session["token"])
    for _ in range(5):
        app.clock.advance(10)
        await app.call("GET", "user", headers=headers(session))
    assert (await app.auth.sessions.find(session["token"]))["lastUsedAt"] == row["lastUsedAt"]
    app.clock.advance(15)
    await app.call("GET", "user", headers=headers(session))
    assert (await app.auth.sessions.find(session["token"]))["lastUsedAt"] > row["lastUsedAt"]


# --- passwords ------------------------------------------------------------------------------------


async def test_change_password_keeps_the_current_session_and_ends_the_others(auth_apps) -> None:
    app = await auth_apps(confirm_email=False)
    email = new_email()
    current = (await app.sign_up(email)).json()["session"]
    other = (await app.sign_in(email)).json()["session"]
    body = {"newPassword": "a brand new secret", "oldPassword": PASSWORD}
    response = await app.call("POST", "change-pwd", json=body, headers=headers(current))
    assert response.status_code == 200
    assert (await app.call("GET", "user", headers=headers(current))).status_code == 200
    assert (await app.call("GET", "user", headers=headers(other))).status_code == 401
    assert (await app.sign_in(email)).status_code == 401
    assert (await app.sign_in(email, "a brand new secret")).status_code == 200


async def test_a_changed_password_is_told_to_the_address(auth_apps) -> None:
    """Security A4: the owner hears of a change they did not make."""
    app = await auth_apps()
    email = new_email()
    session = (await app.confirmed_user(email))["session"]  # email 1: the verification link
    body = {"newPassword": "a brand new secret", "oldPassword": PASSWORD}
    refused = await app.call("POST", "change-pwd", json={**body, "oldPassword": "not it at all"}, headers=headers(session))
    assert refused.status_code == 400  # a refused change tells nobody anything:
    assert (await app.call("POST", "change-pwd", json=body, headers=headers(session))).status_code == 200
    notice = await app.inbox.wait_for(email, 2)
    assert notice.subject.startswith("The password of your auth-") and notice.subject.endswith(" account changed")
    assert f"account ({email}) was just changed, and your other devices are signed out" in notice.text
    assert "If you did not make this change" in notice.text and "a brand new secret" not in notice.text
    await app.auth.mailer.drain()
    assert len(app.inbox.to(email)) == 2


@pytest.mark.parametrize(
    ("body", "status", "code", "field"),
    [
        ({"newPassword": "a brand new secret", "oldPassword": "not it at all"}, 400, "invalid_password", None),
        ({"newPassword": "short", "oldPassword": PASSWORD}, 400, "validation_error", "newPassword"),
        ({"newPassword": "ü" * 129, "oldPassword": PASSWORD}, 400, "validation_error", "newPassword"),
        ({"newPassword": "iloveyou", "oldPassword": PASSWORD}, 400, "validation_error", "newPassword"),
        ({"newPassword": "a brand new secret"}, 400, "validation_error", "oldPassword"),
    ],
)
async def test_change_password_refusals(auth_apps, body: dict, status: int, code: str, field: str | None) -> None:
    app = await auth_apps(confirm_email=False)
    email = new_email()
    session = (await app.sign_up(email)).json()["session"]
    response = await app.call("POST", "change-pwd", json=body, headers=headers(session))
    assert response.status_code == status
    (item,) = response.json()["errors"]
    assert item["code"] == code and (item.get("details") or {}).get("field") == field
    assert (await app.sign_in(email)).status_code == 200


async def test_reset_link_leads_to_the_form_and_reset_pwd_sets_the_password_once(auth_apps) -> None:
    app = await auth_apps()
    email = new_email()
    signed_in = (await app.confirmed_user(email))["session"]
    assert (await app.call("POST", f"send-reset?email={email}")).json() is None
    mail = await app.inbox.wait_for(email, 2)
    assert mail.subject.startswith("Reset your") and mail.link.startswith("http://testserver/_auth/reset?key=")
    redirect = await app.follow(mail.link)
    assert (redirect["status"], redirect["action"]) == ("200", "reset-pwd")
    assert redirect["access_token"] == mail.link.split("key=")[1]
    assert (await app.follow(mail.link))["status"] == "200"  # opening the link does not use it up

    key = redirect["access_token"]
    weak = await app.call("POST", f"reset-pwd?key={key}", json={"newPassword": "short"})
    assert weak.status_code == 400  # and the key still works:
    done = await app.call("POST", f"reset-pwd?key={key}", json={"newPassword": "a reset password"})
    assert done.status_code == 200 and done.json() is None
    assert (await app.call("GET", "user", headers=headers(signed_in))).status_code == 401
    assert (await app.sign_in(email, "a reset password")).status_code == 200

    reused = await app.call("POST", f"reset-pwd?key={key}", json={"newPassword": "another password"})
    assert reused.status_code == 400 and errors_of(reused) == [("invalid_access_token", "client_error")]
    assert await app.follow(mail.link) == {"status": "400", "action": "reset-pwd", "error": "Invalid or expired access token"}


async def test_a_reset_password_is_told_to_the_address(auth_apps) -> None:
    app = await auth_apps()
    email = new_email()
    await app.confirmed_user(email)
    await app.call("POST", f"send-reset?email={email}")
    key = (await app.inbox.wait_for(email, 2)).link.split("key=")[1]
    assert (await app.call("POST", f"reset-pwd?key={key}", json={"newPassword": "a reset password"})).status_code == 200
    notice = await app.inbox.wait_for(email, 3)
    assert notice.subject.startswith("The password of your auth-") and "was just changed" in notice.text


async def test_a_newer_reset_link_retires_the_older_one(auth_apps) -> None:
    app = await auth_apps()
    email = new_email()
    await app.confirmed_user(email)
    await app.call("POST", f"send-reset?email={email}")
    first = await app.inbox.wait_for(email, 2)
    await app.call("POST", f"send-reset?email={email}")
    second = await app.inbox.wait_for(email, 3)
    assert (await app.follow(first.link))["status"] == "400"
    assert (await app.follow(second.link))["status"] == "200"


# --- magic links ----------------------------------------------------------------------------------


async def test_magic_link_signs_in_once_through_grant(auth_apps) -> None:
    app = await auth_apps()
    email = new_email("ann+magic")
    await app.confirmed_user(email, profile={"nickname": "annie"})
    sent = await app.call("POST", f"send-magic?email={email}")  # '+' unencoded, as the client sends it
    assert sent.status_code == 200 and sent.json() is None
    mail = await app.inbox.wait_for(email, 2)
    assert mail.subject == "Magic door to Test Brand"  # the app's template, its <title> the subject
    assert mail.text.startswith("Knock knock, annie: http://testserver/_auth/magic?key=") and "15 minutes" in mail.text
    redirect = await app.follow(mail.link)
    assert (redirect["status"], redirect["action"]) == ("200", "magic-link")
    granted = await app.call("GET", f"grant?key={redirect['access_token']}", headers={"User-Agent": CHROME})
    assert granted.status_code == 200 and granted.json()["user"]["email"] == email
    assert (await app.call("GET", f"grant?key={redirect['access_token']}")).status_code == 400
    assert await app.follow(mail.link) == {"status": "400", "action": "magic-link", "error": "Invalid or expired access token"}


async def test_magic_links_and_resets_need_a_confirmed_address(auth_apps) -> None:
    app = await auth_apps()
    email = new_email()
    await app.sign_up(email)
    for path in ("send-magic", "send-reset"):
        response = await app.call("POST", f"{path}?email={email}")
        assert response.status_code == 200 and response.json() is None
    await app.auth.mailer.drain()
    assert [mail.subject.split()[0] for mail in app.inbox.to(email)] == ["Confirm"]


async def test_with_confirmation_off_no_link_emails_are_sent(auth_apps) -> None:
    app = await auth_apps(confirm_email=False)
    email = new_email()
    await app.sign_up(email)
    for path in ("resend", "send-magic", "send-reset"):
        response = await app.call("POST", f"{path}?email={email}")
        assert response.status_code == 400 and errors_of(response) == [("email_confirmation_disabled", "client_error")]


# --- resend ---------------------------------------------------------------------------------------


async def test_resend_sends_a_new_verification_link_and_retires_the_old_one(auth_apps) -> None:
    app = await auth_apps()
    email = new_email()
    await app.sign_up(email)
    first = await app.inbox.wait_for(email)
    assert (await app.call("POST", f"resend?email={email}")).json() is None
    second = await app.inbox.wait_for(email, 2)
    assert (await app.follow(first.link))["status"] == "400"
    assert (await app.follow(second.link))["status"] == "200"
    await app.call("POST", f"resend?email={email}")  # confirmed now: nothing more is sent
    await app.auth.mailer.drain()
    assert len(app.inbox.to(email)) == 2


# --- change email ---------------------------------------------------------------------------------


async def test_change_email_with_confirmation_moves_the_account_when_the_link_is_opened(auth_apps) -> None:
    app = await auth_apps()
    old, new = new_email("old"), new_email("new")
    session = (await app.confirmed_user(old))["session"]
    elsewhere = (await app.sign_in(old)).json()["session"]
    body = {"currentPassword": PASSWORD, "newEmail": new.upper()}
    response = await app.call("POST", "change-email", json=body, headers=headers(session))
    assert response.status_code == 200 and response.json()["email"] == old  # pending until confirmed
    mail = await app.inbox.wait_for(new)
    assert mail.link.startswith("http://testserver/_auth/change-email?key=") and old in mail.text
    assert (await app.call("GET", "user", headers=headers(elsewhere))).status_code == 200
    assert await app.follow(mail.link) == {"status": "200", "action": "change-email"}
    me = (await app.call("GET", "user", headers=headers(session))).json()
    assert (me["email"], me["emailVerified"]) == (new, True)
    assert (await app.call("GET", "user", headers=headers(elsewhere))).status_code == 401  # security E6
    notice = await app.inbox.wait_for(old, 2)
    assert new in notice.text and "no longer signs in" in notice.text
    assert (await app.sign_in(new)).status_code == 200 and (await app.sign_in(old)).status_code == 401
    assert await app.follow(mail.link) == {"status": "400", "action": "change-email", "error": "Invalid or expired access token"}


async def test_change_email_without_confirmation_moves_the_account_at_once(auth_apps) -> None:
    app = await auth_apps(confirm_email=False)
    old, new = new_email("old"), new_email("new")
    session = (await app.sign_up(old)).json()["session"]
    elsewhere = (await app.sign_in(old)).json()["session"]
    response = await app.call("POST", "change-email", json={"currentPassword": PASSWORD, "newEmail": new}, headers=headers(session))
    assert response.status_code == 200 and response.json()["email"] == new and "password" not in response.json()
    assert (await app.call("GET", "user", headers=headers(elsewhere))).status_code == 401  # security E6
    assert (await app.call("GET", "user", headers=headers(session))).status_code == 200


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"currentPassword": "wrong password", "newEmail": "x@example.com"}, 400, "invalid_password"),
        ({"currentPassword": PASSWORD, "newEmail": "nope"}, 400, "validation_error"),
        ({"currentPassword": PASSWORD, "newEmail": "TAKEN"}, 409, "email_not_unique"),
    ],
)
async def test_change_email_refusals(auth_apps, body: dict, status: int, code: str) -> None:
    app = await auth_apps(confirm_email=False)
    taken = new_email("taken")
    await app.sign_up(taken)
    session = (await app.sign_up(new_email())).json()["session"]
    if body["newEmail"] == "TAKEN":
        body = {**body, "newEmail": taken}
    response = await app.call("POST", "change-email", json=body, headers=headers(session))
    assert response.status_code == status and response.json()["errors"][0]["code"] == code


# --- every redirect outcome -----------------------------------------------------------------------


async def _links(app: AuthApp) -> tuple[str, dict[str, str]]:
    """An account with one live link of each kind: (email, {target: link})."""
    email, pending = new_email(), new_email("pending")
    session = (await app.confirmed_user(email))["session"]
    await app.sign_up(pending)
    await app.call("POST", f"send-magic?email={email}")
    await app.call("POST", f"send-reset?email={email}")
    await app.call("POST", "change-email", json={"currentPassword": PASSWORD, "newEmail": new_email("moved")},
                   headers=headers(session))  # fmt: skip
    await app.auth.mailer.drain()
    links = {mail.link.split("/_auth/")[1].split("?")[0]: mail.link for mail in app.inbox.mails
             if mail.to in (email, pending) or mail.to.startswith("moved-")}  # fmt: skip
    return email, {target: link for target, link in links.items()}


ACTIONS = {"verify": "email-confirm", "magic": "magic-link", "reset": "reset-pwd", "change-email": "change-email"}


async def test_expired_links_redirect_with_status_400(auth_apps) -> None:
    app = await auth_apps()
    _, links = await _links(app)
    app.clock.advance(24 * 3600 + 1)  # past every lifetime, the verification link's included
    for target, link in links.items():
        redirect = await app.follow(link)
        assert redirect == {"status": "400", "action": ACTIONS[target], "error": "Invalid or expired access token"}, target


async def test_links_live_until_just_before_their_lifetime(auth_apps) -> None:
    app = await auth_apps()
    _, links = await _links(app)
    app.clock.advance(15 * 60 - 1)  # the shortest, a magic link's: 15 minutes
    for target in ("magic", "reset", "verify", "change-email"):
        assert (await app.follow(links[target]))["status"] == "200", target


async def test_each_link_lives_as_long_as_its_kind(auth_apps) -> None:
    """Security E2, E4, E5, E6: magic link 15 minutes; reset and change of email 30; verification 24 hours."""
    app = await auth_apps()
    _, links = await _links(app)
    app.clock.advance(15 * 60 + 1)
    assert (await app.follow(links["magic"]))["status"] == "400"
    app.clock.advance(15 * 60 - 2)  # 30 minutes less a second
    assert (await app.follow(links["reset"]))["status"] == "200"  # opening a reset link uses nothing up
    app.clock.advance(2)
    assert (await app.follow(links["reset"]))["status"] == "400"
    assert (await app.follow(links["change-email"]))["status"] == "400"
    app.clock.advance(24 * 3600 - 30 * 60 - 2)  # 24 hours less a second
    assert (await app.follow(links["verify"]))["status"] == "200"


async def test_a_token_is_refused_by_every_other_purpose(auth_apps) -> None:
    app = await auth_apps()
    _, links = await _links(app)
    for target, link in links.items():
        key = link.split("key=")[1]
        for other in ACTIONS:
            if other != target:
                redirect = await app.follow(f"http://testserver/_auth/{other}?key={key}")
                assert redirect["status"] == "400", (target, other)
        assert (await app.call("GET", f"grant?key={key}")).status_code == 400, target  # a magic link's key too
        if target != "reset":
            assert (await app.call("POST", f"reset-pwd?key={key}", json={"newPassword": "whatever 123"})).status_code == 400
    for target, link in links.items():  # and each still works for its own purpose
        assert (await app.follow(link))["status"] == "200", target


@pytest.mark.parametrize("query", ["", "?key=", "?key=nonsense", "?key=" + "A" * 43, "?key=%00%FF"])
async def test_unknown_or_garbled_keys_redirect_with_status_400(auth_apps, query: str) -> None:
    app = await auth_apps()
    for target, action in ACTIONS.items():
        assert await app.follow(f"/_auth/{target}{query}") == {"status": "400", "action": action,
                                                                "error": "Invalid or expired access token"}  # fmt: skip


async def test_without_a_redirect_url_the_link_targets_answer_json(auth_apps) -> None:
    app = await auth_apps(redirect_url="")
    page = await app.call("GET", "/_auth/magic?key=nonsense")
    assert page.headers["content-security-policy"].endswith("form-action 'self'")  # no app page to go on to
    url, fields = link_form(page.text, str(page.url))
    response = await app.call("POST", url, data=fields)
    assert response.status_code == 400
    assert response.json() == {"status": "400", "action": "magic-link", "error": "Invalid or expired access token"}


# --- client keys ----------------------------------------------------------------------------------


async def test_client_keys_guard_the_api_and_flows_but_not_email_links(auth_apps) -> None:
    app = await auth_apps(settings={"client_keys": ["front-key"]})
    email = new_email()
    refused = await app.sign_up(email)
    assert refused.status_code == 401 and errors_of(refused) == [("invalid_client_key", "client_error")]
    assert (await app.call("GET", "/ping")).status_code == 401
    assert (await app.call("GET", "/ping", headers={"X-Client-Key": "wrong"})).status_code == 401
    assert (await app.call("GET", "/ping", headers={"X-Client-Key": "front-key"})).status_code == 200
    assert (await app.sign_up(email, headers={"X-Client-Key": "front-key"})).status_code == 200
    mail = await app.inbox.wait_for(email)
    assert (await app.follow(mail.link))["status"] == "200"  # a browser opening an email link sends no key


async def test_a_new_address_taken_before_the_link_is_opened_is_refused(auth_apps) -> None:
    app = await auth_apps()
    old, new = new_email("old"), new_email("new")
    session = (await app.confirmed_user(old))["session"]
    await app.call("POST", "change-email", json={"currentPassword": PASSWORD, "newEmail": new}, headers=headers(session))
    link = (await app.inbox.wait_for(new)).link
    await app.sign_up(new)  # someone signs up with that address meanwhile
    redirect = await app.follow(link)
    assert redirect == {"status": "400", "action": "change-email", "error": "An account with this email address already exists"}
    assert (await app.call("GET", "user", headers=headers(session))).json()["email"] == old


# --- mail scanners (security E3) -------------------------------------------------------------------

#: What a mail scanner that opens every link of a message says it is.
SCANNER = "Mozilla/5.0 (compatible; MSIE 9.0; Windows NT 6.1; Trident/5.0) Microsoft Outlook SafeLinks"


async def test_a_scanner_opening_a_link_uses_nothing_up_and_the_users_press_works_once(auth_apps) -> None:
    app = await auth_apps()
    _, links = await _links(app)
    for target in ("verify", "magic", "change-email"):
        link = links[target]
        head = await app.call("HEAD", link, headers={"User-Agent": SCANNER})
        page = await app.call("GET", link, headers={"User-Agent": SCANNER})
        assert (head.status_code, head.content, page.status_code) == (200, b"", 200), target
        for answer in (head, page):
            assert answer.headers["content-type"] == "text/html; charset=utf-8"
            assert (answer.headers["cache-control"], answer.headers["referrer-policy"]) == ("no-store", "no-referrer")
            policy = answer.headers["content-security-policy"]
            assert policy.startswith("default-src 'none'; style-src 'sha256-") and "script" not in policy
            assert "frame-ancestors 'none'" in policy and policy.endswith("form-action 'self' https://front.test")
        assert not any(tag in page.text for tag in ("<script", "<img", "<link", "<iframe", "src=", "href="))
        style = re.search(r"<style>(.*)</style>", page.text)[1].encode()  # the one style the policy allows
        assert f"style-src 'sha256-{base64.b64encode(hashlib.sha256(style).digest()).decode()}'" in policy
        url, fields = link_form(page.text, link)
        assert (url, fields) == (link.split("?")[0], {"key": link.split("key=")[1]}), target

        pressed = await app.call("POST", url, data=fields, headers={"User-Agent": CHROME})
        assert pressed.status_code == 303 and pressed.headers["referrer-policy"] == "no-referrer"
        assert pressed.headers["location"].startswith(f"{REDIRECT}?status=200&action="), target
        again = await app.call("POST", url, data=fields, headers={"User-Agent": CHROME})
        assert again.status_code == 303, target
        assert again.headers["location"] == f"{REDIRECT}?status=400&action={ACTIONS[target]}&error=Invalid+or+expired+access+token"
    scanned = await app.call("GET", links["reset"], headers={"User-Agent": SCANNER})  # it only leads to the app's form
    assert scanned.status_code == 302 and (await app.follow(links["reset"]))["status"] == "200"
    assert (await app.call("HEAD", links["reset"])).status_code == 204


async def test_the_link_page_escapes_the_key_it_shows(auth_apps) -> None:
    app = await auth_apps()
    hostile = '"><script>alert(1)</script><img src=x onerror=alert(2)>&amp;'
    for target, action in ACTIONS.items():
        if target == "reset":
            continue
        page = await app.call("GET", f"/_auth/{target}?key={quote(hostile)}")
        assert page.status_code == 200 and "<script" not in page.text and "<img" not in page.text
        assert 'value="&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x onerror=alert(2)&gt;&amp;amp;"' in page.text
        url, fields = link_form(page.text, str(page.url))
        assert fields == {"key": hostile}  # sent back as it came, and refused
        redirect = await app.follow(f"/_auth/{target}?key={quote(hostile)}")
        assert redirect == {"status": "400", "action": action, "error": "Invalid or expired access token"}


async def test_a_posted_link_takes_its_key_from_the_link_without_a_form(auth_apps) -> None:
    app = await auth_apps()
    email = new_email()
    await app.sign_up(email)
    link = (await app.inbox.wait_for(email)).link
    pressed = await app.call("POST", link)  # curl -X POST "$LINK"
    assert pressed.status_code == 303 and "status=200&action=email-confirm&access_token=" in pressed.headers["location"]
