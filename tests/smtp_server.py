"""A real SMTP server on loopback (aiosmtpd) whose inbox tests read, and wait on.

The server runs in its own thread; tests on the event loop poll the inbox (``wait_for``)
because auth emails leave in the background, after the request has been answered.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import re
import socket
import threading
from dataclasses import dataclass
from typing import Iterator

from aiosmtpd.controller import Controller

_LINK = re.compile(r"https?://[^\s<>\"')]+")


@dataclass(frozen=True)
class Mail:
    """One received message, as a reader sees it."""

    to: str
    subject: str
    text: str
    html: str

    @property
    def link(self) -> str:
        """The first link in the plain text (auth emails carry one)."""
        found = _LINK.search(self.text)
        assert found, f"no link in the email to {self.to}:\n{self.text}"
        return found[0]


class Inbox:
    """An aiosmtpd handler that keeps every message it accepts."""

    def __init__(self) -> None:
        self.mails: list[Mail] = []
        self._lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: N802 (aiosmtpd's name)
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        text = message.get_body(("plain",))
        html = message.get_body(("html",))
        mail = Mail(
            to=str(message["To"]),
            subject=str(message["Subject"]),
            text=text.get_content() if text else "",
            html=html.get_content() if html else "",
        )
        with self._lock:
            self.mails.append(mail)
        return "250 OK"

    def to(self, address: str) -> list[Mail]:
        with self._lock:
            return [mail for mail in self.mails if mail.to == address]

    async def wait_for(self, address: str, count: int = 1, timeout: float = 5.0) -> Mail:
        """The ``count``-th email to ``address``, once it has arrived."""
        for _ in range(int(timeout / 0.01)):
            found = self.to(address)
            if len(found) >= count:
                return found[count - 1]
            await asyncio.sleep(0.01)
        raise AssertionError(f"no email #{count} to {address} within {timeout}s (got {len(self.to(address))})")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve() -> Iterator[tuple[Inbox, int]]:
    """Run an SMTP server on a free loopback port: ``(inbox, port)`` until the generator closes."""
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield inbox, controller.port
    finally:
        controller.stop()
