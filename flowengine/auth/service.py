"""The auth service on ``services.auth``: who a request is, and the account operations.

It owns the parts (passwords, sessions, link tokens, rate limits, emails) and runs the
operations the auth API exposes. The email-link operations live in ``links.py``; the HTTP
shapes (paths, bodies, redirects) in ``flowengine/http/auth_api.py``. Everything here
raises ``FlowError`` for a request to answer with.

Two rules shape the code. Account lookups by email answer the same whether the account
exists or not (a decoy bcrypt check, the same error, emails sent in the background). And
every guess at a password is counted before it is checked.

And a third for the changes that could take over an account: they need proof of who is
asking (the password, or a *fresh* session: signed in within ``auth.session.fresh``, see
``sessions.py``), the account's address is told afterwards, and the user's other sessions
end, so a stolen session neither makes the change quietly nor survives it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping

from flowengine.auth import useragent
from flowengine.auth.config import AuthConfig
from flowengine.auth.emails import Mailer
from flowengine.auth.limits import RateLimiter
from flowengine.auth.links import EmailLinks, duration
from flowengine.auth.passwords import Passwords
from flowengine.auth.sessions import Sessions, client_shape
from flowengine.auth.tokens import LinkTokens
from flowengine.auth.users import USERS, email_taken, public
from flowengine.errors import FlowError, ValidationFailed
from flowengine.models import SYSTEM_FIELDS, iso
from flowengine.store.query import compile_query

#: What ``nameOrUserData`` may set only with the app's API key: the server vouches for it.
TRUSTED_ONLY = frozenset({"emailVerified"})


@dataclass(frozen=True)
class Caller:
    """A request's live session: the stored row, the token it came with, and its user."""

    row: dict[str, Any]
    token: str
    user: dict[str, Any]

    @property
    def user_id(self) -> str:
        return self.user["_id"]


class AuthService:
    """Authentication for one app, on its store, cache and email provider."""

    def __init__(self, config: AuthConfig, services: Any, app_name: str) -> None:
        self.config = config
        self.services = services
        self.store = services.store
        self.users = self.store.models[USERS]
        self.passwords = Passwords(config.bcrypt_cost, config.min_password_length, avoid=(app_name,))
        self.sessions = Sessions(self.store, self.now, config.session_lifetime, config.session_idle)
        self.tokens = LinkTokens(services.cache, config.token_lifetimes, self.now)
        self.limits = RateLimiter(services.cache, config.rate_limits)
        self.mailer = Mailer(services.email, config.emails, {"app": app_name, "env": services.settings.get("env", {})})
        self.links = EmailLinks(self)
        self._by_email = compile_query("this.email == email", self.users)
        # Every encrypted field (also those flows write) is hashed in the bcrypt pool, at this cost.
        self.store.hasher = self.passwords.hash

    def now(self) -> float:
        return self.services.clock()

    async def start(self) -> None:
        await self.passwords.start()
        useragent.warm_up()

    async def close(self) -> None:
        await self.mailer.drain()

    # --- who is asking

    async def authenticate(self, request: Any, required: bool,
                           fresh: bool = False) -> tuple[dict[str, Any], dict[str, Any]] | None:  # fmt: skip
        """``(session, user)`` of the request's session token; None without one unless ``required``.

        The token comes from the ``Session`` header (the Altogic client), ``Authorization:
        Bearer``, or the ``session_token`` cookie. Missing: 401 ``missing_session_token``;
        unknown, ended or revoked: 401 ``invalid_session_token``, required or not; with
        ``fresh``, signed in too long ago: 401 ``reauth_required``.
        """
        if not required and session_token(request) is None:
            return None
        caller = await self.caller(request)
        if fresh:
            self.check_fresh(caller)
        return client_shape(caller.row, caller.token), caller.user

    async def caller(self, request: Any) -> Caller:
        """The request's live session and its user, else the 401 the client acts on."""
        token = session_token(request)
        if token is None:
            raise _session_error("missing_session_token", "A session token is required")
        row = await self.sessions.find(token)
        user = await self.store.get(USERS, row["userId"]) if row is not None else None
        if row is None or user is None:
            raise _session_error("invalid_session_token", "The session token is invalid or has expired")
        return Caller(row, token, user)

    def check_fresh(self, caller: Caller) -> None:
        """Nothing if the caller signed in within ``auth.session.fresh``; else 401 ``reauth_required``.

        The client keeps its session (the code is not one it drops sessions for): the user
        signs in again, and the new session is fresh.
        """
        if self.sessions.signed_in_ago(caller.row) > self.config.session_fresh:
            within = duration(self.config.session_fresh)
            message = f"Sign in again to make this change: it needs a session signed in within the last {within}"
            raise FlowError("reauth_required", message, status=401, origin="session_token_error")

    # --- signing up and in

    async def sign_up(self, email: Any, password: Any, profile: Any, *, trusted: bool, ip: str,
                      agent: str | None, base: str) -> dict[str, Any]:  # fmt: skip
        """Create an account; ``{user, session}``, with ``session: null`` until the email is confirmed."""
        email = self.check_email(email)
        password = self.passwords.check_new(password, avoid=(email,))
        extra = self._profile(profile, trusted)
        await self.limits.hit("signup_ip", ip)
        verified = extra.pop("emailVerified", False) is True
        if await self.find_user(email) is not None:
            if not self.config.confirm_email or verified:
                raise email_taken()  # the answer would carry a session: nothing to pretend
            # Answer as for a new address, in the same time, and tell the owner instead: a
            # sign-up form must not say which addresses have accounts (security A2).
            self.notify("account-exists", {"email": email})
            return {"user": await self._create(email, password, extra, verified, dry_run=True), "session": None}
        user = await self._create(email, password, extra, verified)
        if self.config.confirm_email and not verified:
            await self.links.send_verification(user, base)
            return {"user": user, "session": None}
        session, user = await self.open_session(user["_id"], agent)
        return {"user": user, "session": session}

    async def sign_in(self, email: Any, password: Any, *, ip: str, agent: str | None) -> dict[str, Any]:
        """``{user, session}`` for the right password; one answer for every wrong guess."""
        email = self.check_email(email)
        password = self.passwords.check_given(password)
        await self.limits.hit("signin_ip", ip)
        user = await self.check_password(email, None, password)
        if user is None:
            raise FlowError("invalid_credentials", "Invalid email or password", status=401)
        if self.config.confirm_email and not user.get("emailVerified"):
            # Said only to whoever knows the password, so it tells a guesser nothing; the Altogic
            # example apps compare this exact message to offer "resend the verification mail".
            raise FlowError("email_not_verified", "The email address has not been verified yet.", status=403)
        self.refuse_second_factor(user)
        session, user = await self.open_session(user["_id"], agent)
        return {"user": user, "session": session}

    def refuse_second_factor(self, user: Mapping[str, Any]) -> None:
        """A user with the app's second factor on may not sign in with one factor alone."""
        if self.config.second_factor and user.get(self.config.second_factor) is True:
            raise FlowError("second_factor_required",
                            "This account signs in with a second factor: use the app's two-factor sign-in",
                            status=403)  # fmt: skip

    async def open_session(self, user_id: str, agent: str | None, groups: Iterable[str] = ()) -> tuple[dict[str, Any], dict[str, Any]]:
        """A new session for an existing user, and the user with its ``lastLoginAt`` updated."""
        user = await self.store.update(USERS, user_id, {"lastLoginAt": self.moment()})
        if user is None:
            raise FlowError("user_not_found", f"There is no user with _id '{user_id}'", status=404)
        return await self.sessions.open(user_id, agent, groups), public(user)

    async def check_password(self, email: str, user_id: str | None, password: str) -> dict[str, Any] | None:
        """The account (sealed) if ``password`` is its password, else None.

        The guess is counted against the account first (by its address); a right one clears
        the count. An unknown account costs a bcrypt check all the same. A right password
        whose hash is outdated (a lower cost than the app's, or the bare bcrypt of older
        versions) is hashed again, at the app's cost.
        """
        await self.limits.hit("signin_account", email)
        user = await (self.store.get(USERS, user_id, sealed=True) if user_id else self.find_user(email, sealed=True))
        sealed = user.get("password") if user else None
        if not await self.passwords.matches(sealed, password):
            return None
        await self.limits.clear("signin_account", email)
        if self.passwords.outdated(sealed):
            await self.store.update(USERS, user["_id"], {"password": password})
        return user

    async def check_own_password(self, caller: Caller, password: str) -> None:
        """A signed-in user's current password, before a change to the account; else 400."""
        if await self.check_password(caller.user.get("email") or caller.user_id, caller.user_id, password) is None:
            raise FlowError("invalid_password", "The current password is not correct", status=400)

    # --- a signed-in user's own account

    async def list_sessions(self, caller: Caller) -> list[dict[str, Any]]:
        rows = await self.sessions.of_user(caller.user_id)
        return [client_shape(row, caller.token if row["_id"] == caller.row["_id"] else row["_id"]) for row in rows]

    async def sign_out(self, caller: Caller, handle: Any) -> None:
        """End the caller's session, or (from a fresh session) another of the user's sessions named by ``handle``."""
        if not handle or handle in (caller.token, caller.row["_id"]):
            await self.sessions.end(caller.user_id, caller.token)
            return
        self.check_fresh(caller)  # else a stolen session could sign the owner out of their devices
        await self.sessions.end(caller.user_id, handle)

    async def sign_out_all(self, caller: Caller, keep_own: bool) -> None:
        """End every session of the user (but the caller's with ``keep_own``); needs a fresh session."""
        self.check_fresh(caller)
        await self.sessions.end_all(caller.user_id, keep=caller.row["_id"] if keep_own else None)

    async def change_password(self, caller: Caller, new: Any, old: Any) -> None:
        """Replace the password after checking the old one; the user's other sessions end, the address is told."""
        new = self.passwords.check_new(new, "newPassword", avoid=(caller.user.get("email"),))
        old = self.passwords.check_given(old, "oldPassword")
        await self.check_own_password(caller, old)
        await self.store.update(USERS, caller.user_id, {"password": new})
        await self.sessions.end_all(caller.user_id, keep=caller.row["_id"])
        self.notify("password-changed", caller.user)

    async def setting_changed(self, caller: Caller, change: str) -> None:
        """A ``reauth`` field changed (``change`` says how): the user's other sessions end, the address is told."""
        await self.sessions.end_all(caller.user_id, keep=caller.row["_id"])
        self.notify("setting-changed", caller.user, change=change)

    def notify(self, template: str, user: dict[str, Any], **names: Any) -> None:
        """Mail a security notice to the account's address (in the background)."""
        if user.get("email"):
            self.mailer.send(template, user["email"], user=public(user), **names)

    # --- helpers

    async def find_user(self, email: str, sealed: bool = False) -> dict[str, Any] | None:
        return await self.store.find_one(USERS, self._by_email.evaluate({"email": email}), sealed=sealed)

    def check_email(self, email: Any, field: str = "email") -> str:
        """An email address as stored (trimmed, lower-case), else a 400 naming the field."""
        if not isinstance(email, str) or not email.strip():
            raise invalid(field, f"{field} is required")
        try:
            return self.users.validate({"email": email}, partial=True)["email"]
        except ValidationFailed:
            raise invalid(field, f"{field} must be a valid email address") from None

    def moment(self) -> str:
        return iso(datetime.fromtimestamp(self.now(), timezone.utc))

    def _profile(self, profile: Any, trusted: bool) -> dict[str, Any]:
        """``nameOrUserData``: a name, or extra user fields (never the ones auth manages)."""
        if profile is None or profile == "":
            return {}
        if isinstance(profile, str):
            return {"name": profile}
        if not isinstance(profile, Mapping):
            raise invalid("nameOrUserData", "nameOrUserData must be a name or an object of user fields")
        guarded = {name for name, f in self.users.fields.items() if f.readonly} | set(SYSTEM_FIELDS)
        allowed = TRUSTED_ONLY if trusted else frozenset()
        refused = sorted(name for name in profile if name in guarded and name not in allowed)
        if refused:
            raise ValidationFailed([_item(f"nameOrUserData.{name}", _refusal(name)) for name in refused])
        try:
            return self.users.validate(dict(profile), partial=True)
        except ValidationFailed as exc:  # name the fields as the request has them
            raise ValidationFailed([{**item, "details": {**item["details"], "field": f"nameOrUserData.{item['details']['field']}"}}
                                    for item in exc.items]) from None  # fmt: skip

    async def _create(self, email: str, password: str, extra: dict[str, Any], verified: bool,
                      dry_run: bool = False) -> dict[str, Any]:  # fmt: skip
        values = {**extra, "email": email, "password": password, "provider": "altogic",
                  "emailVerified": verified, "signUpAt": self.moment()}  # fmt: skip
        try:
            user = await self.store.create(USERS, values, dry_run=dry_run)
        except FlowError as exc:
            if exc.code == "unique_violation" and (exc.details or {}).get("field") == "email":
                raise email_taken() from None  # a sign-up with the same address won the race
            raise
        # Altogic's users carry their own _id as the provider's id.
        if dry_run:
            return public({**user, "providerUserId": user["_id"]})
        return await self.store.update(USERS, user["_id"], {"providerUserId": user["_id"]}) or user


def session_token(request: Any) -> str | None:
    """The session token a request carries, by the client's header, a bearer token or the cookie."""
    token = request.headers.get("session")
    if not token:
        scheme, _, value = (request.headers.get("authorization") or "").partition(" ")
        token = value.strip() if scheme.lower() == "bearer" else None
    return token or request.cookies.get("session_token") or None


def invalid(field: str, message: str) -> ValidationFailed:
    return ValidationFailed([_item(field, message)])


def _item(field: str, message: str) -> dict[str, Any]:
    return {"origin": "client_error", "code": "validation_error", "message": message, "details": {"field": field}}


def _refusal(name: str) -> str:
    if name in TRUSTED_ONLY:
        return f"nameOrUserData.{name} can be set only by a server calling with the app's API key"
    return f"nameOrUserData.{name} is managed by authentication and cannot be set at sign-up"


def _session_error(code: str, message: str) -> FlowError:
    return FlowError(code, message, status=401, origin="session_token_error")
