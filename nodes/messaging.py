"""``send-sms`` and ``send-email``: a flow texts or mails through the app's providers.

The nodes only shape what the flow gives them; ``ctx.sms`` and ``ctx.email`` decide whether
a message goes to Twilio and SMTP or to the development outbox, and turn delivery failures
into a ``FlowError`` (taking the node's ``error`` output).
"""

from __future__ import annotations

from typing import Any

from flowengine.errors import FlowError
from flowengine.registry import Param, node_type


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
        "html": Param.html(description="an HTML alternative, written inline; holes are HTML-escaped"),
        "html_template": Param.html_file(description="an HTML alternative from a file in templates/"),
    },
)
async def send_email(ctx, params):
    to = _recipient(params["to"], "email")
    if "html" in params and "html_template" in params:
        raise FlowError("invalid_node", "send-email takes 'html' or 'html_template', not both")
    body = params.get("html", params.get("html_template"))
    return "next", await ctx.email.send(to, params["subject"], params["text"], body)


def _recipient(value: Any, channel: str) -> str:
    """The ``to`` value as text; a missing one is the request's fault, not the provider's."""
    if not isinstance(value, str) or not value.strip():
        problem = f"The {channel} recipient is missing or not text"
        raise FlowError("invalid_recipient", problem, status=400)
    return value.strip()


