"""``send-sms`` and ``send-email``: a flow texts or mails through the app's providers.

The nodes only shape what the flow gives them; ``ctx.sms`` and ``ctx.email`` decide whether
a message goes to Twilio and SMTP or to the development outbox, and turn delivery failures
into a ``FlowError`` (taking the node's ``error`` output).
"""

from __future__ import annotations

import html
from typing import Any, Mapping

import anyio

from flowengine.errors import FlowError
from flowengine.expressions import Expression, ExpressionError, Template, compile_template
from flowengine.functions import text_of
from flowengine.registry import Param, node_type

#: A file under the app's templates/ folder: path segments that never start with a dot,
#: so no name can climb out of the folder.
TEMPLATE_NAME = r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*(/[A-Za-z0-9_-][A-Za-z0-9_.-]*)*$"


@node_type(
    "send-sms",
    description="Text a message to a phone number (Twilio, or the outbox in development).",
    params={
        "to": Param.expression(required=True, description="the phone number, international format"),
        "body": Param.template(required=True, description="the message text"),
    },
)
async def send_sms(ctx, params):
    to = _recipient(params["to"], "SMS")
    return "next", await ctx.sms.send(to, params["body"])


@node_type(
    "send-email",
    description="Send an email (SMTP, or the outbox in development).",
    params={
        "to": Param.expression(required=True, description="the recipient's address"),
        "subject": Param.template(required=True),
        "text": Param.template(required=True, description="the plain-text body"),
        "html": Param.template(description="an HTML alternative, written inline"),
        "html_template": Param.literal(
            {"type": "string", "pattern": TEMPLATE_NAME},
            description="an HTML alternative from a file in templates/, holes HTML-escaped",
        ),
    },
)
async def send_email(ctx, params):
    to = _recipient(params["to"], "email")
    body = await _html(ctx, params)
    return "next", await ctx.email.send(to, params["subject"], params["text"], body)


def _recipient(value: Any, channel: str) -> str:
    """The ``to`` value as text; a missing one is the request's fault, not the provider's."""
    if not isinstance(value, str) or not value.strip():
        problem = f"The {channel} recipient is missing or not text"
        raise FlowError("invalid_recipient", problem, status=400)
    return value.strip()


async def _html(ctx, params: Mapping[str, Any]) -> str | None:
    """The HTML alternative: inline, or a file read (off the event loop) from templates/."""
    name = params.get("html_template")
    if name is None:
        return params.get("html")
    if params.get("html") is not None:
        raise FlowError("invalid_node", "send-email takes 'html' or 'html_template', not both")
    path = anyio.Path(ctx.app_dir, "templates", name)
    try:
        return render_escaped(compile_template(await path.read_text("utf-8")), ctx.scope)
    except FileNotFoundError as exc:
        problem = f"Email template templates/{name} does not exist"
        raise FlowError("email_template_missing", problem) from exc
    except ExpressionError as exc:
        problem = f"Email template templates/{name}: {exc}"
        raise FlowError("email_template_invalid", problem) from exc


def render_escaped(template: Template, scope: Mapping[str, Any]) -> str:
    """Render a template, HTML-escaping every hole so a user's name can't inject markup."""
    return "".join(
        html.escape(text_of(part.evaluate(scope))) if isinstance(part, Expression) else part
        for part in template.parts
    )
