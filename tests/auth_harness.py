"""What the auth suites share: the test app built as the runtime builds it, a real SMTP
server on loopback, a clock tests can move, and the cache on both backends.

``auth_apps`` is a factory fixture: ``await auth_apps(confirm_email=False, ...)`` copies
``tests/apps/auth_app`` to a temporary folder, writes its ``app.yaml`` (auth settings from
the keyword arguments), loads it, opens its services (SQLite in the folder, the cache the
``cache_url`` fixture names, SMTP to the loopback server), starts them and returns an
``AuthApp`` with an HTTP client over the ASGI app. Redis keys of the run are deleted after.
bcrypt runs at ``cost`` (default 4, bcrypt's lowest), set in code: app.yaml may not go
below 10.
"""

from __future__ import annotations

import secrets
import shutil
import time
from dataclasses import dataclass, field, replace
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, AsyncIterator, Iterator
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx
import pytest
import yaml

import smtp_server
from flowengine.context import Services
from flowengine.runtime import assemble, open_services, start_services
from flowengine.spec.app import load_app

TEMPLATE = Path(__file__).parent / "apps" / "auth_app"
API = "/_api/rest/v1/auth"
REDIRECT = "https://front.test/auth-redirect"
PASSWORD = "correct horse battery"
API_KEY = "server-side-api-key"
CHROME = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"
IPHONE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 16_5 like Mac OS X) AppleWebKit/605.1.15 "
          "(KHTML, like Gecko) Version/16.5 Mobile/15E148 Safari/604.1")  # fmt: skip
#: A Redis URL nothing listens on: the cache is down.
UNREACHABLE = "redis://127.0.0.1:1/"
#: bcrypt's lowest cost, for speed: a test checks what a hash matches, not how long it took.
TEST_COST = 4
#: Generous limits for scenario tests; the limit tests set their own.
OPEN_LIMITS = {name: {"limit": 100_000, "window": "1h"}
               for name in ("signin_ip", "signin_account", "signup_ip", "email_address", "email_spacing", "email_ip")}  # fmt: skip


class Clock:
    """``Services.clock`` that tests move forward instead of sleeping."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class AuthApp:
    """One served test app: its services, an HTTP client, the inbox its emails land in."""

    folder: Path
    services: Services
    http: httpx.AsyncClient
    inbox: smtp_server.Inbox
    clock: Clock
    asgi: Any = None
    responses: list[httpx.Response] = field(default_factory=list)

    @property
    def auth(self) -> Any:
        return self.services.auth

    async def call(self, method: str, path: str, *, ip: str | None = None, **kwargs: Any) -> httpx.Response:
        """One request, from the default client address or from ``ip``."""
        url = path if path.startswith(("/", "http")) else f"{API}/{path}"
        if ip is None:
            response = await self.http.request(method, url, **kwargs)
        else:
            transport = httpx.ASGITransport(app=self.asgi, client=(ip, 50000))
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as other:
                response = await other.request(method, url, **kwargs)
        self.responses.append(response)
        return response

    async def sign_up(self, email: str, password: str = PASSWORD, profile: Any = "Ann", **kwargs: Any) -> httpx.Response:
        return await self.call("POST", "signup-email", json={"email": email, "password": password, "nameOrUserData": profile}, **kwargs)

    async def sign_in(self, email: str, password: str = PASSWORD, **kwargs: Any) -> httpx.Response:
        return await self.call("POST", "signin-email", json={"email": email, "password": password}, **kwargs)

    async def follow(self, link: str) -> dict[str, str]:
        """Open an email's link as a browser does, pressing the button of the page it shows
        (a POST); the query of the redirect that answers (not followed)."""
        response = await self.call("GET", link)
        if response.status_code == 200:
            url, fields = link_form(response.text, str(response.url))
            response = await self.call("POST", url, data=fields)
            assert response.status_code == 303, response.text
        else:  # a reset link redeems nothing: it redirects at once
            assert response.status_code == 302, response.text
        location = response.headers["location"]
        assert location.startswith(REDIRECT + "?"), location
        return {name: values[0] for name, values in parse_qs(urlsplit(location).query).items()}

    async def confirmed_user(self, email: str, password: str = PASSWORD, **kwargs: Any) -> dict[str, Any]:
        """Sign up, follow the verification link, take the grant: ``{user, session}``."""
        answer = (await self.sign_up(email, password, **kwargs)).json()
        if answer["session"] is not None:
            return answer
        redirect = await self.follow((await self.inbox.wait_for(email)).link)
        assert (redirect["status"], redirect["action"]) == ("200", "email-confirm"), redirect
        response = await self.call("GET", f"grant?key={redirect['access_token']}")
        assert response.status_code == 200, response.text
        return response.json()

    async def stored_user(self, email: str) -> dict[str, Any]:
        """The users row with its sealed password (the hash itself in ``password._digest``)."""
        return await self.auth.find_user(email, sealed=True)


def write_app(folder: Path, name: str, smtp_port: int, cache: str | None, **auth: Any) -> Path:
    """Copy the test app and write its app.yaml; ``auth`` keys override the test defaults."""
    shutil.copytree(TEMPLATE, folder)
    settings = {
        "name": name,
        "env": {"brand": "Test Brand"},
        "api_keys": [API_KEY],
        "cache": {"url": cache or ""},
        "email": {"provider": "smtp", "from": "Auth Test <no-reply@auth.test>",
                  "smtp": {"host": "127.0.0.1", "port": smtp_port, "security": "none", "timeout": 5}},
        "auth": {"redirect_url": REDIRECT, "base_url": "http://testserver", "rate_limits": OPEN_LIMITS},
    }  # fmt: skip
    extra = auth.pop("settings", {})
    settings["auth"].update(auth)
    settings.update(extra)
    (folder / "app.yaml").write_text(yaml.safe_dump(settings, sort_keys=False))
    return folder


@pytest.fixture
def smtp_inbox() -> Iterator[tuple[smtp_server.Inbox, int]]:
    yield from smtp_server.serve()


@pytest.fixture(params=["memory", "redis"])
def cache_url(request: pytest.FixtureRequest) -> str | None:
    """Each test that uses it runs on the in-process cache and on real Redis."""
    return None if request.param == "memory" else request.getfixturevalue("redis_url")


@pytest.fixture
async def auth_apps(tmp_path: Path, smtp_inbox: tuple[smtp_server.Inbox, int], cache_url: str | None) -> AsyncIterator[Any]:
    inbox, port = smtp_inbox
    opened: list[AuthApp] = []

    async def start(client: tuple[str, int] = ("203.0.113.7", 50000), cost: int = TEST_COST, **auth: Any) -> AuthApp:
        name = f"auth-{secrets.token_hex(4)}"
        folder = write_app(tmp_path / name, name, port, cache_url, **auth)
        app = load_app(folder)
        app = replace(app, auth=replace(app.auth, bcrypt_cost=cost))
        services = open_services(app)
        clock = services.clock = Clock()
        await start_services(services)
        asgi = assemble(app, services)
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi, client=client), base_url="http://testserver")
        opened.append(AuthApp(folder, services, http, inbox, clock, asgi))
        return opened[-1]

    yield start
    for served in opened:
        await served.http.aclose()
        await served.auth.close()
        if cache_url and not cache_url.startswith(UNREACHABLE):
            await _forget_keys(served.services.cache)
        await served.services.close()


async def _forget_keys(cache: Any) -> None:
    cursor = None
    while True:
        keys, cursor = await cache.keys("*", cursor, 500)
        if keys:
            await cache.delete(*keys)
        if cursor is None:
            return


class _Forms(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: list[tuple[str, str, dict[str, str]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "form":
            self.forms.append(((found.get("method") or "get").lower(), found.get("action") or "", {}))
        elif tag == "input" and self.forms and found.get("name"):
            self.forms[-1][2][found["name"] or ""] = found.get("value") or ""


def link_form(page: str, url: str) -> tuple[str, dict[str, str]]:
    """What pressing the one button of an email link's page sends: the URL it POSTs to, and the fields."""
    parser = _Forms()
    parser.feed(page)
    assert len(parser.forms) == 1 and parser.forms[0][0] == "post", page
    _, action, fields = parser.forms[0]
    return urljoin(url, action), fields


def errors_of(response: httpx.Response) -> list[tuple[str, str]]:
    """(code, origin) of each error item, after checking the Altogic error shape."""
    items = response.json()["errors"]
    assert all({"origin", "code", "message"} <= set(item) for item in items), items
    return [(item["code"], item["origin"]) for item in items]


def new_email(tag: str = "ann") -> str:
    return f"{tag}-{secrets.token_hex(4)}@example.com"
