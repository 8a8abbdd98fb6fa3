"""The official ``altogic`` npm client (2.3.9) against a live flowengine server.

What a front end written for Altogic does, done by the real client library in Node: the
package is installed with npm from ``tests/compat/package.json`` (and its lock file) into a
folder kept for the test run, and ``tests/compat/driver.cjs`` runs client calls sent to it
one JSON line at a time, each browser with its own in-memory ``localStorage``. The server is
``flowengine.runtime.build(app, dev=True)`` under uvicorn on a loopback port, in a thread:
``tests/apps/compat_app`` twice (email confirmation on and off), and the reference app in
the repository's root for the two-factor story. Emails and SMS codes are read from the dev
outbox (``GET /_dev/outbox/email/latest?to=``); email links are opened as a browser does (the
button of the page a link shows is pressed) without following their redirect, whose query
(``action``, ``status``, ``access_token``, ``error``) is what a front end's redirect page reads.

Without node and npm these tests skip with the reason, unless ``FLOWENGINE_REQUIRE_NODE=1``
(CI sets it), which makes them fail instead.
"""

from __future__ import annotations

import base64
import json
import os
import queue
import re
import shutil
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import parse_qs, quote, urlsplit

import httpx
import pytest
import uvicorn
import yaml
from auth_harness import link_form

from flowengine.errors import SpecErrors
from flowengine.runtime import build
from flowengine.spec.app import load_app

HERE = Path(__file__).parent
COMPAT = HERE / "compat"
COMPAT_APP = HERE / "apps" / "compat_app"
REFERENCE_APP = HERE.parent
CLIENT_KEY = "compat-client-key"
REQUIRE_NODE = "FLOWENGINE_REQUIRE_NODE"
PASSWORD = "correct horse 1"
NEW_PASSWORD = "battery staple 2"
PHONE = "+14155552671"
#: An 8x8 PNG, as a profile photo.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAgAAAAICAIAAABLbSncAAAAEklEQVR4nGP4z8CAFWEXHbQSACj/P8Fu7N9hAAAAAElFTkSuQmCC"
)


def unavailable(reason: str) -> None:
    if os.environ.get(REQUIRE_NODE) == "1":
        pytest.fail(f"{reason}, and {REQUIRE_NODE}=1 makes the Altogic client tests required")
    pytest.skip(reason)


# --- the client library, installed once per run ---------------------------------------------------


@pytest.fixture(scope="session")
def client_library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with the driver and ``node_modules/altogic``, installed by npm for this run."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        unavailable("node and npm are needed to run the official altogic client")
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True).stdout.strip()
    if int(version.lstrip("v").split(".")[0]) < 20:
        unavailable(f"node {version} is too old: the driver needs Node 20 (fetch, FormData, File)")
    folder = tmp_path_factory.mktemp("altogic-client")
    for name in ("package.json", "package-lock.json", "driver.cjs"):
        shutil.copy(COMPAT / name, folder / name)
    try:
        done = subprocess.run([npm, "install", "--no-audit", "--no-fund"], cwd=folder, capture_output=True,
                              text=True, timeout=300, check=False)  # fmt: skip
    except subprocess.TimeoutExpired:
        unavailable("npm install of the altogic client took more than 5 minutes")
    if done.returncode != 0:
        unavailable(f"npm install of the altogic client failed: {done.stderr.strip()[-500:]}")
    return folder


# --- servers ----------------------------------------------------------------------------------------


class Server:
    """An app served by uvicorn on a free loopback port, in a thread of this process."""

    def __init__(self, app_dir: Path) -> None:
        asgi = build(app_dir, dev=True)
        asgi.state.services.auth.passwords.cost = 4  # bcrypt's lowest, for speed (app.yaml may not go below 10)
        self.server = uvicorn.Server(uvicorn.Config(asgi, host="127.0.0.1", port=0, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, name=f"uvicorn {app_dir.name}", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the server for {app_dir} did not start")
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self.http = httpx.Client(base_url=self.url, timeout=10)

    def stop(self) -> None:
        self.http.close()
        self.server.should_exit = True
        self.thread.join(timeout=10)

    def latest(self, channel: str, to: str) -> str | None:
        response = self.http.get(f"/_dev/outbox/{channel}/latest?to={quote(to, safe='')}")
        return response.text if response.status_code == 200 else None

    def next_message(self, channel: str, to: str, after: str | None = None) -> str:
        """The newest email or SMS to ``to`` once it differs from ``after`` (waits up to 5 s)."""
        deadline = time.monotonic() + 5
        while True:
            text = self.latest(channel, to)
            if text is not None and text != after:
                return text
            if time.monotonic() > deadline:
                raise AssertionError(f"no new {channel} to {to} in the outbox")
            time.sleep(0.05)

    def follow(self, link: str) -> dict[str, str]:
        """Open an email's link and press the button of the page it shows: the query of the page
        it then redirects to (``action``, ``status``, ``access_token``, ``error``), or the same
        as JSON when the app has no redirect URL."""
        response = self.http.get(link, follow_redirects=False)
        if response.headers.get("content-type", "").startswith("text/html"):
            url, fields = link_form(response.text, str(response.url))
            response = self.http.post(url, data=fields, follow_redirects=False)
        if not response.is_redirect:
            assert response.headers["content-type"] == "application/json", f"{link}: {response.text}"
            return response.json()
        query = parse_qs(urlsplit(response.headers["location"]).query)
        return {name: values[0] for name, values in query.items()}


def serve_copy(source: Path, folder: Path, auth: dict[str, Any] | None = None) -> Server:
    """Serve a copy of an app folder (its data stays in the copy), with ``auth`` settings changed."""
    shutil.copytree(source, folder, ignore=shutil.ignore_patterns("data", "__pycache__"))
    if auth:
        settings = yaml.safe_load((folder / "app.yaml").read_text())
        settings["auth"] = {**settings.get("auth", {}), **auth}
        (folder / "app.yaml").write_text(yaml.safe_dump(settings, sort_keys=False))
    return Server(folder)


@pytest.fixture(scope="session")
def confirming(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The compat app with email confirmation on: sign-up answers ``{user, session: null}``."""
    server = serve_copy(COMPAT_APP, tmp_path_factory.mktemp("confirming") / "app", {"confirm_email": True})
    yield server
    server.stop()


@pytest.fixture(scope="session")
def direct(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The compat app with email confirmation off: sign-up signs in at once."""
    server = serve_copy(COMPAT_APP, tmp_path_factory.mktemp("direct") / "app", {"confirm_email": False})
    yield server
    server.stop()


# --- browsers: clients of the official library ------------------------------------------------------


@dataclass
class Answer:
    """What one client call gave, and what the client kept in its localStorage after it.

    ``result`` is what the method returned: ``{data, errors}`` for ``endpoint`` and ``db``
    calls, the auth methods' own shapes (``{user, session, errors}``, ``{sessions, errors}``,
    ``{user, errors}``, ``{errors}``), or a local method's value (``getSession``). ``data`` is
    ``result.data`` where there is one, else the result without ``errors``.
    """

    result: Any
    session: dict[str, Any] | None
    user: dict[str, Any] | None

    @property
    def errors(self) -> dict[str, Any] | None:
        return self.result.get("errors") if isinstance(self.result, dict) else None

    @property
    def data(self) -> Any:
        if not isinstance(self.result, dict):
            return self.result
        if "data" in self.result:
            return self.result["data"]
        return {key: value for key, value in self.result.items() if key != "errors"}

    @property
    def ok(self) -> Any:
        assert self.errors is None, f"the call failed: {self.errors}"
        return self.data

    def error(self, status: int) -> dict[str, Any]:
        """The first error item, after checking the status the client saw."""
        assert self.errors is not None, f"the call succeeded with {self.data!r}"
        assert self.errors["status"] == status, self.errors
        return self.errors["items"][0]


class Driver:
    """One ``node driver.cjs`` process; browsers send it their calls."""

    def __init__(self, library: Path, server: Server) -> None:
        self.process = subprocess.Popen(
            ["node", str(library / "driver.cjs"), server.url, CLIENT_KEY],
            cwd=library, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)
        self.lines.put("")

    def send(self, command: dict[str, Any]) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        try:
            line = self.lines.get(timeout=60)
        except queue.Empty:
            raise AssertionError(f"the driver did not answer {command}") from None
        if not line:
            raise AssertionError(f"the driver died: {self.stop()}")
        return json.loads(line)

    def stop(self) -> str:
        self.process.kill()
        _, errors = self.process.communicate(timeout=10)
        return errors


class Browser:
    """One client of the official library, as one browser holds it."""

    def __init__(self, driver: Driver, name: str, client_key: str | None = None) -> None:
        self.driver, self.name, self.client_key = driver, name, client_key
        self.auth = Calls(self, ["auth"])
        self.endpoint = Calls(self, ["endpoint"])
        self.storage = Calls(self, ["storage"])

    def call(self, steps: list[Any], *args: Any) -> Answer:
        command = {"client": self.name, "clientKey": self.client_key, "call": steps, "args": list(args)}
        answer = self.driver.send(command)
        assert not answer.get("hung"), f"{steps}{args} never settled (an error body that is not JSON?)"
        assert "threw" not in answer, f"{steps}{args} threw: {answer['threw']}"
        return Answer(answer["result"], answer["local"]["session"], answer["local"]["user"])

    def object(self, model: str, id: str) -> Calls:
        """``db.model(model).object(id)``."""
        return Calls(self, ["db", ["model", model], ["object", id]])

    def bucket(self, name: str) -> Calls:
        """``storage.bucket(name)``."""
        return Calls(self, ["storage", ["bucket", name]])


class Calls:
    """``browser.auth.signInWithEmail(...)`` → the client's ``auth.signInWithEmail(...)``."""

    def __init__(self, browser: Browser, steps: list[Any]) -> None:
        self.browser, self.steps = browser, steps

    def __getattr__(self, method: str) -> Any:
        return lambda *args: self.browser.call([*self.steps, method], *args)


class Browsers:
    """Opens browsers on servers; one driver process per server, stopped after the test."""

    def __init__(self, library: Path) -> None:
        self.library = library
        self.drivers: dict[str, Driver] = {}

    def __call__(self, server: Server, name: str = "laptop", client_key: str | None = None) -> Browser:
        if server.url not in self.drivers:
            self.drivers[server.url] = Driver(self.library, server)
        return Browser(self.drivers[server.url], name, client_key)

    def close(self) -> None:
        for driver in self.drivers.values():
            driver.stop()


@pytest.fixture
def open_browser(client_library: Path) -> Iterator[Browsers]:
    browsers = Browsers(client_library)
    yield browsers
    browsers.close()


# --- helpers -----------------------------------------------------------------------------------------


def new_email(tag: str = "user") -> str:
    return f"{tag}-{uuid.uuid4().hex[:10]}@example.com"


def link_in(text: str, server: Server) -> str:
    """The link to this server in an email."""
    links = [link for link in re.findall(r"https?://[^\s<>\"')]+", text) if link.startswith(server.url)]
    assert links, f"no link to {server.url} in:\n{text}"
    return links[0]


def sign_up(browser: Browser, server: Server, email: str | None = None, name: Any = "Ada") -> tuple[str, dict]:
    """A signed-in user with a confirmed address, on either server; returns (email, user)."""
    email = email or new_email()
    answer = browser.auth.signUpWithEmail(email, PASSWORD, name)
    if answer.ok["session"] is None:
        redirect = server.follow(link_in(server.next_message("email", email), server))
        assert (redirect["action"], redirect["status"]) == ("email-confirm", "200"), redirect
        answer = browser.auth.getAuthGrant(redirect["access_token"])
    return email, answer.ok["user"]


def token_of(browser: Browser) -> str:
    """The session token the client keeps (``auth.getSession()``)."""
    return browser.auth.getSession().result["token"]


def signed_in(browser: Browser) -> bool:
    answer = browser.auth.getUserFromDB()
    return answer.errors is None


# --- sign up, sign in, sessions ----------------------------------------------------------------------


def test_sign_up_without_confirmation_signs_in(open_browser: Browsers, direct: Server) -> None:
    laptop = open_browser(direct)
    email = new_email()
    answer = laptop.auth.signUpWithEmail(email, PASSWORD, "Ada")
    user, session = answer.ok["user"], answer.ok["session"]
    assert (user["email"], user["name"]) == (email, "Ada") and "password" not in user
    assert session["token"] and session["userId"] == user["_id"]
    assert (answer.session, answer.user) == (session, user)  # kept like a browser keeps them
    assert laptop.auth.getUserFromDB().ok["user"]["_id"] == user["_id"]


def test_sign_up_takes_extra_user_fields(open_browser: Browsers, direct: Server) -> None:
    answer = open_browser(direct).auth.signUpWithEmail(new_email(), PASSWORD, {"name": "Ada", "profilePicture": "p"})
    assert (answer.ok["user"]["name"], answer.ok["user"]["profilePicture"]) == ("Ada", "p")


def test_sign_up_with_confirmation_waits_for_the_link(open_browser: Browsers, confirming: Server) -> None:
    laptop, phone = open_browser(confirming), open_browser(confirming, "phone")
    email = new_email()
    answer = laptop.auth.signUpWithEmail(email, PASSWORD, "Ada")
    assert answer.ok["session"] is None and answer.ok["user"]["email"] == email
    assert answer.session is None
    assert laptop.auth.signInWithEmail(email, PASSWORD).errors is not None  # not confirmed yet
    link = link_in(confirming.next_message("email", email), confirming)
    redirect = confirming.follow(link)
    assert (redirect["action"], redirect["status"]) == ("email-confirm", "200") and "error" not in redirect
    granted = phone.auth.getAuthGrant(redirect["access_token"])
    assert granted.ok["user"]["email"] == email and granted.ok["user"]["emailVerified"] is True
    assert granted.session == granted.ok["session"] and signed_in(phone)
    again = confirming.follow(link)
    assert (again["action"], again["status"]) == ("email-confirm", "400") and again["error"]
    assert open_browser(confirming, "thief").auth.getAuthGrant(redirect["access_token"]).errors is not None
    assert laptop.auth.signInWithEmail(email, PASSWORD).ok["user"]["email"] == email


#: What the example apps' Sign-in.js compares to offer "Resend the verification mail".
NOT_VERIFIED = "The email address has not been verified yet."


def test_signing_in_before_confirming_says_what_the_apps_look_for(open_browser: Browsers, confirming: Server) -> None:
    laptop = open_browser(confirming)
    email = new_email()
    assert laptop.auth.signUpWithEmail(email, PASSWORD, "Ada").errors is None
    answer = laptop.auth.signInWithEmail(email, PASSWORD)
    assert answer.errors is not None and answer.errors["items"][0]["message"] == NOT_VERIFIED


def test_sign_in(open_browser: Browsers, direct: Server) -> None:
    email, user = sign_up(open_browser(direct), direct)
    phone = open_browser(direct, "phone")
    answer = phone.auth.signInWithEmail(email, PASSWORD)
    assert answer.ok["user"]["_id"] == user["_id"] and answer.ok["session"]["token"]
    assert (answer.session, answer.user) == (answer.ok["session"], answer.ok["user"])
    assert phone.auth.getUserFromDB().ok["user"]["email"] == email


def test_sign_in_failures_look_alike(open_browser: Browsers, direct: Server) -> None:
    email, _ = sign_up(open_browser(direct), direct)
    phone = open_browser(direct, "phone")
    wrong = phone.auth.signInWithEmail(email, "not the password")
    unknown = phone.auth.signInWithEmail(new_email(), "not the password")
    assert wrong.errors == unknown.errors and wrong.errors["status"] in (400, 401)
    assert isinstance(wrong.errors["items"][0]["message"], str) and wrong.session is None


def test_every_device_is_a_session(open_browser: Browsers, direct: Server) -> None:
    laptop, phone = open_browser(direct), open_browser(direct, "phone")
    email, user = sign_up(laptop, direct)
    assert phone.auth.signInWithEmail(email, PASSWORD).errors is None
    sessions = laptop.auth.getAllSessions().ok["sessions"]
    assert len(sessions) == 2 and token_of(laptop) in [s["token"] for s in sessions]
    for session in sessions:
        assert session["userId"] == user["_id"] and session["creationDtm"] and session["token"]
        assert isinstance(session["userAgent"], dict) and "family" in session["userAgent"]


def test_sign_out_another_session(open_browser: Browsers, direct: Server) -> None:
    """As SessionListItem.js does: ``signOut(session.token)`` with a token from getAllSessions."""
    laptop, phone = open_browser(direct), open_browser(direct, "phone")
    email, _ = sign_up(laptop, direct)
    assert phone.auth.signInWithEmail(email, PASSWORD).errors is None
    listed = laptop.auth.getAllSessions().ok["sessions"]
    [other] = [s["token"] for s in listed if s["token"] != token_of(laptop)]
    assert laptop.auth.signOut(other).errors is None
    assert laptop.auth.getSession().result is not None and signed_in(laptop)
    refused = phone.auth.getUserFromDB()
    assert refused.error(401)["code"] == "invalid_session_token"
    assert (refused.session, refused.user) == (None, None)  # the client dropped its session
    assert [s["token"] for s in laptop.auth.getAllSessions().ok["sessions"]] == [token_of(laptop)]


def test_sign_out_own_session(open_browser: Browsers, direct: Server) -> None:
    laptop = open_browser(direct)
    sign_up(laptop, direct)
    token = token_of(laptop)
    answer = laptop.auth.signOut()
    assert answer.errors is None and (answer.session, answer.user) == (None, None)
    replay = open_browser(direct, "replay")
    replay.auth.setSession({"token": token})
    assert replay.auth.getUserFromDB().error(401)["code"] == "invalid_session_token"


def test_sign_out_all(open_browser: Browsers, direct: Server) -> None:
    laptop, phone = open_browser(direct), open_browser(direct, "phone")
    email, _ = sign_up(laptop, direct)
    assert phone.auth.signInWithEmail(email, PASSWORD).errors is None
    answer = laptop.auth.signOutAll()
    assert answer.errors is None and answer.session is None
    assert phone.auth.getUserFromDB().error(401)["code"] == "invalid_session_token"


def test_sign_out_all_except_current(open_browser: Browsers, direct: Server) -> None:
    laptop, phone = open_browser(direct), open_browser(direct, "phone")
    email, _ = sign_up(laptop, direct)
    assert phone.auth.signInWithEmail(email, PASSWORD).errors is None
    assert laptop.auth.signOutAllExceptCurrent().errors is None
    assert signed_in(laptop)
    assert phone.auth.getUserFromDB().error(401)["code"] == "invalid_session_token"


def test_a_stale_session_is_dropped_by_the_client(open_browser: Browsers, direct: Server) -> None:
    laptop = open_browser(direct)
    laptop.auth.setSession({"token": "no-such-session"})
    laptop.auth.setUser({"_id": "x"})
    answer = laptop.auth.getUserFromDB()
    assert answer.error(401)["code"] == "invalid_session_token"
    assert (answer.session, answer.user) == (None, None)


def test_without_a_session_the_code_is_missing_session_token(open_browser: Browsers, direct: Server) -> None:
    answer = open_browser(direct).auth.getAllSessions()
    assert answer.error(401)["code"] == "missing_session_token"


def test_a_wrong_client_key_is_refused(open_browser: Browsers, direct: Server) -> None:
    stranger = open_browser(direct, "stranger", client_key="not-our-key")
    assert stranger.auth.signInWithEmail(new_email(), PASSWORD).error(401)["code"] == "invalid_client_key"


# --- passwords ---------------------------------------------------------------------------------------


def test_change_password(open_browser: Browsers, direct: Server) -> None:
    laptop, phone = open_browser(direct), open_browser(direct, "phone")
    email, _ = sign_up(laptop, direct)
    assert phone.auth.signInWithEmail(email, PASSWORD).errors is None
    assert laptop.auth.changePassword(NEW_PASSWORD, "not the password").errors is not None
    assert laptop.auth.changePassword(NEW_PASSWORD, PASSWORD).errors is None
    assert signed_in(laptop)
    assert phone.auth.getUserFromDB().error(401)["code"] == "invalid_session_token"  # other sessions end
    stranger = open_browser(direct, "stranger")
    assert stranger.auth.signInWithEmail(email, PASSWORD).errors is not None
    assert stranger.auth.signInWithEmail(email, NEW_PASSWORD).ok["user"]["email"] == email


def test_reset_password_with_the_emailed_token(open_browser: Browsers, confirming: Server) -> None:
    laptop, phone = open_browser(confirming), open_browser(confirming, "phone")
    email, _ = sign_up(laptop, confirming)
    before = confirming.latest("email", email)
    assert phone.auth.sendResetPwdEmail(email).errors is None
    redirect = confirming.follow(link_in(confirming.next_message("email", email, before), confirming))
    assert (redirect["action"], redirect["status"]) == ("reset-pwd", "200"), redirect
    assert phone.auth.resetPwdWithToken(redirect["access_token"], NEW_PASSWORD).errors is None
    assert phone.auth.resetPwdWithToken(redirect["access_token"], "third password 3").errors is not None
    assert phone.auth.signInWithEmail(email, PASSWORD).errors is not None
    assert phone.auth.signInWithEmail(email, NEW_PASSWORD).ok["user"]["email"] == email
    assert laptop.auth.getUserFromDB().error(401)["code"] == "invalid_session_token"  # a reset ends sessions


# --- emails: resend, magic link, change of address, and addresses with '+' ---------------------------


def test_resend_the_verification_email(open_browser: Browsers, confirming: Server) -> None:
    laptop = open_browser(confirming)
    email = new_email()
    assert laptop.auth.signUpWithEmail(email, PASSWORD, "Ada").errors is None
    first = confirming.next_message("email", email)
    assert laptop.auth.resendVerificationEmail(email).errors is None
    second = confirming.next_message("email", email, first)
    redirect = confirming.follow(link_in(second, confirming))
    assert (redirect["action"], redirect["status"]) == ("email-confirm", "200"), redirect
    assert laptop.auth.getAuthGrant(redirect["access_token"]).ok["user"]["emailVerified"] is True
    unknown = laptop.auth.resendVerificationEmail(new_email())
    assert unknown.errors is None  # the same answer as for a real address: no enumeration


def test_magic_link_signs_in(open_browser: Browsers, confirming: Server) -> None:
    laptop, phone = open_browser(confirming), open_browser(confirming, "phone")
    email, user = sign_up(laptop, confirming)
    before = confirming.latest("email", email)
    assert phone.auth.sendMagicLinkEmail(email).errors is None
    link = link_in(confirming.next_message("email", email, before), confirming)
    redirect = confirming.follow(link)
    assert (redirect["action"], redirect["status"]) == ("magic-link", "200"), redirect
    granted = phone.auth.getAuthGrant(redirect["access_token"])
    assert granted.ok["user"]["_id"] == user["_id"] and granted.session == granted.ok["session"]
    assert phone.auth.getUserFromDB().ok["user"]["email"] == email
    again = confirming.follow(link)
    assert (again["action"], again["status"]) == ("magic-link", "400") and again["error"]
    assert phone.auth.sendMagicLinkEmail(new_email()).errors is None  # unknown address: same answer


def test_an_address_with_a_plus_is_not_a_space(open_browser: Browsers, confirming: Server) -> None:
    """The client leaves ``email`` unencoded in query strings: ``?email=ada+tag@...``."""
    laptop = open_browser(confirming)
    email = f"ada+{uuid.uuid4().hex[:10]}@example.com"
    assert laptop.auth.signUpWithEmail(email, PASSWORD, "Ada").errors is None
    first = confirming.next_message("email", email)
    assert laptop.auth.resendVerificationEmail(email).errors is None
    second = confirming.next_message("email", email, first)
    redirect = confirming.follow(link_in(second, confirming))
    assert laptop.auth.getAuthGrant(redirect["access_token"]).ok["user"]["email"] == email
    for send in (laptop.auth.sendMagicLinkEmail, laptop.auth.sendResetPwdEmail):
        before = confirming.latest("email", email)
        assert send(email).errors is None
        confirming.next_message("email", email, before)


def test_change_email_after_confirming_the_new_address(open_browser: Browsers, confirming: Server) -> None:
    laptop = open_browser(confirming)
    email, user = sign_up(laptop, confirming)
    new = new_email("moved")
    assert laptop.auth.changeEmail("not the password", new).errors is not None
    pending = laptop.auth.changeEmail(PASSWORD, new).ok["user"]
    assert pending["_id"] == user["_id"] and pending["email"] == email  # unchanged until confirmed
    redirect = confirming.follow(link_in(confirming.next_message("email", new), confirming))
    assert (redirect["action"], redirect["status"]) == ("change-email", "200"), redirect
    assert "access_token" not in redirect
    assert laptop.auth.getUserFromDB().ok["user"]["email"] == new
    assert open_browser(confirming, "phone").auth.signInWithEmail(new, PASSWORD).ok["user"]["_id"] == user["_id"]


def test_change_email_without_confirmation(open_browser: Browsers, direct: Server) -> None:
    laptop = open_browser(direct)
    _, user = sign_up(laptop, direct)
    new = new_email("moved")
    assert laptop.auth.changeEmail(PASSWORD, new).ok["user"]["_id"] == user["_id"]
    assert laptop.auth.getUserFromDB().ok["user"]["email"] == new


# --- data and storage, as the profile page uses them ---------------------------------------------------


def test_the_profile_page_updates_its_user(open_browser: Browsers, direct: Server) -> None:
    laptop = open_browser(direct)
    _, user = sign_up(laptop, direct, name={"name": "Ada", "profilePicture": "https://x/p.png"})
    me = laptop.object("users", user["_id"])
    assert me.update({"name": "Ada Lovelace"}).ok["name"] == "Ada Lovelace"
    assert me.updateFields([{"field": "profilePicture", "updateType": "unset"}]).ok.get("profilePicture") is None
    stored = laptop.auth.getUserFromDB().ok["user"]
    assert stored["name"] == "Ada Lovelace" and stored.get("profilePicture") is None
    assert me.update({"email": "evil@example.com"}).error(400)["details"]["field"] == "email"
    _, other = sign_up(open_browser(direct, "other"), direct)
    assert laptop.object("users", other["_id"]).update({"name": "Mallory"}).error(403)["code"] == "not_owner"


def test_the_profile_photo_is_uploaded_and_deleted(open_browser: Browsers, direct: Server) -> None:
    laptop = open_browser(direct)
    _, user = sign_up(laptop, direct)
    photo = {"$file": {"base64": base64.b64encode(PNG).decode(), "name": "photo.png", "type": "image/png"}}
    uploaded = laptop.bucket("profilePictures").upload("photo" + user["_id"], photo, {"createBucket": True}).ok
    served = direct.http.get(uploaded["publicPath"])
    assert served.status_code == 200 and served.content == PNG and served.headers["content-type"] == "image/png"
    me = laptop.object("users", user["_id"])
    assert me.update({"profilePicture": uploaded["publicPath"]}).ok["profilePicture"] == uploaded["publicPath"]
    assert laptop.storage.deleteFile(uploaded["publicPath"]).errors is None
    assert direct.http.get(uploaded["publicPath"]).status_code == 404


# --- the two-factor tutorial app, through endpoint.post as it calls it ----------------------------------

TWO_FACTOR_ROUTES = {("POST", "/users/set-phone"), ("POST", "/users/verify-phone"), ("POST", "/users/sign-in"),
                     ("POST", "/user/verify-sign-in")}  # fmt: skip


@pytest.fixture(scope="session")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The repository's own app (tutorial 3), served from a copy of its files."""
    try:
        flows = load_app(REFERENCE_APP).flows.values()
    except SpecErrors as exc:  # its own tests report this; here it only means "not ready"
        pytest.skip(f"the reference app does not load yet (issue #6): {exc.errors[0]}")
    served = {(e.method, e.path) for flow in flows for e in flow.endpoints}
    missing = sorted(f"{method} {path}" for method, path in TWO_FACTOR_ROUTES - served)
    if missing:
        pytest.skip(f"the reference app does not serve {', '.join(missing)} yet (issue #6)")
    folder = tmp_path_factory.mktemp("reference") / "app"
    folder.mkdir()
    for name in ("app.yaml", "models", "flows", "templates"):
        source = REFERENCE_APP / name
        if source.is_dir():
            shutil.copytree(source, folder / name)
        elif source.is_file():
            shutil.copy(source, folder / name)
    server = Server(folder)
    yield server
    server.stop()


def sms_code(server: Server, to: str, after: str | None = None) -> tuple[str, str]:
    text = server.next_message("sms", to, after)
    match = re.search(r"\b(\d{6})\b", text)
    assert match, f"no 6-digit code in the SMS: {text}"
    return match[1], text


def test_the_two_factor_story(open_browser: Browsers, reference: Server) -> None:
    laptop, phone = open_browser(reference), open_browser(reference, "phone")
    email, user = sign_up(laptop, reference)
    me = laptop.object("users", user["_id"])
    assert me.update({"twoFactorAuth": True}).errors is not None  # no verified phone yet
    # ChangePhoneSection.js: a null body, the number in the query string.
    assert laptop.endpoint.post("/users/set-phone", None, {"phoneNumber": PHONE}).errors is None
    code, sms = sms_code(reference, PHONE)
    # change-phone-verification.js: the code as typed (text); userId is undefined, so not sent.
    verified = laptop.endpoint.post("/users/verify-phone", {"code": code, "phoneNumber": PHONE}).ok
    assert verified["_id"] == user["_id"] and (verified["phone"], verified["phoneVerified"]) == (PHONE, True)
    assert me.update({"twoFactorAuth": True}).ok["twoFactorAuth"] is True  # Toggle2FA.js
    # Sign-in.js: no `user` in the answer means a code was sent to `phone`.
    challenged = phone.endpoint.post("/users/sign-in", {"email": email, "password": PASSWORD}).ok
    assert "user" not in challenged and "session" not in challenged and challenged["phone"]
    code, _ = sms_code(reference, PHONE, sms)
    # sign-in-verification.js
    done = phone.endpoint.post("/user/verify-sign-in", {"code": code, "phoneNumber": challenged["phone"]}).ok
    assert done["session"]["token"] and done["found"]["_id"] == user["_id"]
    phone.auth.setSession(done["session"])
    phone.auth.setUser(done["found"])
    assert phone.auth.getUserFromDB().ok["user"]["_id"] == user["_id"]
    assert me.update({"twoFactorAuth": False}).ok["twoFactorAuth"] is False
    direct_sign_in = open_browser(reference, "tablet").endpoint.post("/users/sign-in",
                                                                       {"email": email, "password": PASSWORD}).ok  # fmt: skip
    assert direct_sign_in["user"]["_id"] == user["_id"] and direct_sign_in["session"]["token"]
