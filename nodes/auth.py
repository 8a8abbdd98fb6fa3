"""``create-session`` and ``delete-sessions``: a flow signs a user in, or out everywhere.

The two-factor tutorial checks the password and the SMS code in its own flows, then signs
the user in with ``create-session``; its result is the session exactly as the client
stores it, token included, so the flow returns it as it is::

    signIn:
      type: create-session
      user: findUser._id
      next: done
    done:
      type: return-success
      body: { session: signIn, found: findUser }

After a change that could take over the account (a new phone, say), ``delete-sessions``
ends the user's other sessions and ``keep: session.token`` leaves the caller's own open::

    endOtherSessions:
      type: delete-sessions
      user: user._id
      keep: session.token
      next: done

The session records the request's ``User-Agent`` (the run's ``params.headers``). Both nodes
need the app's built-in authentication (an ``auth:`` section in app.yaml, or a
``models/users.yaml``).
"""

from __future__ import annotations

from typing import Any

from flowengine.errors import FlowError
from flowengine.registry import Param, node_type


@node_type(
    "create-session",
    description="Sign a user in: open a session for the user and return it (token included).",
    params={
        "user": Param.expression(required=True, description="the user's _id"),
        "accessGroupKeys": Param.expression(description="access group keys to put on the session (a list of text)"),
    },
)
async def create_session(ctx, params):
    auth = _auth(ctx)
    groups = params.get("accessGroupKeys") or []
    if not isinstance(groups, list) or not all(isinstance(key, str) for key in groups):
        raise FlowError("invalid_access_groups", "accessGroupKeys must be a list of text", status=500)
    headers = (ctx.scope.get("params") or {}).get("headers") or {}
    session, _ = await auth.open_session(_user_id(params["user"]), headers.get("user-agent"), groups)
    return "next", session


@node_type(
    "delete-sessions",
    description="Sign a user out everywhere: end all of the user's sessions (but keep); the result is how many ended.",
    params={
        "user": Param.expression(required=True, description="the user's _id"),
        "keep": Param.expression(description="a session of the user's to leave open, by its token (session.token: the caller's)"),
    },
)
async def delete_sessions(ctx, params):
    sessions, user = _auth(ctx).sessions, _user_id(params["user"])
    kept = await sessions.named(user, params["keep"]) if params.get("keep") else None
    return "next", await sessions.end_all(user, keep=kept["_id"] if kept else None)


def _auth(ctx: Any) -> Any:
    if ctx.auth is None:
        raise FlowError("auth_not_configured", "Sessions need built-in authentication: add an auth: section to app.yaml", status=500)
    return ctx.auth


def _user_id(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise FlowError("invalid_user_id", "user must be a user's _id (text)", status=400)
    return value
