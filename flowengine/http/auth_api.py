"""The built-in auth API, as the official Altogic client's ``AuthManager`` calls it.

Paths, query parameters and bodies follow ``altogic-api.md`` §3 exactly; success bodies are
bare JSON (``null`` where the client ignores them), errors the usual ``{"errors": [...]}``.
Query values are read without turning ``+`` into a space: the client sends ``email`` and
``key`` unencoded.

The emails link to ``/_auth/<target>?key=...``; those routes redirect the browser to the
app's ``auth.redirect_url`` with ``status`` ("200" or "400"), ``action`` (``email-confirm``,
``magic-link``, ``reset-pwd``, ``change-email``), ``access_token`` and, on failure,
``error``: at once for a reset link, after the button of a small page for the others (see
``_link_routes``). They need no client key: a browser opening a link from an email sends none.

Ending sessions other than the caller's own (``signout`` with another's token,
``signout-all``, ``signout-all-except``) needs a fresh session: signed in within
``auth.session.fresh``, else 401 ``reauth_required`` (security S3).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
from typing import Any, Awaitable, Callable, Iterable
from urllib.parse import parse_qs, urlencode, urlsplit

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from flowengine.auth.service import AuthService
from flowengine.errors import FlowError
from flowengine.http.requests import parse_query, read_body, read_json

PREFIX = "/_api/rest/v1/auth"
LINKS = "/_auth"
#: Auth bodies are a few fields; anything bigger is refused before it is parsed.
BODY_LIMIT = 16 * 1024
INVALID_LINK = "Invalid or expired access token"

Handler = Callable[[Request], Awaitable[Any]]


def auth_routes(auth: AuthService, api_keys: Iterable[str] = ()) -> list[Route]:
    """The auth API's routes and the email link targets, with their full paths."""
    keys = [key.encode() for key in api_keys if key]

    def trusted(request: Request) -> bool:
        """Whether the caller holds one of the app's API keys (a server, not a browser)."""
        offered = request.headers.get("authorization") or parse_query(request.scope["query_string"]).get("apikey")
        return isinstance(offered, str) and any(hmac.compare_digest(offered.encode(), key) for key in keys)

    def base(request: Request) -> str:
        return auth.config.base_url or str(request.base_url).rstrip("/")

    async def sign_up(request: Request) -> Any:
        body = await _body(request)
        return await auth.sign_up(body.get("email"), body.get("password"), body.get("nameOrUserData"),
                                  trusted=trusted(request), ip=_ip(request), agent=_agent(request), base=base(request))  # fmt: skip

    async def sign_in(request: Request) -> Any:
        body = await _body(request)
        return await auth.sign_in(body.get("email"), body.get("password"), ip=_ip(request), agent=_agent(request))

    async def sign_out(request: Request) -> None:
        caller, body = await auth.caller(request), await _body(request)
        await auth.sign_out(caller, body.get("token"))

    async def sign_out_all(request: Request) -> None:
        await auth.sign_out_all(await auth.caller(request), keep_own=False)

    async def sign_out_others(request: Request) -> None:
        await auth.sign_out_all(await auth.caller(request), keep_own=True)

    async def sessions(request: Request) -> Any:
        return await auth.list_sessions(await auth.caller(request))

    async def user(request: Request) -> Any:
        return (await auth.caller(request)).user

    async def change_password(request: Request) -> None:
        caller, body = await auth.caller(request), await _body(request)
        await auth.change_password(caller, body.get("newPassword"), body.get("oldPassword"))

    async def change_email(request: Request) -> Any:
        caller, body = await auth.caller(request), await _body(request)
        return await auth.links.change_email(caller, body.get("currentPassword"), body.get("newEmail"), base(request))

    async def grant(request: Request) -> Any:
        return await auth.links.grant(_query(request, "key"), _agent(request))

    async def reset_password(request: Request) -> None:
        body = await _body(request)
        await auth.links.reset_password(_query(request, "key"), body.get("newPassword"))

    def send(operation: Callable[[Any, str, str], Awaitable[None]]) -> Handler:
        async def handler(request: Request) -> None:
            await operation(_query(request, "email"), _ip(request), base(request))

        return handler

    api = [
        ("POST", "signup-email", sign_up), ("POST", "signin-email", sign_in), ("POST", "signout", sign_out),
        ("POST", "signout-all", sign_out_all), ("POST", "signout-all-except", sign_out_others),
        ("GET", "sessions", sessions), ("GET", "user", user), ("POST", "change-pwd", change_password),
        ("POST", "change-email", change_email), ("GET", "grant", grant), ("POST", "reset-pwd", reset_password),
        ("POST", "resend", send(auth.links.resend)), ("POST", "send-magic", send(auth.links.send_magic)),
        ("POST", "send-reset", send(auth.links.send_reset)),
    ]  # fmt: skip
    routes = [Route(f"{PREFIX}/{path}", _json(handler), methods=[method]) for method, path, handler in api]
    return routes + _link_routes(auth)


def _link_routes(auth: AuthService) -> list[Route]:
    """The targets of the links in auth emails.

    Mail scanners open every link in a message (GET, HEAD) before its owner does, so opening a
    link that redeems its key only shows a page with one button, which POSTs the key back; the
    POST redeems it and redirects (security E3). The reset link redeems nothing (the app's form
    does, with ``reset-pwd``), so opening it redirects at once.
    """
    origin = _origin(auth.config.redirect_url)

    async def verify(key: Any) -> tuple[str | None, str | None]:
        return await auth.links.confirm(key), None

    async def magic(key: Any) -> tuple[str | None, str | None]:
        return await auth.links.redeem_magic(key), None

    async def reset(key: Any) -> tuple[str | None, str | None]:
        return await auth.links.check("reset", key), None

    async def change_email(key: Any) -> tuple[str | None, str | None]:
        if await auth.links.confirm_new_email(key):
            return None, None
        return None, INVALID_LINK

    def target(path: str, action: str, redeem: Callable[[Any], Awaitable[tuple[str | None, str | None]]],
               token_needed: bool, page: bool = True) -> Route:  # fmt: skip
        async def endpoint(request: Request) -> Response:
            if page and request.method != "POST":  # GET, HEAD: a person, or a scanner
                return _page(path, action, _query(request, "key"), origin, head=request.method == "HEAD")
            if request.method == "HEAD":  # link checkers: nothing is even looked at
                return Response(status_code=204, headers={"Cache-Control": "no-store"})
            try:
                token, error = await redeem(await _link_key(request))
            except FlowError as exc:  # e.g. the cache is down: the browser still lands on the app
                token, error = None, exc.message
            if token_needed and token is None and error is None:
                error = INVALID_LINK
            return _redirect(auth.config.redirect_url, action, token, error, 303 if request.method == "POST" else 302)

        return Route(f"{LINKS}/{path}", endpoint, methods=["GET", "POST"] if page else ["GET"])

    return [
        target("verify", "email-confirm", verify, True),
        target("magic", "magic-link", magic, True),
        target("reset", "reset-pwd", reset, True, page=False),
        target("change-email", "change-email", change_email, False),
    ]


#: What the page of a link says: its title and its button.
PAGE_TEXT = {
    "email-confirm": ("Confirm your email address", "Confirm my address"),
    "magic-link": ("Sign in", "Sign in"),
    "change-email": ("Confirm your new email address", "Confirm my new address"),
}
PAGE_STYLE = ("body{font:16px/1.5 system-ui,sans-serif;max-width:30rem;margin:4rem auto;padding:0 1rem}"
              "button{font:inherit;padding:.5rem 1.25rem}")  # fmt: skip
_STYLE_HASH = base64.b64encode(hashlib.sha256(PAGE_STYLE.encode()).digest()).decode()
#: The page's policy: its own style, a form sent home; no script, frame or anything else loaded.
PAGE_POLICY = f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex"><title>{title}</title><style>{style}</style></head>
<body><main><h1>{title}</h1><p>Press the button to go on.</p>
<form method="post" action="{path}"><input type="hidden" name="key" value="{key}"><button type="submit">{button}</button></form>
</main></body></html>
"""


def _page(path: str, action: str, key: Any, origin: str, head: bool) -> Response:
    """The page a link opens: one button that POSTs its key back to ``/_auth/<path>``.

    It loads nothing (no script, image or font), so the key reaches no other server, and no
    ``Referer`` carries it on. The form goes to this server only, and its answer redirects
    to the app's page, which ``form-action`` names too (browsers check redirects against it).
    """
    title, button = PAGE_TEXT[action]
    key = key if isinstance(key, str) else ""
    headers = {
        "Cache-Control": "no-store",
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Content-Security-Policy": PAGE_POLICY + origin,
    }
    if head:
        return Response(status_code=200, headers=headers, media_type="text/html")
    page = PAGE.format(title=title, button=button, style=PAGE_STYLE, path=path, key=html.escape(key, quote=True))
    return HTMLResponse(page, headers=headers)


async def _link_key(request: Request) -> Any:
    """The key a link's page posts back (a form field), else the link's own ``?key=``."""
    if request.method == "POST":
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        body = await read_body(request, BODY_LIMIT)
        if media == "application/x-www-form-urlencoded" and body:
            posted = parse_qs(body.decode("latin-1"), encoding="utf-8", errors="replace").get("key")
            if posted:
                return posted[0]
    return _query(request, "key")


def _origin(url: str | None) -> str:
    """`` https://app.example`` for the app's redirect page, to add to ``form-action``; "" for none."""
    if not url:
        return ""
    parts = urlsplit(url)
    return f" {parts.scheme}://{parts.netloc}"


def _redirect(url: str | None, action: str, token: str | None, error: str | None, status: int = 302) -> Response:
    """Off to the app's redirect page with the outcome; as JSON when the app has none."""
    outcome = {"status": "400" if error else "200", "action": action}
    if token and not error:
        outcome["access_token"] = token
    if error:
        outcome["error"] = error
    headers = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}
    if not url:
        return JSONResponse(outcome, status_code=int(outcome["status"]), headers=headers)
    return RedirectResponse(f"{url}{'&' if '?' in url else '?'}{urlencode(outcome)}", status_code=status, headers=headers)


def _json(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        return JSONResponse(await handler(request), headers={"Cache-Control": "no-store"})

    endpoint.__name__ = handler.__name__
    return endpoint


async def _body(request: Request) -> dict[str, Any]:
    """The JSON object a call sends; ``{}`` for none (the client sends no body on some POSTs)."""
    body = await read_json(request, BODY_LIMIT)
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise FlowError("invalid_body", "The request body must be a JSON object", status=400)
    return body


def _query(request: Request, name: str) -> Any:
    return parse_query(request.scope["query_string"]).get(name)


def _ip(request: Request) -> str:
    """The client's address as the server saw it (uvicorn's ``--proxy-headers`` resolves proxies)."""
    return request.client.host if request.client else "unknown"


def _agent(request: Request) -> str | None:
    return request.headers.get("user-agent")

