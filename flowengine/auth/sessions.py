"""Sessions: durable in the app's store, known to it only by the SHA-256 of their token.

A session's token is 256 random bits (``secrets.token_urlsafe(32)``), returned once when
the session opens; the ``_sessions`` table holds its digest, so a copy of the database
signs nobody in. A session ends at its absolute ``expiresAt`` or after ``idle`` seconds
unused; ``lastUsedAt`` is written at most once a minute, so reads do not turn every
request into a write. Ended sessions are deleted when next met.

A session also keeps ``signedInAt``: when its user proved who they are (a password, a
magic link, a second factor). A session signed in within the app's ``auth.session.fresh``
window (5 minutes by default) is *fresh*, and only a fresh session may make the changes
that take over an account (a phone, two-factor sign-in, revoking other sessions): a stolen
session token that is older than that must sign in again first.

What the client sees is the Altogic ``Session``: ``{userId, token, creationDtm,
accessGroupKeys, userAgent}``. Listing a user's sessions cannot show the other sessions'
tokens (none is kept, and each is a bearer credential), so there ``token`` is the session's
``_id``: an opaque handle that ``signOut(token)`` accepts from the same user, and that
signs nobody in. The calling session is listed with its real token, which the client
already holds and compares with its own.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from datetime import datetime, timezone
from typing import Any, Iterable

from flowengine.auth import useragent
from flowengine.errors import Location
from flowengine.models import Model, compile_model, iso
from flowengine.store.query import compile_query

SESSIONS = "_sessions"
#: ``lastUsedAt`` is refreshed when older than this many seconds.
TOUCH_EVERY = 60.0
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{20,128}$")

_VERSION = {"family": "text", "major": "text", "minor": "text", "patch": "text"}
_MODEL = {
    "description": "Signed-in sessions (internal to auth).",
    "fields": {
        "userId": {"type": "reference", "model": "users", "required": True, "indexed": True},
        "tokenHash": {"type": "text", "required": True, "unique": True},
        "userAgent": {"type": "object", "fields": {
            **_VERSION,
            "device": {"type": "object", "fields": {"family": "text", "brand": "text", "model": "text"}},
            "os": {"type": "object", "fields": _VERSION},
        }},
        "accessGroupKeys": {"type": "list", "items": "text"},
        "expiresAt": {"type": "datetime", "required": True},
        "lastUsedAt": {"type": "datetime", "required": True},
        "signedInAt": {"type": "datetime"},  # absent on sessions opened before it was kept: never fresh
    },
}  # fmt: skip


def internal_models() -> dict[str, Model]:
    """The models auth stores for itself; their names start with '_', which apps cannot use."""
    model, problems = compile_model(SESSIONS, _MODEL, lambda *keys: Location("flowengine/auth/sessions.py"))
    assert model is not None, problems  # a bug here is ours, not the app's
    return {SESSIONS: model}


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Sessions:
    """Opens, finds, lists and ends sessions in the app's store."""

    def __init__(self, store: Any, clock: Any, lifetime: float, idle: float) -> None:
        self.store = store
        self.clock = clock
        self.lifetime = lifetime
        self.idle = idle
        model = store.models[SESSIONS]
        self._by_hash = compile_query("this.tokenHash == hash", model)
        self._by_user = compile_query("this.userId == userId", model)

    async def open(self, user_id: str, agent: str | None, groups: Iterable[str] = ()) -> dict[str, Any]:
        """A new session for ``user_id``, in client shape with its token (shown this once)."""
        token, now = secrets.token_urlsafe(32), self.clock()
        row = await self.store.create(SESSIONS, {
            "userId": user_id, "tokenHash": digest(token), "accessGroupKeys": list(groups),
            "userAgent": useragent.compact(useragent.parse(agent)),
            "expiresAt": _moment(now + self.lifetime), "lastUsedAt": _moment(now), "signedInAt": _moment(now),
        })  # fmt: skip
        return client_shape(row, token)

    async def find(self, token: Any) -> dict[str, Any] | None:
        """The live session whose token this is, else None."""
        if not isinstance(token, str) or not _TOKEN.match(token):
            return None
        row = await self.store.find_one(SESSIONS, self._by_hash.evaluate({"hash": digest(token)}))
        if row is None or not await self._alive(row):
            return None
        if self.clock() - _seconds(row["lastUsedAt"]) > TOUCH_EVERY:
            await self.store.update(SESSIONS, row["_id"], {"lastUsedAt": _moment(self.clock())})
        return row

    async def of_user(self, user_id: str) -> list[dict[str, Any]]:
        """The user's live sessions, oldest first."""
        rows = await self.store.find_many(SESSIONS, self._by_user.evaluate({"userId": user_id}),
                                          sort={"createdAt": "asc"}, limit=1000)  # fmt: skip
        return [row for row in rows if await self._alive(row)]

    def signed_in_ago(self, row: dict[str, Any]) -> float:
        """Seconds since the session's user signed in (infinite when it is not known)."""
        at = row.get("signedInAt")
        return self.clock() - _seconds(at) if at else float("inf")

    async def named(self, user_id: str, handle: Any) -> dict[str, Any] | None:
        """One of the user's sessions, named by its token or by its ``_id`` (as listed); else None."""
        row = None
        if isinstance(handle, str) and _TOKEN.match(handle):
            row = await self.store.find_one(SESSIONS, self._by_hash.evaluate({"hash": digest(handle)}))
        if row is None:
            row = await self.store.get(SESSIONS, handle)
        return row if row is not None and row["userId"] == user_id else None

    async def end(self, user_id: str, handle: Any) -> bool:
        """End one of the user's sessions, named by its token or by its ``_id`` (as listed)."""
        row = await self.named(user_id, handle)
        return row is not None and await self.store.delete(SESSIONS, row["_id"])

    async def end_all(self, user_id: str, keep: str | None = None) -> int:
        """End every session of the user except the one whose ``_id`` is ``keep``; how many ended."""
        ended = 0
        where = self._by_user.evaluate({"userId": user_id})
        while rows := [r for r in await self.store.find_many(SESSIONS, where, limit=1000) if r["_id"] != keep]:
            for row in rows:
                ended += await self.store.delete(SESSIONS, row["_id"])
        return ended

    async def _alive(self, row: dict[str, Any]) -> bool:
        now = self.clock()
        if now < _seconds(row["expiresAt"]) and now - _seconds(row["lastUsedAt"]) < self.idle:
            return True
        await self.store.delete(SESSIONS, row["_id"])
        return False


def client_shape(row: dict[str, Any], token: str) -> dict[str, Any]:
    """A stored session as the Altogic client's ``Session``."""
    return {
        "userId": row["userId"],
        "token": token,
        "creationDtm": row["createdAt"],
        "accessGroupKeys": row.get("accessGroupKeys") or [],
        "userAgent": useragent.complete(row.get("userAgent")),
    }


def _moment(seconds: float) -> str:
    return iso(datetime.fromtimestamp(seconds, timezone.utc))


def _seconds(moment: str) -> float:
    return datetime.fromisoformat(moment).timestamp()
