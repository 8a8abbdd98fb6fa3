"""The outbox: the default SMS and email provider, which keeps messages instead of sending.

An app runs with no account anywhere: every message is logged on one line and kept, newest
first, in the app's cache, where a developer (or an end-to-end test) reads the code or link it
carries through ``flowengine outbox`` or ``GET /_dev/outbox``. The cache is the shared store,
so a message sent by one server process is readable from any other.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timezone
from typing import Any

log = logging.getLogger("flowengine.outbox")

CHANNELS = ("sms", "email")
DEFAULT_KEEP = 50


def outbox_key(channel: str) -> str:
    """One capped list per channel, so a burst of emails never pushes out the SMS codes."""
    return f"outbox:{channel}"


class Outbox:
    """Keeps the last ``keep`` messages of one channel in the cache."""

    def __init__(self, cache: Any, channel: str, keep: int = DEFAULT_KEEP) -> None:
        if channel not in CHANNELS:
            raise ValueError(f"outbox channel must be one of {CHANNELS}, not {channel!r}")
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
            raise ValueError(f"{channel}.keep must be a positive integer, not {keep!r}")
        self.cache = cache
        self.channel = channel
        self.keep = keep

    async def put(self, to: str, **content: Any) -> dict[str, Any]:
        """Log the message on one line and keep it; return the stored record."""
        record = {"id": uuid.uuid4().hex, "channel": self.channel, "to": to, **content,
                  "sentAt": _utc_now()}
        log.info("outbox %s to %s: %s", self.channel, to, _one_line(content))
        await self.cache.push(outbox_key(self.channel), record, self.keep)
        return record

    async def close(self) -> None:
        """Nothing to release: the cache belongs to the app."""


class SmsOutbox(Outbox):
    """The SMS provider used when ``sms.provider`` is ``outbox`` (the default)."""

    def __init__(self, cache: Any, keep: int = DEFAULT_KEEP) -> None:
        super().__init__(cache, "sms", keep)

    async def send(self, to: str, body: str) -> dict[str, Any]:
        record = await self.put(to, body=body)
        return {"id": record["id"], "to": to}


class EmailOutbox(Outbox):
    """The email provider used when ``email.provider`` is ``outbox`` (the default)."""

    def __init__(self, cache: Any, keep: int = DEFAULT_KEEP) -> None:
        super().__init__(cache, "email", keep)

    async def send(
        self, to: str, subject: str, text: str, html: str | None = None
    ) -> dict[str, Any]:
        record = await self.put(to, subject=subject, text=text, html=html)
        return {"id": record["id"], "to": to}


async def latest(cache: Any, channel: str, to: str | None = None) -> dict[str, Any] | None:
    """The newest message of a channel, to one recipient when ``to`` is given."""
    for record in await cache.items(outbox_key(channel)):
        if to is None or record.get("to") == to:
            return record
    return None


async def messages(cache: Any) -> list[dict[str, Any]]:
    """Every kept message of both channels, newest first."""
    records = [r for channel in CHANNELS for r in await cache.items(outbox_key(channel))]
    return sorted(records, key=lambda record: record["sentAt"], reverse=True)


def message_text(record: dict[str, Any]) -> str:
    """What a reader wants from a message: an SMS's body, an email's plain text."""
    return record["body"] if record["channel"] == "sms" else record["text"]


def _utc_now() -> str:
    """ISO 8601 in UTC with microseconds, so both channels merge in sending order."""
    moment = datetime.now(timezone.utc).isoformat(timespec="microseconds")
    return moment.replace("+00:00", "Z")


def _one_line(content: dict[str, Any]) -> str:
    """The message squeezed onto one log line (a link in it stays whole)."""
    parts = [content.get("subject"), content.get("body") or content.get("text")]
    return " | ".join(" ".join(str(part).split()) for part in parts if part)
