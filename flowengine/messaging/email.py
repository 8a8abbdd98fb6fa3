"""Email: one ``send(to, subject, text, html=None)`` for the outbox and for SMTP.

``open_email`` reads the ``email`` section of app.yaml once, at start-up; an unknown provider
or a missing SMTP host fails the load, not the first password reset.
"""

from __future__ import annotations

import logging
import math
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr
from typing import Any

import anyio.to_thread

from flowengine.errors import FlowError
from flowengine.messaging.outbox import DEFAULT_KEEP, EmailOutbox

log = logging.getLogger("flowengine.email")

PROVIDERS = ("outbox", "smtp")
#: The port each security mode listens on unless ``email.smtp.port`` says otherwise.
DEFAULT_PORTS = {"starttls": 587, "ssl": 465, "none": 25}
DEFAULT_TIMEOUT = 10.0


def open_email(settings: dict[str, Any] | None, cache: Any) -> Any:
    """The email provider the ``email`` settings ask for (the outbox when there are none)."""
    settings = settings or {}
    provider = settings.get("provider") or "outbox"
    if provider == "outbox":
        return EmailOutbox(cache, settings.get("keep", DEFAULT_KEEP))
    if provider == "smtp":
        if not settings.get("from"):
            raise ValueError("email.from is required when email.provider is 'smtp'")
        return SmtpEmail(settings["from"], **smtp_settings(settings.get("smtp") or {}))
    choices = ", ".join(PROVIDERS)
    raise ValueError(f"email.provider: unknown provider {provider!r} (expected one of {choices})")


def smtp_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """``email.smtp`` checked and completed with defaults."""
    if not settings.get("host"):
        raise ValueError("email.smtp.host is required when email.provider is 'smtp'")
    security = settings.get("security") or "starttls"
    if security not in DEFAULT_PORTS:
        choices = ", ".join(DEFAULT_PORTS)
        raise ValueError(f"email.smtp.security must be one of {choices}, not {security!r}")
    if bool(settings.get("user")) != bool(settings.get("password")):
        raise ValueError("email.smtp: set both user and password, or neither")
    return {
        "host": settings["host"],
        "port": _positive(settings.get("port"), DEFAULT_PORTS[security], "port", int),
        "security": security,
        "user": settings.get("user") or None,
        "password": settings.get("password") or None,
        "timeout": _positive(settings.get("timeout"), DEFAULT_TIMEOUT, "timeout", float),
    }


def _positive(value: Any, default: Any, key: str, kind: type) -> Any:
    """``value`` as a positive ``kind`` (int or float), ``default`` when unset.

    Text is refused, not parsed: loading app.yaml already made a whole ``${VAR}`` the number
    its schema wants, and a second, looser parse here would let through what ``check``
    refuses. NaN and infinity are refused too: YAML's ``.nan`` and ``.inf`` pass the schema,
    but no socket takes them.
    """
    if value in (None, ""):
        return default
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not (is_number and math.isfinite(value) and value > 0 and kind(value) == value):
        raise ValueError(f"email.smtp.{key} must be a positive number, not {value!r}")
    return kind(value)


class SmtpEmail:
    """Sends through an SMTP server; one connection per message.

    ``smtplib`` blocks, so each send runs in a worker thread. A connection per message keeps
    the provider stateless and safe across threads; transactional mail is rare enough.
    """

    def __init__(self, sender: str, *, host: str, port: int, security: str,
                 user: str | None, password: str | None, timeout: float) -> None:
        self.sender = sender
        self.host, self.port, self.security, self.timeout = host, port, security, timeout
        self.credentials = (user, password) if user else None

    async def send(
        self, to: str, subject: str, text: str, html: str | None = None
    ) -> dict[str, Any]:
        message = compose(self.sender, to, subject, text, html)
        await anyio.to_thread.run_sync(self._deliver, message)
        return {"id": message["Message-ID"], "to": to}

    def _deliver(self, message: EmailMessage) -> None:
        try:
            with self._connect() as smtp:
                if self.security == "starttls":
                    smtp.starttls(context=ssl.create_default_context())
                if self.credentials:
                    smtp.login(*self.credentials)
                smtp.send_message(message)
        except (smtplib.SMTPException, OSError) as exc:
            log.warning("smtp %s:%s could not send an email to %s: %r",
                        self.host, self.port, message["To"], exc)
            raise FlowError("email_failed", "The email could not be sent", status=502,
                            retryable=_may_pass(exc)) from exc

    def _connect(self) -> smtplib.SMTP:
        if self.security == "ssl":
            return smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout,
                                    context=ssl.create_default_context())
        return smtplib.SMTP(self.host, self.port, timeout=self.timeout)

    async def close(self) -> None:
        """Nothing stays open between messages."""


def compose(sender: str, to: str, subject: str, text: str, html: str | None = None) -> EmailMessage:
    """A standard MIME message: plain text, plus an HTML alternative when there is one.

    A header value with a line break (say, a subject built from user input) is refused with
    a 400, because it could smuggle extra headers in.
    """
    message = EmailMessage()
    try:
        message["From"], message["To"], message["Subject"] = sender, to, subject
    except ValueError as exc:
        problem = f"The email could not be built: {exc}"
        raise FlowError("email_invalid", problem, status=400) from exc
    message["Date"] = formatdate(localtime=False, usegmt=True)
    message["Message-ID"] = make_msgid(domain=_domain(sender))
    message.set_content(text)
    if html is not None:
        message.add_alternative(html, subtype="html")
    return message


def _domain(address: str) -> str | None:
    """The sender's domain, so Message-IDs don't leak this machine's host name."""
    _, at, domain = parseaddr(address)[1].rpartition("@")
    return domain if at and domain else None


def _may_pass(exc: OSError) -> bool:
    """Whether the same email may go through later: SMTP's 4xx replies are transient and its
    5xx replies permanent (RFC 5321 §4.2.1); a lost or refused connection may come back."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return all(code < 500 for code, _ in exc.recipients.values())
    if isinstance(exc, smtplib.SMTPResponseException):
        return exc.smtp_code < 500
    return isinstance(exc, smtplib.SMTPServerDisconnected) or not isinstance(exc, smtplib.SMTPException)
