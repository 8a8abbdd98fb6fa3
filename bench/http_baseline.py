"""The baseline of ``bench/throughput.py``: the set-phone service as one hand-written Starlette handler.

It does the work of ``flows/set-phone.yaml`` without the interpreter, on services opened
exactly as the engine opens them (``open_services(load_app(...))``), so that only the
request path differs: the same session check (``services.auth.authenticate``, a fresh
session), the same ``ISMOBILEPHONE``, the same two rate limits (per account and per address,
counted in the cache as the ``rate-limit`` node counts), the same one-time code policy
(``OneTimeCodes``, otp-issue's defaults), the same SMS provider and the same JSON answers. It has no middleware: what the engine adds
on top of this handler (routing among the built-in APIs, CORS, input parsing, the
interpreter) is exactly what the benchmark measures.

    FLOWENGINE_APP_DIR=. uvicorn bench.http_baseline:create_app --factory
"""

from __future__ import annotations

import os
from typing import Awaitable, Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from flowengine import limits
from flowengine.context import Services
from flowengine.errors import FlowError, ValidationFailed
from flowengine.functions import ismobilephone
from flowengine.otp import OneTimeCodes, Policy
from flowengine.runtime import APP_DIR_VARIABLE, DEV_VARIABLE, configure_logging, lifespan, open_services
from flowengine.spec.app import load_app

PATH = "/users/set-phone"
#: What otp-issue uses when a flow sets none of digits, ttl, attempts (set-phone sets none).
POLICY = Policy()
#: ``inputs.query.phoneNumber`` in set-phone.yaml: required text, at most 32 characters.
PHONE_MAX_LENGTH = 32
#: The set-phone flow allows 5 codes an hour per account and 10 per address; one benchmark
#: user asks for thousands, so ``bench/throughput.py`` serves a copy of the app with its rate-limit
#: nodes raised to this, and this handler counts against the same.
RAISED_LIMIT = 10**9
HOUR = 3600.0


def set_phone(services: Services) -> Callable[[Request], Awaitable[Response]]:
    """``POST /users/set-phone?phoneNumber=...``: text a code to the signed-in user's new number."""
    codes = OneTimeCodes(services.cache, services.secret, services.clock)
    # As otp-issue does for an SMS code: a number the app may not text is refused before anything is stored.
    refuse = getattr(services.sms, "check", None)

    async def handle(request: Request) -> Response:
        try:
            _, user = await services.auth.authenticate(request, required=True, fresh=True)
            phone = _phone_number(request)
            if not ismobilephone(phone):
                message = f"Not a mobile number in international form (like +14155552671): {phone}"
                raise FlowError("invalid_phone_number", message, status=400)
            await limits.hit(services.cache, f"rate:set-phone:{user['_id']}", RAISED_LIMIT, HOUR)
            await limits.hit(services.cache, f"rate:set-phone-ip:{request.client.host}", RAISED_LIMIT, HOUR)
            if refuse is not None:
                await refuse(phone)
            issued = await codes.issue("phone-verify", str(user["_id"]), phone, str(user["_id"]), POLICY)
            body = f"Your verification code is {issued['code']}. It expires in 5 minutes."
            await services.sms.send(issued["destination"], body)
            return JSONResponse({"challengeId": issued["challengeId"], "expiresIn": issued["expiresIn"]})
        except FlowError as exc:
            return _error(exc)

    return handle


def _phone_number(request: Request) -> str:
    phone = request.query_params.get("phoneNumber")
    if not phone:
        raise _invalid("query.phoneNumber is required")
    if len(phone) > PHONE_MAX_LENGTH:
        raise _invalid(f"query.phoneNumber must be at most {PHONE_MAX_LENGTH} characters")
    return phone


def _invalid(message: str) -> ValidationFailed:
    item = {"origin": "client_error", "code": "validation_error", "message": message,
            "details": {"field": "query.phoneNumber"}}  # fmt: skip
    return ValidationFailed([item])


def _error(exc: FlowError) -> Response:
    retry = exc.details.get("retryAfter") if isinstance(exc.details, dict) else None
    headers = {"Retry-After": str(retry)} if exc.status == 429 and retry is not None else None
    return JSONResponse(exc.body(), status_code=exc.status, headers=headers)


def create_app() -> Starlette:
    """Uvicorn factory: the app named by ``FLOWENGINE_APP_DIR``, its outbox readable in dev mode."""
    configure_logging()  # as the engine's factory does: the outbox logs a line per text
    app = load_app(os.environ.get(APP_DIR_VARIABLE, "."))
    services = open_services(app)
    if services.auth is None:
        raise RuntimeError(f"{app.dir}: the app has no built-in auth, so set-phone cannot check sessions")
    routes = [Route(PATH, set_phone(services), methods=["POST"])]
    if os.environ.get(DEV_VARIABLE) == "1":
        from flowengine.http.outbox import outbox_routes

        routes.extend(outbox_routes(services.cache))
    return Starlette(routes=routes, lifespan=lifespan(services))
