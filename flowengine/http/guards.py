"""Who may call the built-in APIs: a valid session, or one of the app's API keys."""

from __future__ import annotations

import hmac
from typing import Any, Awaitable, Callable

from starlette.requests import Request

from flowengine.context import Services
from flowengine.errors import FlowError
from flowengine.http.requests import parse_query
from flowengine.spec.app import App


def api_guard(app: App, services: Services) -> Callable[[Request], Awaitable[None]]:
    """An ``authorize(request)`` that accepts an API key (header or ``?apikey=``) or a session."""
    keys = [key.encode() for key in app.settings.get("api_keys") or () if key]

    async def authorize(request: Request) -> None:
        offered = request.headers.get("authorization") or parse_query(request.scope["query_string"]).get("apikey")
        if isinstance(offered, str) and any(hmac.compare_digest(offered.encode(), key) for key in keys):
            return
        if services.auth is not None and await services.auth.authenticate(request, required=False):
            return
        raise FlowError(
            "missing_session_token" if not offered else "invalid_api_key",
            "A session or an API key is required",
            status=401,
            origin="session_token_error" if not offered else "client_error",
        )

    return authorize


__all__: list[Any] = ["api_guard"]
