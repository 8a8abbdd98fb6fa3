"""Email: SMTP against a real server on loopback (aiosmtpd), the outbox, and send-email."""

from __future__ import annotations

import asyncio
import email
import email.policy
import socket
from email.utils import parsedate_to_datetime

import textwrap

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from starlette.applications import Starlette
from starlette.testclient import TestClient

from flowengine.cache import open_cache
from flowengine.context import RunContext, Services
from flowengine.errors import FlowError, SpecErrors
from flowengine.interpreter import run_flow
from flowengine.spec.app import load_app
from flowengine.messaging.email import compose, open_email
from flowengine.messaging.outbox import messages
from flowengine.http.outbox import outbox_routes
from flowengine.messaging.sms import open_sms
from flowengine_nodes.messaging import send_email

SENDER = "Mon App <no-reply@example.com>"
ANN = "ann+news@example.org"


class Inbox:
    """An aiosmtpd handler keeping every message it accepts, and who logged in."""

    def __init__(self) -> None:
        self.received: list[tuple[object, email.message.EmailMessage]] = []

    async def handle_DATA(self, server, session, envelope):
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.received.append((envelope, parsed, session.auth_data))
        return "250 OK"


def authenticate(server, session, envelope, mechanism, auth_data):
    ok = isinstance(auth_data, LoginPassword) and auth_data == (b"mailer", b"s3cret")
    return AuthResult(success=ok, handled=False, auth_data=auth_data)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def smtp_server():
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port(),
                            authenticator=authenticate, auth_require_tls=False)
    controller.start()
    yield inbox, controller.port
    controller.stop()


@pytest.fixture
def cache():
    return open_cache(None, "test-email")


def smtp(port: int, **overrides) -> dict:
    server = {"host": "127.0.0.1", "port": port, "security": "none", "timeout": 5, **overrides}
    return {"provider": "smtp", "from": SENDER, "smtp": server}


# --- SMTP ---------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_smtp_sends_a_multipart_alternative_message(smtp_server, cache):
    inbox, port = smtp_server
    mailer = open_email(smtp(port, user="mailer", password="s3cret"), cache)
    sent = await mailer.send(ANN, "Vérifiez votre adresse ✓", "Code: 123456", "<p>Code: <b>123456</b></p>")
    [(envelope, message, login)] = inbox.received
    assert envelope.mail_from == "no-reply@example.com" and envelope.rcpt_tos == [ANN]
    assert login == LoginPassword(b"mailer", b"s3cret")
    assert message["Subject"] == "Vérifiez votre adresse ✓"
    assert "=?utf-8?" in envelope.content.decode().split("Subject:")[1].splitlines()[0]
    assert (message["From"], message["To"]) == (SENDER, ANN)
    assert message["Message-ID"] == sent["id"] and message["Message-ID"].endswith("@example.com>")
    assert parsedate_to_datetime(message["Date"]).utcoffset().total_seconds() == 0
    assert message.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain", "text/html"]
    assert message.get_body(("plain",)).get_content().strip() == "Code: 123456"
    assert message.get_body(("html",)).get_content().strip() == "<p>Code: <b>123456</b></p>"
    assert await cache.items("outbox:email") == []


@pytest.mark.anyio
async def test_smtp_without_html_sends_plain_text(smtp_server, cache):
    inbox, port = smtp_server
    await open_email(smtp(port), cache).send(ANN, "Hello", "Just text")
    [(_, message, login)] = inbox.received
    assert message.get_content_type() == "text/plain" and login is None
    assert message.get_content().strip() == "Just text"


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("server", "retryable"),
    [
        ({"user": "mailer", "password": "wrong"}, False),  # authentication refused (535): for good
        ({"security": "starttls"}, False),                 # the server offers no STARTTLS: for good
        ({"refused": True}, True),                         # nothing listens on the port: maybe later
    ],
    ids=["bad-password", "no-starttls", "refused"],
)
async def test_smtp_failures_become_email_failed(smtp_server, cache, caplog, server, retryable):
    inbox, port = smtp_server
    if server.get("refused"):
        server, port = {}, free_port()
    with pytest.raises(FlowError) as caught:
        await open_email(smtp(port, **server), cache).send(ANN, "Hi", "text")
    assert caught.value.body() == {"errors": [{"origin": "server_error", "code": "email_failed",
                                               "message": "The email could not be sent"}]}
    assert caught.value.status == 502 and inbox.received == []
    assert caught.value.retryable is retryable  # a node's retry: only what may pass later
    assert "could not send an email to ann+news@example.org" in caplog.text


@pytest.mark.anyio
async def test_smtp_server_that_never_answers_times_out(cache):
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        settings = smtp(silent.getsockname()[1], timeout=0.2)
        with pytest.raises(FlowError, match="could not be sent"):
            await open_email(settings, cache).send(ANN, "Hi", "text")


def test_header_injection_is_refused():
    with pytest.raises(FlowError) as caught:
        compose(SENDER, ANN, "Hi\r\nBcc: everyone@example.org", "text")
    assert (caught.value.code, caught.value.status) == ("email_invalid", 400)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"provider": "pigeon"}, "email.provider: unknown provider 'pigeon' (expected one of outbox, smtp)"),
        ({"provider": "smtp", "smtp": {"host": "h"}}, "email.from is required when email.provider is 'smtp'"),
        ({"provider": "smtp", "from": SENDER}, "email.smtp.host is required when email.provider is 'smtp'"),
        ({"provider": "smtp", "from": SENDER, "smtp": {"host": "h", "security": "tls"}},
         "email.smtp.security must be one of starttls, ssl, none, not 'tls'"),
        ({"provider": "smtp", "from": SENDER, "smtp": {"host": "h", "user": "u"}},
         "email.smtp: set both user and password, or neither"),
        ({"provider": "smtp", "from": SENDER, "smtp": {"host": "h", "port": "x"}},
         "email.smtp.port must be a positive number, not 'x'"),
        ({"provider": "smtp", "from": SENDER, "smtp": {"host": "h", "port": "587"}},  # loading makes ${VAR} a number
         "email.smtp.port must be a positive number, not '587'"),
        ({"provider": "smtp", "from": SENDER, "smtp": {"host": "h", "timeout": float("nan")}},  # YAML's .nan
         "email.smtp.timeout must be a positive number, not nan"),
        ({"keep": -1}, "email.keep must be a positive integer, not -1"),
    ],
)
def test_bad_settings_fail_when_the_provider_is_opened(settings, message):
    with pytest.raises(ValueError) as caught:
        open_email(settings, cache=None)
    assert str(caught.value) == message


# --- outbox -------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_outbox_keeps_emails_and_merges_both_channels_newest_first(cache):
    mailer, texter = open_email({"keep": 2}, cache), open_sms(None, cache)
    await mailer.send("old@example.org", "Old", "old")
    await texter.send("+14155552671", "code 1")
    sent = await mailer.send(ANN, "Welcome", "Hi Ann", "<p>Hi Ann</p>")
    listing = await messages(cache)
    assert [(m["channel"], m["to"]) for m in listing] == [
        ("email", ANN), ("sms", "+14155552671"), ("email", "old@example.org")]
    assert listing[0] == {"id": sent["id"], "channel": "email", "to": ANN, "subject": "Welcome",
                          "text": "Hi Ann", "html": "<p>Hi Ann</p>", "sentAt": listing[0]["sentAt"]}
    await mailer.send("new@example.org", "New", "new")
    assert [m["to"] for m in await cache.items("outbox:email")] == ["new@example.org", ANN]


def test_dev_routes_list_the_outbox_and_read_the_latest_email(cache):
    asyncio.run(open_email(None, cache).send(ANN, "Your link", "Open https://app.test/?t=abc+def"))
    client = TestClient(Starlette(routes=outbox_routes(cache)))
    listing = client.get("/_dev/outbox").json()
    assert [(m["channel"], m["subject"]) for m in listing] == [("email", "Your link")]
    response = client.get(f"/_dev/outbox/email/latest?to={ANN}")
    assert response.status_code == 200 and response.text == "Open https://app.test/?t=abc+def"
    assert client.get("/_dev/outbox/email/latest?to=ann news@example.org").status_code == 404


# --- the send-email node ------------------------------------------------------------------


def node_context(cache, app_dir, scope=None) -> RunContext:
    services = Services(cache=cache, email=open_email(None, cache), app_dir=app_dir)
    return RunContext(services, scope=scope or {}, flow="t")


def email_app(tmp_path, node: str):
    """An app with one flow whose `mail` node is the given YAML (templates compile at load)."""
    (tmp_path / "app.yaml").write_text("name: mail\n")
    (tmp_path / "flows").mkdir()
    (tmp_path / "flows" / "mail.yaml").write_text(
        "service: mail\nstart: mail\nnodes:\n  mail:\n" + textwrap.indent(node, "    ") + "    next: done\n"
        "  done: {type: return-success, body: mail}\n"
    )
    return load_app(tmp_path)


WELCOME = "type: send-email\nto: user.email\nsubject: Welcome\ntext: Welcome\n"


@pytest.mark.anyio
@pytest.mark.parametrize("inline", [False, True])
async def test_send_email_escapes_html_holes_inline_and_from_a_template_file(cache, tmp_path, inline):
    html = "<p>Welcome, {{ user.name }}! Code {{ 100 + 23 }}</p>"
    if inline:
        node = WELCOME + f"html: '{html}'\n"
    else:
        (tmp_path / "templates" / "mail").mkdir(parents=True)
        (tmp_path / "templates" / "mail" / "welcome.html").write_text(html, encoding="utf-8")
        node = WELCOME + "html_template: mail/welcome.html\n"
    app = email_app(tmp_path, node)
    services = Services(cache=cache, email=open_email(None, cache), app_dir=tmp_path)
    user = {"name": "<b>Ann</b> & co", "email": ANN}
    reply = await run_flow(app.flows["mail"], services, {"user": user})
    [record] = await cache.items("outbox:email")
    assert reply.body == {"id": record["id"], "to": ANN}
    assert record["html"] == "<p>Welcome, &lt;b&gt;Ann&lt;/b&gt; &amp; co! Code 123</p>"


@pytest.mark.parametrize(
    ("node", "message"),
    [
        ("html_template: missing.html\n", "cannot read templates/missing.html"),
        ("html_template: bad.html\n", "syntax error"),
        ("html_template: ../secret.html\n", "\"../secret.html\" is not valid: expected an HTML alternative from a file in templates/"),
    ],
)
def test_bad_html_templates_are_load_time_errors(tmp_path, node, message):
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "bad.html").write_text("<p>{{ 1 + }}</p>")
    with pytest.raises(SpecErrors) as caught:
        email_app(tmp_path, WELCOME + node)
    assert message in str(caught.value) and "flows/mail.yaml:" in str(caught.value)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"html_template": "<p/>", "html": "<p/>"}, "invalid_node"),
        ({"to": ""}, "invalid_recipient"),
    ],
)
async def test_send_email_node_errors(cache, tmp_path, params, code):
    ctx = node_context(cache, tmp_path)
    with pytest.raises(FlowError) as caught:
        await send_email(ctx, {"to": ANN, "subject": "S", "text": "T", **params})
    assert caught.value.code == code
    assert await cache.items("outbox:email") == []
