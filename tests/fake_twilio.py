"""A local fake of Twilio's Messages API, served for real over HTTP on loopback.

The ``twilio`` SDK is pointed at it (``sms.twilio.base_url``) so tests exercise the SDK's own
request building, auth and error parsing. It answers like Twilio: 201 with a message
resource, or Twilio's error JSON. As with Twilio's test credentials, magic ``To`` numbers
trigger errors: ``+15005550001`` is an invalid number (21211, HTTP 400). ``busy`` makes the
next that many requests answer 503 (Twilio's 20503, "service unavailable").
"""

from __future__ import annotations

import asyncio
import base64
import socket
import threading
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any, Iterator
from urllib.parse import parse_qsl

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

INVALID_NUMBER = "+15005550001"
MESSAGES_PATH = "/2010-04-01/Accounts/{sid}/Messages.json"


@dataclass
class FakeTwilio:
    """The fake's state: accounts it accepts, what it received, how slowly it answers."""

    account_sid: str = "AC" + "0" * 32
    auth_token: str = "secret-token"
    delay: float = 0.0
    requests: list[dict[str, Any]] = field(default_factory=list)
    base_url: str = ""
    busy: int = 0

    def app(self) -> Starlette:
        return Starlette(routes=[Route(MESSAGES_PATH, self.create_message, methods=["POST"])])

    async def create_message(self, request: Request) -> JSONResponse:
        form = dict(parse_qsl((await request.body()).decode()))
        self.requests.append({"path": request.url.path, "auth": _basic(request), "form": form,
                              "content_type": request.headers.get("content-type")})
        await asyncio.sleep(self.delay)
        sid = request.path_params["sid"]
        if _basic(request) != (self.account_sid, self.auth_token) or sid != self.account_sid:
            return _error(401, 20003, "Authenticate")
        if self.busy > 0:
            self.busy -= 1
            return _error(503, 20503, "Service unavailable")
        if form.get("To") == INVALID_NUMBER:
            return _error(400, 21211, f"The 'To' number {form['To']} is not a valid phone number.")
        return JSONResponse(_message(sid, form), status_code=201)


def _basic(request: Request) -> tuple[str, str] | None:
    scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    user, _, password = base64.b64decode(encoded).decode().partition(":")
    return user, password


def _error(status: int, code: int, message: str) -> JSONResponse:
    body = {"code": code, "message": message, "status": status,
            "more_info": f"https://www.twilio.com/docs/errors/{code}"}
    return JSONResponse(body, status_code=status)


def _message(account_sid: str, form: dict[str, Any]) -> dict[str, Any]:
    sid = "SM" + uuid.uuid4().hex
    now = formatdate(usegmt=True)
    return {
        "sid": sid, "account_sid": account_sid, "to": form["To"], "from": form.get("From"),
        "messaging_service_sid": form.get("MessagingServiceSid"), "body": form["Body"],
        "status": "queued", "num_segments": "1", "num_media": "0", "direction": "outbound-api",
        "api_version": "2010-04-01", "price": None, "price_unit": "USD", "error_code": None,
        "error_message": None, "date_created": now, "date_updated": now, "date_sent": None,
        "uri": f"/2010-04-01/Accounts/{account_sid}/Messages/{sid}.json", "subresource_uris": {},
    }


@contextmanager
def serve_fake_twilio() -> Iterator[FakeTwilio]:
    """Run a ``FakeTwilio`` with uvicorn on a free loopback port, in a background thread."""
    fake = FakeTwilio()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    fake.base_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(fake.app(), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the fake Twilio server did not start")
        threading.Event().wait(0.01)
    try:
        yield fake
    finally:
        server.should_exit = True
        thread.join(5)
        sock.close()
