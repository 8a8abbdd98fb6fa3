"""The auth API under attack: races on one-time tokens, password guessing, account probing,
secrets leaking into answers or logs, and a cache that is down.

Everything goes over HTTP against the served test app, on the in-process cache and on real
Redis (the limits and one-time tokens live there).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import secrets
import threading
from typing import Any

import bcrypt
import pytest

import flowengine.auth.passwords as passwords_module
from auth_harness import OPEN_LIMITS, PASSWORD, UNREACHABLE, AuthApp, errors_of, link_form, new_email
from auth_harness import auth_apps, cache_url, smtp_inbox  # noqa: F401 (fixtures: the app on both caches)
from flowengine.hashing import hash_secret

pytestmark = pytest.mark.anyio


def limits(**rules: tuple[int, str]) -> dict[str, Any]:
    """Rate-limit settings: the test's rules, everything else wide open."""
    return {**OPEN_LIMITS, **{name: {"limit": limit, "window": window} for name, (limit, window) in rules.items()}}


@pytest.fixture
def bcrypt_checks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the threads each bcrypt check and hash ran in, in order."""
    ran: list[str] = []
    real = passwords_module.in_pool

    async def counted(work: Any, *args: Any) -> Any:
        def job() -> Any:
            ran.append(threading.current_thread().name)
            return work(*args)

        return await real(job)

    monkeypatch.setattr(passwords_module, "in_pool", counted)
    return ran


# --- one-time tokens ------------------------------------------------------------------------------


async def test_a_token_forged_through_the_cache_api_signs_nobody_in(auth_apps) -> None:
    """The cache API lets any session store any key: it must not reach the engine's own keys."""
    app: AuthApp = await auth_apps()
    victim = (await app.confirmed_user(new_email("victim")))["user"]
    mallory = (await app.confirmed_user(new_email("mallory")))["session"]["token"]
    token = secrets.token_urlsafe(32)
    forged = {"userId": victim["_id"], "expires": app.clock() + 3600, "purpose": "grant"}
    for purpose in ("magic", "grant"):
        key = f"auth:token:{purpose}:{hashlib.sha256(token.encode()).hexdigest()}"
        stored = await app.call("POST", "/_api/rest/v1/cache", json={"key": key, "value": forged},
                                headers={"Session": mallory})  # fmt: skip
        assert stored.status_code == 200
    granted = await app.call("GET", f"grant?key={token}")
    assert granted.status_code == 400 and errors_of(granted)[0][0] == "invalid_access_token"


async def test_a_thousand_concurrent_redemptions_of_one_magic_link_make_exactly_one_session(auth_apps) -> None:
    app: AuthApp = await auth_apps()
    email = new_email()
    user = (await app.confirmed_user(email))["user"]
    await app.call("POST", f"send-magic?email={email}")
    redirect = await app.follow((await app.inbox.wait_for(email, 2)).link)
    before = len(await app.auth.sessions.of_user(user["_id"]))

    answers = await asyncio.gather(*(app.call("GET", f"grant?key={redirect['access_token']}") for _ in range(1000)))
    assert sorted(a.status_code for a in answers) == [200] + [400] * 999
    assert {errors_of(a)[0] for a in answers if a.status_code == 400} == {("invalid_access_token", "client_error")}
    assert len(await app.auth.sessions.of_user(user["_id"])) == before + 1


async def test_fifty_concurrent_presses_on_one_magic_link_make_exactly_one_session(auth_apps) -> None:
    """Security E2: the link's page POSTs the key; of 50 presses at once, one uses the link."""
    app = await auth_apps()
    email = new_email()
    user = (await app.confirmed_user(email))["user"]
    await app.call("POST", f"send-magic?email={email}")
    link = (await app.inbox.wait_for(email, 2)).link
    url, fields = link_form((await app.call("GET", link)).text, link)
    before = len(await app.auth.sessions.of_user(user["_id"]))

    presses = await asyncio.gather(*(app.call("POST", url, data=fields) for _ in range(50)))
    outcomes = [dict(pair.split("=", 1) for pair in p.headers["location"].split("?", 1)[1].split("&")) for p in presses]
    assert sorted(o["status"] for o in outcomes) == ["200"] + ["400"] * 49
    (granted,) = [o["access_token"] for o in outcomes if o["status"] == "200"]
    assert (await app.call("GET", f"grant?key={granted}")).status_code == 200
    assert len(await app.auth.sessions.of_user(user["_id"])) == before + 1


async def test_concurrent_clicks_on_one_verification_link_confirm_once(auth_apps) -> None:
    app = await auth_apps()
    email = new_email()
    await app.sign_up(email)
    link = (await app.inbox.wait_for(email)).link
    answers = await asyncio.gather(*(app.call("POST", link) for _ in range(200)))  # the key in the link: curl -X POST
    statuses = sorted(a.headers["location"].split("status=")[1][:3] for a in answers)
    assert statuses == ["200"] + ["400"] * 199


# --- password guessing ----------------------------------------------------------------------------


async def test_guesses_at_one_account_are_throttled_from_any_address(auth_apps) -> None:
    app = await auth_apps(rate_limits=limits(signin_account=(5, "15m")))
    email = new_email()
    await app.confirmed_user(email)
    guesses = [await app.sign_in(email, f"guess number {n}", ip=f"198.51.100.{n}") for n in range(5)]
    assert {g.status_code for g in guesses} == {401}

    for attempt in (await app.sign_in(email, "guess number 6", ip="198.51.100.99"), await app.sign_in(email)):
        assert attempt.status_code == 429  # even the right password waits
        assert errors_of(attempt) == [("too_many_requests", "client_error")]
        retry = int(attempt.headers["retry-after"])
        assert 890 <= retry <= 900 and attempt.json()["errors"][0]["details"] == {"retryAfter": retry}
    assert (await app.sign_in(new_email("someone-else"))).status_code == 401  # other accounts are not held up


async def test_a_right_password_clears_the_accounts_failures(auth_apps) -> None:
    app = await auth_apps(rate_limits=limits(signin_account=(3, "15m")))
    email = new_email()
    await app.confirmed_user(email)
    for _ in range(3):
        await app.sign_in(email, "nope nope nope")
        await app.sign_in(email, "nope nope nope")
        assert (await app.sign_in(email)).status_code == 200


async def test_guesses_from_one_address_are_throttled_across_accounts(auth_apps) -> None:
    app = await auth_apps(rate_limits=limits(signin_ip=(8, "5m")))
    answers = [await app.sign_in(new_email(), "some password") for _ in range(10)]
    assert [a.status_code for a in answers] == [401] * 8 + [429] * 2
    assert 0 < int(answers[-1].headers["retry-after"]) <= 300
    assert (await app.sign_in(new_email(), "some password", ip="192.0.2.55")).status_code == 401


async def test_parallel_guesses_run_no_more_password_checks_than_the_limit(auth_apps, bcrypt_checks: list[str]) -> None:
    app = await auth_apps(rate_limits=limits(signin_account=(5, "15m")))
    email = new_email()
    await app.confirmed_user(email)
    bcrypt_checks.clear()
    answers = await asyncio.gather(*(app.sign_in(email, f"parallel guess {n}") for n in range(50)))
    assert sorted(a.status_code for a in answers) == [401] * 5 + [429] * 45
    assert len(bcrypt_checks) == 5


async def test_passwords_are_checked_and_hashed_in_the_bcrypt_pool(auth_apps, bcrypt_checks: list[str]) -> None:
    app = await auth_apps(confirm_email=False)
    assert len(bcrypt_checks) == 1  # the decoy, hashed at start
    bcrypt_checks.clear()
    email = new_email()
    await app.sign_up(email)
    await app.sign_in(email)
    await app.sign_in(new_email())  # no such account: the decoy is checked
    assert len(bcrypt_checks) == 3 and all(name.startswith("bcrypt") for name in bcrypt_checks)
    assert (await app.stored_user(email))["password"]._digest.startswith("$fe1$2b$04$")  # the app's cost
    assert len(bcrypt_checks) == 3


async def test_emails_asked_for_one_address_are_throttled_alike_for_any_address(auth_apps) -> None:
    app = await auth_apps(rate_limits=limits(email_address=(3, "1h")))
    known = new_email("known")
    await app.confirmed_user(known)
    for email in (known, new_email("unknown")):
        answers = [await app.call("POST", f"{path}?email={email}") for path in ("send-magic", "send-reset", "resend", "send-magic")]
        assert [a.status_code for a in answers] == [200, 200, 200, 429], email
        assert answers[-1].content == b'{"errors":[{"origin":"client_error","code":"too_many_requests",' \
            b'"message":"Too many requests; try again in 3600 seconds","details":{"retryAfter":3600}}]}'


async def test_emails_of_one_kind_to_one_address_are_a_minute_apart_alike_for_any_address(auth_apps) -> None:
    """Security E2, E4, A2: one magic link, reset and resend a minute per address asked, known or not."""
    app = await auth_apps(rate_limits=limits(email_spacing=(1, "1m")))
    known = new_email("known")
    await app.confirmed_user(known)
    refusals = []
    for email in (known, new_email("unknown")):
        kinds = ("send-magic", "send-reset", "resend")
        answers = [await app.call("POST", f"{path}?email={email}") for path in kinds + kinds]
        assert [a.status_code for a in answers] == [200] * 3 + [429] * 3, email
        refusals += answers[3:]
    same(*refusals)
    assert refusals[0].content == b'{"errors":[{"origin":"client_error","code":"too_many_requests",' \
        b'"message":"Too many requests; try again in 60 seconds","details":{"retryAfter":60}}]}'


async def test_a_newer_reset_request_a_minute_later_kills_the_older_link(auth_apps) -> None:
    """Security E4: reset twice, the first link is dead; the second request had to wait its minute."""
    app = await auth_apps(rate_limits=limits(email_spacing=(1, "1m")))
    email = new_email()
    await app.confirmed_user(email)
    assert (await app.call("POST", f"send-reset?email={email}")).status_code == 200
    first = await app.inbox.wait_for(email, 2)
    assert (await app.call("POST", f"send-reset?email={email}")).status_code == 429
    keys, _ = await app.services.cache.keys("auth:limit:email_spacing:*")
    await app.services.cache.delete(*keys)  # what waiting a minute does
    assert (await app.call("POST", f"send-reset?email={email}")).status_code == 200
    second = await app.inbox.wait_for(email, 3)
    assert (await app.follow(first.link))["status"] == "400"
    assert (await app.call("POST", f"reset-pwd?key={first.link.split('key=')[1]}",
                           json={"newPassword": "a reset password"})).status_code == 400  # fmt: skip
    assert (await app.follow(second.link))["status"] == "200"


async def test_emails_asked_from_one_address_are_throttled(auth_apps) -> None:
    app = await auth_apps(rate_limits=limits(email_ip=(2, "1h")))
    answers = [await app.call("POST", f"send-reset?email={new_email()}") for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]


async def test_sign_ups_from_one_address_are_throttled(auth_apps) -> None:
    app = await auth_apps(rate_limits=limits(signup_ip=(2, "1h")))
    answers = [await app.sign_up(new_email()) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]


# --- no enumeration -------------------------------------------------------------------------------


def same(*responses: Any) -> None:
    """Byte-identical answers: status, headers and body."""
    shapes = {(r.status_code, tuple(sorted(r.headers.items())), r.content) for r in responses}
    assert len(shapes) == 1, shapes


async def test_sign_in_failures_answer_alike_for_unknown_and_known_accounts(auth_apps, bcrypt_checks: list[str]) -> None:
    app = await auth_apps()
    known, unconfirmed = new_email("known"), new_email("unconfirmed")
    await app.confirmed_user(known)
    await app.sign_up(unconfirmed)
    bcrypt_checks.clear()
    wrong = await app.sign_in(known, "not the password")
    unknown = await app.sign_in(new_email("nobody"), "not the password")
    wrong_unconfirmed = await app.sign_in(unconfirmed, "not the password")
    same(wrong, unknown, wrong_unconfirmed)
    assert wrong.status_code == 401
    assert len(bcrypt_checks) == 3  # one bcrypt check each: the unknown account's took as long


@pytest.mark.parametrize("password", ["x" * 100, "é" * 50, "x" * 128], ids=["100 B", "50 é", "128 chars"])
async def test_a_long_password_costs_one_bcrypt_check_for_known_and_unknown_accounts(auth_apps, bcrypt_checks: list[str],
                                                                                    password: str) -> None:  # fmt: skip
    """Security A3: whatever bcrypt alone could read, every account's refusal costs one check,
    also for an account whose hash predates the engine's pre-hash (bcrypt of the bytes alone)."""
    app = await auth_apps()
    known, old = new_email("known"), new_email("old")
    await app.confirmed_user(known)
    await stored_bare(app, old)
    bcrypt_checks.clear()
    answers = [await app.sign_in(email, password) for email in (known, old, new_email("nobody"))]
    same(*answers)
    assert answers[0].status_code == 401
    assert len(bcrypt_checks) == 3  # one each: neither known account answered at once


async def test_a_password_longer_than_bcrypt_reads_signs_up_and_in(auth_apps) -> None:
    app = await auth_apps(confirm_email=False)
    email, password = new_email(), "é" * 64  # 128 bytes (NIST: at least 64 characters, any script)
    assert (await app.sign_up(email, password)).status_code == 200
    assert (await app.sign_in(email, password)).status_code == 200
    assert (await app.sign_in(email, "é" * 63)).status_code == 401  # nothing was cut


async def test_an_outdated_hash_is_redone_at_the_apps_cost_on_sign_in(auth_apps) -> None:
    """Security P3: a hash of a lower cost (or of the bare scheme) is upgraded by the next sign-in."""
    app = await auth_apps(confirm_email=False, cost=10)
    low, old = new_email("low"), new_email("old")
    await stored_bare(app, old)
    hasher, app.services.store.hasher = app.services.store.hasher, cost_4
    await app.sign_up(low)
    app.services.store.hasher = hasher
    assert [await digest_of(app, email) for email in (low, old)] == ["$fe1$2b$04$", "$2b$04$"]

    assert (await app.sign_in(low, "not the password")).status_code == 401
    assert await digest_of(app, low) == "$fe1$2b$04$"  # a wrong password changes nothing
    for email in (low, old):
        assert (await app.sign_in(email)).status_code == 200
        assert await digest_of(app, email) == "$fe1$2b$10$"
        assert (await app.sign_in(email)).status_code == 200  # the new hash holds the same password


async def stored_bare(app: AuthApp, email: str) -> None:
    """A confirmed account whose password hash is bare bcrypt at cost 4, as made before ``$fe1``."""
    hasher = app.services.store.hasher
    app.services.store.hasher = lambda plain: asyncio.to_thread(lambda: bcrypt.hashpw(plain.encode(), bcrypt.gensalt(4)).decode())
    await app.confirmed_user(email)
    app.services.store.hasher = hasher


async def cost_4(plain: str) -> str:
    return await asyncio.to_thread(hash_secret, plain, 4)


async def digest_of(app: AuthApp, email: str) -> str:
    """The start of the stored hash: its scheme and cost."""
    return re.match(r"(\$fe1)?\$2b\$[0-9]{2}\$", (await app.stored_user(email))["password"]._digest)[0]


@pytest.mark.parametrize("path", ["send-magic", "send-reset", "resend"])
async def test_link_requests_answer_alike_for_every_address(auth_apps, path: str) -> None:
    app = await auth_apps()
    confirmed, unconfirmed = new_email("confirmed"), new_email("unconfirmed")
    await app.confirmed_user(confirmed)
    await app.sign_up(unconfirmed)
    answers = [await app.call("POST", f"{path}?email={email}") for email in (confirmed, unconfirmed, new_email("nobody"))]
    same(*answers)
    assert answers[0].status_code == 200 and answers[0].content == b"null"


# --- secrets stay secret --------------------------------------------------------------------------


async def test_no_password_hash_or_token_reaches_an_answer_an_email_or_a_log_line(auth_apps, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    app = await auth_apps()
    email, other = new_email("ann"), new_email("bob")
    session = (await app.confirmed_user(email, profile={"nickname": "ann"}))["session"]
    await app.confirmed_user(other)
    auth = {"Session": session["token"]}
    await app.sign_in(email)
    await app.sign_in(email, "a wrong password")
    await app.sign_in(new_email("nobody"), "a wrong password")
    await app.call("GET", "user", headers=auth)
    await app.call("GET", "sessions", headers=auth)
    await app.call("GET", "/me", headers=auth)
    await app.call("POST", "/user/verify-sign-in", json={"email": email, "code": "424242"})
    await app.call("POST", "change-pwd", json={"newPassword": "second password", "oldPassword": PASSWORD}, headers=auth)
    await app.call("POST", "change-email", json={"currentPassword": "second password", "newEmail": new_email("new")}, headers=auth)
    await app.call("POST", f"send-magic?email={email}")
    await app.call("POST", f"send-reset?email={other}")
    reset = await app.inbox.wait_for(other, 2)
    await app.call("POST", f"reset-pwd?key={reset.link.split('key=')[1]}", json={"newPassword": "third password"})
    await app.call("POST", "signup-email", json={"email": new_email(), "password": "p" * 80})
    await app.auth.mailer.drain()

    hashes = [(await app.stored_user(address))["password"]._digest for address in (email, other)]
    tokens = [session["token"]] + [r.json()["session"]["token"] for r in app.responses
                                   if r.status_code == 200 and r.headers["content-type"] == "application/json"
                                   and isinstance(r.json(), dict) and r.json().get("session")]  # fmt: skip
    assert len(hashes) == 2 and len(tokens) >= 4
    said = [r.text for r in app.responses] + [m.text + m.html for m in app.inbox.mails]
    logged = "\n".join(f"{record.getMessage()} {getattr(record, 'fields', '')}" for record in caplog.records)
    for text in said + [logged]:
        assert "$2b$" not in text and all(h not in text for h in hashes)
    assert all(token not in logged for token in tokens)
    assert all('"password":' not in r.text for r in app.responses)  # no user object carries the field at all


# --- a cache that is down -------------------------------------------------------------------------


@pytest.mark.parametrize("cache_url", [UNREACHABLE + "15"])
async def test_with_the_cache_down_auth_fails_closed(auth_apps) -> None:
    app = await auth_apps()
    email = new_email()
    await app.services.store.create("users", {"email": email, "password": PASSWORD, "emailVerified": True})
    for method, path in (("POST", "signin-email"), ("POST", f"send-magic?email={email}"), ("GET", "grant?key=" + "A" * 43)):
        response = await app.call(method, path, json={"email": email, "password": PASSWORD})
        assert response.status_code == 503, path
        assert errors_of(response) == [("cache_unavailable", "server_error")]
    redirect = await app.follow("/_auth/magic?key=" + "A" * 43)
    assert redirect == {"status": "400", "action": "magic-link", "error": "The cache service is unavailable"}


async def test_a_password_reset_lets_a_locked_out_owner_back_in(auth_apps) -> None:
    app = await auth_apps(rate_limits=limits(signin_account=(2, "15m")))
    email = new_email()
    await app.confirmed_user(email)
    for _ in range(3):
        await app.sign_in(email, "an attacker's guess")
    assert (await app.sign_in(email)).status_code == 429
    await app.call("POST", f"send-reset?email={email}")
    key = (await app.inbox.wait_for(email, 2)).link.split("key=")[1]
    assert (await app.call("POST", f"reset-pwd?key={key}", json={"newPassword": "my new password"})).status_code == 200
    assert (await app.sign_in(email, "my new password")).status_code == 200
