"""The operations that go through a link in an email: verify, magic link, reset, change email.

Each one has a sending side (an API call that mails a link to ``{base}/_auth/<target>?key=``)
and a redeeming side (the link target, then maybe ``grant`` or ``reset-pwd``). Opening a link
redeems nothing: the page it shows POSTs the key back, and only that POST redeems (the HTTP
side is in ``auth_api.py``), so a mail scanner that opens every link uses none up (security E3).

- ``verify``: the POST confirms the address and hands the redirect page a short-lived
  ``grant`` token, which ``grant`` turns into a session.
- ``magic``: the POST uses the link up and hands on a ``grant`` token the same way.
- ``reset``: the link only checks the token and passes it on to the app's form; ``reset-pwd``
  redeems it. Opening it uses nothing up, so it needs no page.
- ``change-email``: the POST confirms the new address, the old one is told, and the user's
  other sessions end.

The send calls that take an address answer ``null`` whether or not an account matched (no
enumeration); the mail goes out in the background. They need ``confirm_email`` on, as in
Altogic: an address nobody confirmed must not receive sign-in or reset links. Each kind of
email goes to one address at most once a minute (``email_spacing``), counted on the address
asked, known or not, so the 429 tells nothing either.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flowengine import otp
from flowengine.auth.users import USERS, email_taken, public
from flowengine.errors import FlowError

if TYPE_CHECKING:
    from flowengine.auth.service import AuthService, Caller

#: The paths the emails link to (served by ``flowengine/http/auth_api.py``).
TARGETS = {"verify": "verify", "magic": "magic", "reset": "reset", "change-email": "change-email"}


class EmailLinks:
    """The email-link half of an ``AuthService``."""

    def __init__(self, auth: AuthService) -> None:
        self.auth = auth

    # --- sending

    async def send_verification(self, user: dict[str, Any], base: str) -> None:
        token = await self.auth.tokens.issue("verify", user["_id"], replace=True, email=user["email"])
        self._mail("verify-email", user["email"], user, self._link(base, "verify", token), "verify")

    async def resend(self, email: Any, ip: str, base: str) -> None:
        """Send a new verification link, if the address belongs to an unconfirmed account."""
        user = await self._asked_for(email, ip, "verify")
        if user is not None and not user.get("emailVerified"):
            await self.send_verification(user, base)

    async def send_magic(self, email: Any, ip: str, base: str) -> None:
        user = await self._asked_for(email, ip, "magic")
        if user is not None and user.get("emailVerified"):
            token = await self.auth.tokens.issue("magic", user["_id"], replace=True)
            self._mail("magic-link", user["email"], user, self._link(base, "magic", token), "magic")

    async def send_reset(self, email: Any, ip: str, base: str) -> None:
        """Mail a reset link; it retires the account's previous one (security E4)."""
        user = await self._asked_for(email, ip, "reset")
        if user is not None and user.get("emailVerified"):
            token = await self.auth.tokens.issue("reset", user["_id"], replace=True)
            self._mail("reset-password", user["email"], user, self._link(base, "reset", token), "reset")

    async def change_email(self, caller: Caller, password: Any, new_email: Any, base: str) -> dict[str, Any]:
        """Move the account to ``new_email`` after checking the password.

        With ``confirm_email`` on, a link goes to the new address and the account keeps the
        old one until it is opened; the answer is the user as it is now. Once moved, the user's
        sessions end but the caller's (security E6).
        """
        auth = self.auth
        password = auth.passwords.check_given(password, "currentPassword")
        new_email = auth.check_email(new_email, "newEmail")
        await auth.check_own_password(caller, password)
        if await auth.find_user(new_email) is not None:
            raise email_taken()
        if not auth.config.confirm_email:
            return await self._move(caller.user_id, new_email, keep=caller.row["_id"])
        await auth.limits.hit("email_address", new_email)  # an account must not mail someone over and over
        token = await auth.tokens.issue("change-email", caller.user_id, replace=True, email=new_email,
                                        session=caller.row["_id"])  # fmt: skip
        self._mail("change-email", new_email, caller.user, self._link(base, "change-email", token), "change-email",
                   newEmail=new_email)  # fmt: skip
        return caller.user

    # --- redeeming: the link targets' POSTs, ``grant`` and ``reset-pwd``

    async def confirm(self, key: Any) -> str | None:
        """Mark the address confirmed; the ``grant`` token the redirect passes on, or None."""
        record = await self.auth.tokens.redeem("verify", key)
        user = await self._user(record)
        if record is None or user is None or user.get("email") != record["email"]:  # the address changed since
            return None
        await self.auth.store.update(USERS, user["_id"], {"emailVerified": True})
        return await self.auth.tokens.issue("grant", user["_id"])

    async def redeem_magic(self, key: Any) -> str | None:
        """Use up a magic link; the ``grant`` token the redirect passes on, or None."""
        user = await self._user(await self.auth.tokens.redeem("magic", key))
        return None if user is None else await self.auth.tokens.issue("grant", user["_id"])

    async def check(self, purpose: str, key: Any) -> str | None:
        """The key itself if it is a live token of ``purpose`` (magic, reset), left unredeemed."""
        return key if await self.auth.tokens.peek(purpose, key) is not None else None

    async def confirm_new_email(self, key: Any) -> bool:
        """Move the account to the address the link was sent to; False for a dead link."""
        record = await self.auth.tokens.redeem("change-email", key)
        user = await self._user(record)
        if record is None or user is None:
            return False
        await self._move(user["_id"], record["email"], keep=record.get("session"))  # 409 if taken meanwhile
        return True

    async def grant(self, key: Any, agent: str | None) -> dict[str, Any]:
        """``{user, session}`` for the access token of a confirmed address or a used magic link."""
        user = await self._user(await self.auth.tokens.redeem("grant", key))
        if user is None:
            raise invalid_token()
        self.auth.refuse_second_factor(user)
        session, user = await self.auth.open_session(user["_id"], agent)
        return {"user": user, "session": session}

    async def reset_password(self, key: Any, new: Any) -> None:
        """Set the password a reset link was for; every session of the user ends (no sign-in)."""
        auth = self.auth
        owner = await self._user(await auth.tokens.peek("reset", key))
        # checked before redeeming: a typo keeps the link alive
        new = auth.passwords.check_new(new, "newPassword", avoid=((owner or {}).get("email"),))
        user = await self._user(await auth.tokens.redeem("reset", key))
        if user is None:
            raise invalid_token()
        await auth.store.update(USERS, user["_id"], {"password": new})
        await auth.sessions.end_all(user["_id"])
        auth.notify("password-changed", user)
        await auth.limits.clear("signin_account", user.get("email") or user["_id"])  # a locked-out owner is back
        await otp.reset_failures(auth.services.cache, user["_id"])  # so are one-time codes (security O5)

    # --- helpers

    async def _asked_for(self, email: Any, ip: str, purpose: str) -> dict[str, Any] | None:
        """The account a send call for ``purpose`` names, after its checks and limits (None when there is none)."""
        auth = self.auth
        if not auth.config.confirm_email:
            raise FlowError("email_confirmation_disabled",
                            "Email confirmation is turned off for this app, so no auth emails are sent", status=400)  # fmt: skip
        email = auth.check_email(email)
        await auth.limits.hit("email_ip", ip)
        await auth.limits.hit("email_spacing", f"{purpose}:{email}")  # first: what it refuses counts for no hour
        await auth.limits.hit("email_address", email)
        return await auth.find_user(email)

    async def _user(self, record: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if record is None else await self.auth.store.get(USERS, record["userId"])

    async def _move(self, user_id: str, new_email: str, keep: str | None) -> dict[str, Any]:
        """Give the account ``new_email``; every session but ``keep`` ends, the old address is told."""
        before = await self.auth.store.get(USERS, user_id)
        if await self.auth.find_user(new_email) is not None:
            raise email_taken()
        try:
            user = await self.auth.store.update(USERS, user_id, {"email": new_email, "emailVerified": True})
        except FlowError as exc:
            raise email_taken() if exc.code == "unique_violation" else exc from None
        await self.auth.sessions.end_all(user_id, keep=keep)
        if before is not None and before.get("email"):
            self.auth.mailer.send("email-changed", before["email"], user=public(before), newEmail=new_email)
        return public(user or {})

    def _mail(self, template: str, to: str, user: dict[str, Any], link: str, purpose: str, **names: Any) -> None:
        self.auth.mailer.send(template, to, user=public(user), link=link, expires=duration(self.auth.config.token_lifetimes[purpose]), **names)

    @staticmethod
    def _link(base: str, purpose: str, token: str) -> str:
        return f"{base}/_auth/{TARGETS[purpose]}?key={token}"


def invalid_token() -> FlowError:
    return FlowError("invalid_access_token", "Invalid or expired access token", status=400)


def duration(seconds: float) -> str:
    """``900`` → "15 minutes", ``86400`` → "24 hours"."""
    for unit, size in (("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            count = int(seconds // size)
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{int(seconds)} seconds"
