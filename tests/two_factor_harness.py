"""The reference app (tutorial 3's two-factor sign-in) served for HTTP tests.

``two_factor_app`` copies the repository's ``app.yaml``, ``models/`` and ``flows/`` to a
temporary folder and builds them as the server does (``runtime.build(folder, dev=True)``,
its lifespan run around the test). Only the environment picks the services: SMS through the
real ``twilio`` SDK to ``tests/fake_twilio.py`` on loopback, email to the dev outbox, SQLite
in the folder, the in-process cache or real Redis (``cache_kind``). The copy's ``app.yaml``
changes in two places: a unique ``name`` (the cache namespace, so runs never share Redis
keys) and ``sms.allowed_countries: [US]``.

``Services.clock`` is read on every use, so the fixture swaps in a ``Clock`` that a test
moves forward (``app.clock.advance(301)``) through ``asgi.state.services``. Cache TTLs
(send spacing, caps) run on real time; ``forget_spacing`` stands in for a minute's wait.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Iterator
from urllib.parse import parse_qs, quote, urlsplit

import httpx
import pytest
import yaml
from auth_harness import link_form
from fake_twilio import FakeTwilio, serve_fake_twilio

from flowengine.errors import FlowError
from flowengine.messaging.outbox import outbox_key
from flowengine.runtime import build

REFERENCE_APP = Path(__file__).parent.parent
AUTH = "/_api/rest/v1/auth"
UPDATE = "/_api/rest/v1/db/object/update"
PASSWORD = "correct horse battery"
CLIENT = ("203.0.113.7", 50000)
TWILIO_FROM = "+15005550006"
PHONE = "+14155552671"
OTHER_PHONE = "+14155550199"
#: A French mobile: a real mobile number, outside the copy's ``allowed_countries``.
FOREIGN_PHONE = "+33612345678"
#: What ``sms.twilio`` in app.yaml needs for the SDK to reach a local fake.
BASE_URL_LINE = 'base_url: "${TWILIO_BASE_URL:-}"'
_CODE = re.compile(r"(?<![0-9])([0-9]{6})(?![0-9])")
_VERIFY_LINK = re.compile(r"http://testserver/_auth/verify\?key=[^\s<>\"')]+")


class Clock:
    """``Services.clock``: real time plus however far a test has moved it."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


@dataclass(frozen=True)
class User:
    """A signed-up user and the token of one of their sessions."""

    email: str
    id: str
    token: str


class TwoFactorApp:
    """One served copy of the reference app, the fake Twilio it texts through, and its clock."""

    def __init__(self, asgi: Any, http: httpx.AsyncClient, twilio: FakeTwilio, clock: Clock) -> None:
        self.asgi = asgi
        self.http = http
        self.twilio = twilio
        self.clock = clock

    @property
    def services(self) -> Any:
        return self.asgi.state.services

    # --- requests

    async def call(self, method: str, path: str, *, user: User | None = None, ip: str | None = None,
                   **kwargs: Any) -> httpx.Response:  # fmt: skip
        """One request, with ``user``'s session token, from ``ip`` when given."""
        if user is not None:
            kwargs["headers"] = {"Session": user.token, **kwargs.get("headers", {})}
        if ip is None:
            return await self.http.request(method, path, **kwargs)
        transport = httpx.ASGITransport(app=self.asgi, client=(ip, 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as other:
            return await other.request(method, path, **kwargs)

    async def set_phone(self, user: User, number: str) -> httpx.Response:
        """As ChangePhoneSection.js calls it: no body, the number in the query string."""
        return await self.call("POST", f"/users/set-phone?phoneNumber={quote(number, safe='')}", user=user)

    async def verify_phone(self, user: User, code: str, number: str, **extra: Any) -> httpx.Response:
        return await self.call("POST", "/users/verify-phone", user=user, json={"code": code, "phoneNumber": number, **extra})

    async def sign_in(self, email: str, password: str = PASSWORD) -> httpx.Response:
        return await self.call("POST", "/users/sign-in", json={"email": email, "password": password})

    async def verify_sign_in(self, code: str, number: str, ip: str | None = None, **extra: Any) -> httpx.Response:
        return await self.call("POST", "/user/verify-sign-in", ip=ip, json={"code": code, "phoneNumber": number, **extra})

    async def update_user(self, user: User, values: dict[str, Any], id: str | None = None) -> httpx.Response:
        """``db.model("users").object(id).update(values)`` as the Altogic client sends it."""
        body = {"values": values, "options": {"cache": "nocache", "returnTop": False}, "id": id or user.id, "model": "users"}
        return await self.call("POST", UPDATE, user=user, json=body)

    async def me(self, user: User) -> httpx.Response:
        return await self.call("GET", f"{AUTH}/user", user=user)

    async def session_count(self, user: User) -> int:
        response = await self.call("GET", f"{AUTH}/sessions", user=user)
        assert response.status_code == 200, response.text
        return len(response.json())

    # --- users

    async def signed_up(self, tag: str = "ann") -> tuple[str, dict[str, Any]]:
        """A new account whose email is not confirmed yet: (email, user)."""
        email = f"{tag}-{secrets.token_hex(4)}@example.com"
        body = {"email": email, "password": PASSWORD, "nameOrUserData": tag.title()}
        response = await self.call("POST", f"{AUTH}/signup-email", json=body)
        assert response.status_code == 200, response.text
        assert response.json()["session"] is None, "the reference app confirms email addresses"
        return email, response.json()["user"]

    async def verified_user(self, tag: str = "ann") -> User:
        """Sign up, open the link of the verification email, take the grant."""
        email, _ = await self.signed_up(tag)
        link = _VERIFY_LINK.search(await self.latest_email(email))
        assert link, "no verification link in the email"
        outcome = await self.open_link(link[0])
        assert (outcome["action"], outcome["status"]) == ("email-confirm", "200"), outcome
        granted = await self.call("GET", f"{AUTH}/grant?key={outcome['access_token']}")
        assert granted.status_code == 200, granted.text
        return User(email, granted.json()["user"]["_id"], granted.json()["session"]["token"])

    async def signed_in_again(self, user: User) -> User:
        """``user`` with a new session from the auth API (password only): fresh, as right after signing in."""
        response = await self.call("POST", f"{AUTH}/signin-email", json={"email": user.email, "password": PASSWORD})
        assert response.status_code == 200, response.text
        return User(user.email, user.id, response.json()["session"]["token"])

    async def open_link(self, link: str) -> dict[str, str]:
        """An email link's outcome, once the button of the page it shows is pressed (as a
        browser does): the query of its redirect (not followed), or its JSON."""
        response = await self.call("GET", link)
        if response.headers.get("content-type", "").startswith("text/html"):
            url, fields = link_form(response.text, str(response.url))
            response = await self.call("POST", url, data=fields)
        if not response.is_redirect:
            return response.json()
        return {name: values[0] for name, values in parse_qs(urlsplit(response.headers["location"]).query).items()}

    async def with_phone(self, user: User, number: str = PHONE) -> dict[str, Any]:
        """Set and verify ``user``'s phone through the flows; the updated user."""
        assert (await self.set_phone(user, number)).status_code == 200
        verified = await self.verify_phone(user, self.code_sent_to(number), number)
        assert verified.status_code == 200, verified.text
        return verified.json()

    async def two_factor_user(self, number: str = PHONE, tag: str = "ann") -> User:
        """A verified user with a verified phone and two-factor sign-in on."""
        user = await self.verified_user(tag)
        await self.with_phone(user, number)
        toggled = await self.update_user(user, {"twoFactorAuth": True})
        assert toggled.status_code == 200, toggled.text
        return user

    # --- what was sent and kept

    async def latest_email(self, to: str) -> str:
        """The newest email to ``to`` in the dev outbox (auth emails leave in the background)."""
        for _ in range(200):
            response = await self.call("GET", f"/_dev/outbox/email/latest?to={quote(to, safe='')}")
            if response.status_code == 200:
                return response.text
            await asyncio.sleep(0.01)
        raise AssertionError(f"no email to {to} in the outbox")

    async def emails_to(self, to: str) -> list[dict[str, Any]]:
        """Every email to ``to`` in the outbox, oldest first, once the auth emails on their way are out."""
        await self.services.auth.mailer.drain()
        return [r for r in reversed(await self.services.cache.items(outbox_key("email"))) if r.get("to") == to]

    def texts_to(self, number: str) -> list[str]:
        """The bodies of the messages the fake Twilio was asked to send to ``number``."""
        return [r["form"]["Body"] for r in self.twilio.requests if r["form"].get("To") == number]

    def code_sent_to(self, number: str) -> str:
        texts = self.texts_to(number)
        assert texts, f"no SMS to {number}"
        found = _CODE.search(texts[-1])
        assert found, f"no 6-digit code in {texts[-1]!r}"
        return found[1]

    def codes_sent(self) -> list[str]:
        return [m[1] for r in self.twilio.requests if (m := _CODE.search(r["form"].get("Body", "")))]

    async def cache_entries(self) -> list[tuple[str, Any]]:
        """Every key the app keeps in its cache (in its namespace), with its value or list."""
        cache, entries, cursor = self.services.cache, [], None
        while True:
            keys, cursor = await cache.keys("*", cursor, 500)
            for key in keys:
                try:
                    entries.append((key, await cache.get(key)))
                except FlowError:  # cache_wrong_type: a list (the outboxes), read its items instead
                    entries.append((key, await cache.items(key)))
            if cursor is None:
                return entries

    async def forget_spacing(self) -> None:
        """What waiting a minute does: the 60 s spacing between sends to a number is over."""
        keys, _ = await self.services.cache.keys("otp-spacing:*", None, 1000)
        if keys:
            await self.services.cache.delete(*keys)


def contains_code(text: str, code: str) -> bool:
    """Whether ``code`` appears in ``text`` as a whole run of digits."""
    return code in _CODE.findall(text)


def copy_app(folder: Path) -> Path:
    """The reference app's files in ``folder``, its app.yaml changed only as the module says."""
    folder.mkdir(parents=True)
    for name in ("models", "flows", "templates"):
        if (REFERENCE_APP / name).is_dir():
            shutil.copytree(REFERENCE_APP / name, folder / name)
    settings = yaml.safe_load((REFERENCE_APP / "app.yaml").read_text())
    twilio = (settings.get("sms") or {}).get("twilio") or {}
    if "TWILIO_BASE_URL" not in str(twilio.get("base_url")):
        pytest.fail(f"app.yaml cannot point the Twilio SDK at a local fake: add `{BASE_URL_LINE}` under sms.twilio")
    settings["name"] = f"twofactor-{secrets.token_hex(4)}"
    settings["sms"]["allowed_countries"] = ["US"]
    (folder / "app.yaml").write_text(yaml.safe_dump(settings, sort_keys=False))
    return folder


def environment(twilio: FakeTwilio, cache_url: str | None) -> dict[str, str]:
    """The variables app.yaml reads: Twilio (to the fake), the outbox for email, the cache."""
    return {
        "SMS_PROVIDER": "twilio", "TWILIO_ACCOUNT_SID": twilio.account_sid, "TWILIO_AUTH_TOKEN": twilio.auth_token,
        "TWILIO_FROM": TWILIO_FROM, "TWILIO_MESSAGING_SERVICE_SID": "", "TWILIO_BASE_URL": twilio.base_url,
        "EMAIL_PROVIDER": "outbox", "REDIS_URL": cache_url or "", "DATABASE_URL": "", "API_KEY": "",
    }  # fmt: skip


@pytest.fixture
def fake_twilio() -> Iterator[FakeTwilio]:
    with serve_fake_twilio() as fake:
        yield fake


@pytest.fixture
def cache_kind() -> str:
    """``memory`` unless a test is parametrized with ``on_both_caches``."""
    return "memory"


#: Runs a test on the in-process cache and on real Redis (the ``redis_url`` fixture).
on_both_caches = pytest.mark.parametrize("cache_kind", ["memory", "redis"])


@pytest.fixture
async def two_factor_app(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_twilio: FakeTwilio, cache_kind: str,
    request: pytest.FixtureRequest,
) -> AsyncIterator[TwoFactorApp]:  # fmt: skip
    cache_url = request.getfixturevalue("redis_url") if cache_kind == "redis" else None
    for name, value in environment(fake_twilio, cache_url).items():
        monkeypatch.setenv(name, value)
    asgi = build(copy_app(tmp_path / "app"), dev=True)
    clock = asgi.state.services.clock = Clock()
    async with asgi.router.lifespan_context(asgi):
        transport = httpx.ASGITransport(app=asgi, client=CLIENT)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            app = TwoFactorApp(asgi, http, fake_twilio, clock)
            try:
                yield app
            finally:
                if cache_url:
                    keys = [key for key, _ in await app.cache_entries()]
                    if keys:
                        await app.services.cache.delete(*keys)
