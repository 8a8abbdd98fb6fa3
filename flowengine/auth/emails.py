"""The auth emails: templates compiled at load time, rendered and sent off the request.

Each email has an HTML template and a plain-text one; the HTML's ``<title>`` is the subject.
Built-in templates live beside this module; an app overrides any of them with
``templates/auth/<name>.html`` (and ``.txt``) in its folder. Holes are expressions
(``{{ link }}``, ``{{ user.name }}``) over ``app``, ``env``, ``user``, ``email`` (the
recipient), ``link``, ``expires`` (like "15 minutes"), ``newEmail`` and ``change`` (what a
security notice reports, like "two factor auth turned off"); in HTML they are escaped.

Besides the emails with links there are notices, sent to the account's address after the
fact: ``email-changed`` (to the old address), ``password-changed`` (a change or a reset),
``setting-changed`` (a field marked ``reauth`` changed through the data API) and
``account-exists`` (someone signed up with the address of an account, and was answered as if
the address were new).

Sending happens in a background task. A request answers at once whether or not an email
went out, so "is there an account for this address?" shows in neither the answer nor
its timing; delivery failures are logged (without the link: it is a credential).
"""

from __future__ import annotations

import asyncio
import html
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from flowengine.errors import Location, SpecError
from flowengine.expressions import ExpressionError, Template, compile_template

log = logging.getLogger("flowengine.auth")

BUILT_IN = Path(__file__).with_name("templates")
#: Where an app puts its own versions, relative to its folder.
OVERRIDES = "templates/auth"
NAMES = ("verify-email", "magic-link", "reset-password", "change-email", "email-changed", "password-changed",
         "setting-changed", "account-exists")
#: What a template's holes may read.
SCOPE_NAMES = frozenset({"app", "env", "user", "email", "link", "expires", "newEmail", "change"})
_TITLE = re.compile(r"<title>(.*?)</title>", re.IGNORECASE | re.DOTALL)


@dataclass(frozen=True)
class EmailTemplate:
    """One email: its subject, HTML and text, each a compiled template."""

    subject: Template
    html: Template
    text: Template

    def render(self, scope: Mapping[str, Any]) -> tuple[str, str, str]:
        """(subject, text, html) for one recipient."""
        subject = " ".join(self.subject.render(scope).split())  # a header holds no line breaks
        return subject, self.text.render(scope), self.html.render(scope, html.escape)


def load_templates(root: Path) -> tuple[dict[str, EmailTemplate], list[SpecError]]:
    """Every auth email's template, the app's version where it has one."""
    templates, problems = {}, []
    for name in NAMES:
        try:
            templates[name] = _load(root, name)
        except _Problem as exc:
            problems.append(SpecError(Location(exc.file), exc.message))
    return templates, problems


class _Problem(Exception):
    def __init__(self, file: str, message: str) -> None:
        super().__init__(message)
        self.file, self.message = file, message


def _load(root: Path, name: str) -> EmailTemplate:
    html_file, html_source = _source(root, f"{name}.html")
    text_file, text_source = _source(root, f"{name}.txt")
    title = _TITLE.search(html_source)
    if title is None:
        raise _Problem(html_file, "an auth email template needs a <title>: it is the email's subject")
    return EmailTemplate(
        subject=_compile(html_file, html.unescape(title[1])),
        html=_compile(html_file, html_source),
        text=_compile(text_file, text_source),
    )


def _source(root: Path, file: str) -> tuple[str, str]:
    """(name for messages, text) of the app's template if it has one, else the built-in one."""
    override = root / OVERRIDES / file
    if override.is_file():
        return f"{OVERRIDES}/{file}", override.read_text(encoding="utf-8")
    return f"flowengine/auth/templates/{file}", (BUILT_IN / file).read_text(encoding="utf-8")


def _compile(file: str, source: str) -> Template:
    try:
        template = compile_template(source)
    except ExpressionError as exc:
        raise _Problem(file, str(exc)) from None
    for expression in template.expressions:
        unknown = sorted(expression.names - SCOPE_NAMES)
        if unknown:
            known = ", ".join(sorted(SCOPE_NAMES))
            raise _Problem(file, f"unknown name '{unknown[0]}' in '{{{{ {expression.source} }}}}' (an auth email may use {known})")
    return template


class Mailer:
    """Renders auth emails and sends them through the app's email provider in the background."""

    def __init__(self, provider: Any, templates: Mapping[str, EmailTemplate], names: Mapping[str, Any]) -> None:
        self.provider = provider
        self.templates = templates
        self.names = dict(names)  # app, env
        self._pending: set[asyncio.Task[None]] = set()

    def send(self, name: str, to: str, **names: Any) -> None:
        """Render ``name`` for ``to`` now, send it soon; returns at once."""
        subject, text, body = self.templates[name].render({**self.names, "email": to, **names})
        task = asyncio.get_running_loop().create_task(self._deliver(name, to, subject, text, body))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _deliver(self, name: str, to: str, subject: str, text: str, body: str) -> None:
        try:
            await self.provider.send(to, subject, text, body)
        except Exception as exc:  # the request has been answered: all that is left is the log
            log.warning("the %s email to %s was not sent: %s", name, to, getattr(exc, "message", type(exc).__name__))

    async def drain(self, timeout: float = 10.0) -> None:
        """Wait for the emails still being sent (at shutdown, and in tests)."""
        if self._pending:
            await asyncio.wait(set(self._pending), timeout=timeout)
