"""Authenticator-app codes in flows: ``totp-setup``, ``totp-confirm`` and ``totp-verify``.

Enrolment is setup (show the QR code) → confirm (the first code; gives the sealed secret)
→ ``update-fields`` (store it in a ``secret`` field of users, which no read shows). Sign-in is
verify with that value, read with ``encrypted: true``. The rules (window, replay, sealing, the account's failure counter) live
in ``flowengine.totp``; these nodes only read their params and route the verdict.
"""

from __future__ import annotations

from flowengine.errors import FlowError
from flowengine.registry import Param, node_type
from flowengine.totp import Authenticator

_USER = Param.expression(required=True, description="the user the factor belongs to (their _id)")
_CODE = Param.expression(required=True, description="the 6-digit code from the authenticator app")


def _authenticator(ctx) -> Authenticator:
    return Authenticator(ctx.cache, ctx.services.secret, ctx.services.clock)


def _user(value) -> str:
    if not isinstance(value, str) or not value:
        raise FlowError("totp_no_user", "an authenticator code needs the user's _id", status=400, retryable=False)
    return value


@node_type(
    "totp-setup",
    params={
        "user": _USER,
        "account": Param.template(required=True, description="the name the app shows for the account (e.g. the email)"),
        "issuer": Param.template(required=True, description="the name the app shows for your service"),
    },
    description=(
        "Start enrolling an authenticator app: a new secret waits 10 minutes, sealed, for totp-confirm. "
        "The result has uri (show it as a QR code) and secret (for typing in); show them once, store neither."
    ),
)
async def totp_setup(ctx, params):
    return "next", await _authenticator(ctx).setup(_user(params["user"]), params["account"], params["issuer"])


@node_type(
    "totp-confirm",
    outputs=("verified", "invalid", "expired", "locked"),
    params={"user": _USER, "code": _CODE},
    description=(
        "Finish enrolling: check the first code against the pending secret. 'verified' gives {user, sealed}: "
        "store sealed (e.g. with update-fields, in a secret field) for totp-verify. 'invalid' gives "
        "{attemptsLeft}; 'expired': nothing pending; 'locked' as in otp-verify."
    ),
)
async def totp_confirm(ctx, params):
    user = _user(params["user"])
    verdict, sealed = await _authenticator(ctx).confirm(user, params["code"])
    if verdict.outcome == "verified":
        return "verified", {"user": user, "sealed": sealed}
    return verdict.failure()


@node_type(
    "totp-verify",
    outputs=("verified", "invalid", "locked"),
    params={
        "user": _USER,
        "code": _CODE,
        "sealed": Param.expression(
            required=True, description="the user's stored secret as totp-confirm sealed it (a secret field read with encrypted: true)"
        ),
    },
    description=(
        "Check an authenticator-app code (±30 s; each code works once). 'verified' gives {user}; 'invalid' "
        "gives {attemptsLeft} (also for a secret sealed for another user or app secret); 'locked' follows too "
        "many wrong codes of the account, SMS codes included ({retryAfter} seconds; or until a password reset), "
        "or another check of the user's codes still running ({retryAfter: 1})."
    ),
)
async def totp_verify(ctx, params):
    user = _user(params["user"])
    verdict = await _authenticator(ctx).verify(user, params["code"], params["sealed"])
    if verdict.outcome == "verified":
        return "verified", {"user": user}
    return verdict.failure()
