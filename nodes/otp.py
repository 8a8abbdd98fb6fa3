"""One-time codes in flows: ``otp-issue`` makes a challenge, ``otp-verify`` checks a code.

The limits (digits, lifetime, guesses, send spacing and caps) live in ``flowengine.otp``;
these nodes only read their params and route the verdict.
"""

from __future__ import annotations

from flowengine.otp import OneTimeCodes, Policy
from flowengine.registry import Param, node_type

_PURPOSE = Param.literal({"type": "string", "pattern": "^[a-z][a-z0-9-]*$"}, required=True,
                         description="what the code is for; a code never verifies another purpose")  # fmt: skip
_DEFAULTS = Policy()


def _codes(ctx) -> OneTimeCodes:
    return OneTimeCodes(ctx.cache, ctx.services.secret, ctx.services.clock)


@node_type(
    "otp-issue",
    params={
        "purpose": _PURPOSE,
        "user": Param.expression(required=True, description="the user the code is for (their _id)"),
        "to": Param.expression(required=True, description="where the code goes (a phone number or email)"),
        "handle": Param.expression(description="what a later check may name the challenge by (default: 'to')"),
        "digits": Param.literal({"type": "integer", "minimum": 6, "maximum": 10}, default=_DEFAULTS.digits),
        "ttl": Param.literal({"type": "integer", "minimum": 60, "maximum": 600}, default=int(_DEFAULTS.ttl),
                             description="seconds the code is valid"),  # fmt: skip
        "attempts": Param.literal({"type": "integer", "minimum": 1, "maximum": 10}, default=_DEFAULTS.attempts),
        "channel": Param.literal({"enum": ["sms", "email"]}, default="sms",
                                 description="how the code will go out; an SMS number the app may not text is refused first"),  # fmt: skip
    },
    description=(
        "Issue a one-time code challenge; the result has challengeId, code (send it, e.g. with send-sms), "
        "expiresIn and destination. Sends to one destination are spaced and capped (429 when exceeded)."
    ),
)
async def otp_issue(ctx, params):
    policy = Policy(digits=params["digits"], ttl=params["ttl"], attempts=params["attempts"])
    to = params["to"]
    refuse = getattr(ctx.sms, "check", None) if params["channel"] == "sms" else None
    if refuse is not None:
        await refuse(str(to))  # a country the app does not text, a spent budget: nothing is stored or counted
    handle = params.get("handle") or to
    return "next", await _codes(ctx).issue(params["purpose"], str(params["user"]), str(to), str(handle), policy)


@node_type(
    "otp-verify",
    outputs=("verified", "invalid", "expired", "locked"),
    params={
        "purpose": _PURPOSE,
        "code": Param.expression(required=True),
        "challenge": Param.expression(description="the challengeId the client got (the strong form)"),
        "handle": Param.expression(description="else: the handle the challenge was issued under"),
        "user": Param.expression(description="when given, the challenge must belong to this user"),
    },
    description=(
        "Check a one-time code. 'verified' gives {user, destination, challengeId} from the challenge itself; "
        "'invalid' gives {attemptsLeft}; 'expired' covers missing, used and expired codes; "
        "'locked' follows too many wrong guesses, of the code or of the account (which then "
        "waits: {retryAfter} seconds; or, after 100 in a row, until a password reset)."
    ),
)
async def otp_verify(ctx, params):
    verdict = await _codes(ctx).check(
        params["purpose"], params["code"], _DEFAULTS, params.get("challenge"), params.get("handle"),
        owner=params.get("user"),
    )
    if verdict.outcome == "verified":
        record = verdict.challenge or {}
        return "verified", {"user": record["user"], "destination": record["destination"], "challengeId": record["id"]}
    return verdict.failure()
