"""The app's cache: JSON values with expiry, counters and capped lists.

Two backends with one meaning: ``MemoryCache`` (in-process, the embedded default) and
``RedisCache`` (shared by every server process). Values go through JSON in both, so what a
caller gets back is a fresh copy and a value Redis could not hold fails here too. Keys are
namespaced per app inside the backend; callers pass bare keys. Choose one by URL with
``open_cache``.
"""

from __future__ import annotations

import abc
import asyncio
import heapq
import logging
import json
import re
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from flowengine.errors import FlowError

log = logging.getLogger("flowengine.cache")

#: Longest ttl accepted (about 68 years): beyond it Redis refuses the expiry time.
MAX_TTL = 2.0**31


class Cache(abc.ABC):
    """What flows, auth and the outboxes use; both backends keep exactly these semantics.

    Failures are ``FlowError``s a flow can route or a request can answer with:
    ``cache_unavailable`` (503), ``cache_wrong_type`` and ``cache_not_integer`` (409: the key
    holds another kind of value), ``cache_invalid_ttl``, ``cache_invalid_amount`` and
    ``cache_invalid_cursor`` (400), ``cache_value_not_json`` (500: a flow's bug).
    """

    @abc.abstractmethod
    async def get(self, key: str) -> Any | None:
        """The value under ``key``; None when missing or expired."""

    @abc.abstractmethod
    async def get_many(self, keys: list[str]) -> list[Any | None]:
        """The values under ``keys``, in order; None for a missing key or a list."""

    @abc.abstractmethod
    async def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        """Store ``value``; any previous value and expiry are replaced."""

    @abc.abstractmethod
    async def take(self, key: str) -> Any | None:
        """Get and delete ``key`` in one atomic step; None when missing or expired.

        Of any number of concurrent takers of one key, exactly one gets the value: this is
        how single-use tokens are redeemed (Redis ``GETDEL``).
        """

    @abc.abstractmethod
    async def delete(self, *keys: str) -> int:
        """Remove ``keys``; how many existed."""

    @abc.abstractmethod
    async def exists(self, key: str) -> bool: ...

    @abc.abstractmethod
    async def increment(self, key: str, amount: int = 1, ttl: float | None = None) -> int:
        """Add ``amount`` atomically; a missing key starts at 0 and gets ``ttl``."""

    async def decrement(self, key: str, amount: int = 1, ttl: float | None = None) -> int:
        return await self.increment(key, -check_amount(amount), ttl)

    @abc.abstractmethod
    async def expire(self, key: str, ttl: float) -> bool:
        """Make ``key`` expire in ``ttl`` seconds; False when it does not exist."""

    @abc.abstractmethod
    async def ttl(self, key: str) -> float | None:
        """Seconds left; None when the key is missing or never expires."""

    @abc.abstractmethod
    async def keys(
        self, pattern: str = "*", cursor: str | None = None, count: int = 100
    ) -> tuple[list[str], str | None]:
        """One page of keys matching a Redis glob, and the cursor of the next (None: done).

        ``count`` is a page-size hint, as with Redis ``SCAN``.
        """

    @abc.abstractmethod
    async def stats(self) -> dict[str, Any]: ...

    @abc.abstractmethod
    async def push(self, key: str, value: Any, keep: int) -> None:
        """Add ``value`` in front of the list at ``key``, keeping the newest ``keep``."""

    @abc.abstractmethod
    async def items(self, key: str) -> list[Any]:
        """The list at ``key``, newest first; [] when missing."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    def space(self, name: str) -> Cache:
        """A part of this cache whose keys no other part can name (see ``CacheSpace``)."""
        return CacheSpace(self, name)


class CacheSpace(Cache):
    """A view of a cache under one more prefix: ``space.get("k")`` reads ``{name}:k``.

    The Altogic cache API lets any signed-in client read and change any key it names, so it
    gets a space of its own: sessions, codes, rate limits and flows' entries stay out of reach.
    """

    def __init__(self, cache: Cache, name: str) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
            raise ValueError(f"a cache space name takes letters, digits, - and _, not {name!r}")
        self.cache = cache
        self.prefix = f"{name}:"

    async def get(self, key: str) -> Any | None:
        return await self.cache.get(self.prefix + key)

    async def get_many(self, keys: list[str]) -> list[Any | None]:
        return await self.cache.get_many([self.prefix + key for key in keys])

    async def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        await self.cache.set(self.prefix + key, value, ttl)

    async def take(self, key: str) -> Any | None:
        return await self.cache.take(self.prefix + key)

    async def delete(self, *keys: str) -> int:
        return await self.cache.delete(*(self.prefix + key for key in keys))

    async def exists(self, key: str) -> bool:
        return await self.cache.exists(self.prefix + key)

    async def increment(self, key: str, amount: int = 1, ttl: float | None = None) -> int:
        return await self.cache.increment(self.prefix + key, amount, ttl)

    async def expire(self, key: str, ttl: float) -> bool:
        return await self.cache.expire(self.prefix + key, ttl)

    async def ttl(self, key: str) -> float | None:
        return await self.cache.ttl(self.prefix + key)

    async def keys(
        self, pattern: str = "*", cursor: str | None = None, count: int = 100
    ) -> tuple[list[str], str | None]:
        found, cursor = await self.cache.keys(self.prefix + pattern, cursor, count)  # the name has no glob characters
        return [key[len(self.prefix) :] for key in found], cursor

    async def stats(self) -> dict[str, Any]:
        count, cursor = 0, None
        while True:
            found, cursor = await self.keys("*", cursor, 1000)
            count += len(found)
            if cursor is None:
                return {**await self.cache.stats(), "keys": count}

    async def push(self, key: str, value: Any, keep: int) -> None:
        await self.cache.push(self.prefix + key, value, keep)

    async def items(self, key: str) -> list[Any]:
        return await self.cache.items(self.prefix + key)

    async def close(self) -> None:
        """The cache it is a view of is closed by its owner."""


def open_cache(url: str | None, namespace: str) -> Cache:
    """The cache an app's ``cache.url`` names: empty for in-process, else a Redis URL."""
    if not url:
        return MemoryCache(namespace)
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisCache.from_url(url, namespace)
    raise ValueError(f"cache url {url!r} is neither empty nor a redis://, rediss:// or unix:// URL")


# -- what both backends share ----------------------------------------------------------


def encode(key: str, value: Any) -> str:
    """``value`` as compact JSON; refuses what JSON cannot hold instead of storing a repr."""
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise FlowError("cache_value_not_json", f"Cannot cache '{key}': {exc}") from exc


def milliseconds(ttl: float) -> int:
    """A ttl in whole milliseconds (Redis ``PX``), at least 1."""
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not 0 < ttl <= MAX_TTL:
        raise FlowError(
            "cache_invalid_ttl", f"A cache ttl must be a positive number of seconds, not {ttl!r}", status=400
        )
    return max(1, round(ttl * 1000))


def check_amount(amount: int) -> int:
    """Counters move by whole numbers only (``True`` is not one)."""
    if isinstance(amount, bool) or not isinstance(amount, int):
        message = f"A cache increment must be an integer, not {amount!r}"
        raise FlowError("cache_invalid_amount", message, status=400)
    return amount


def _checked(key: str, count: int) -> int:
    """Refuse what Redis's 64-bit counters refuse."""
    if not -(2**63) <= count < 2**63:
        raise _not_integer(key)
    return count


def _wrong_type(key: str) -> FlowError:
    return FlowError("cache_wrong_type", f"The cache key '{key}' holds a list, not a value", status=409)


def _not_integer(key: str) -> FlowError:
    return FlowError(
        "cache_not_integer", f"The cache key '{key}' does not hold a 64-bit integer", status=409
    )


_GLOB = re.compile(r"\\(.)|(\*)|(\?)|\[(\^?)((?:\\.|[^\]\\])+)\]|(.)", re.S)
_CLASS = re.compile(r"\\(.)|(.)-(.)|(.)", re.S)


def glob(pattern: str) -> re.Pattern[str]:
    """Redis's glob (``*``, ``?``, ``[a-z]``, ``[^x]``, ``\\x``) as a regex, so both backends match alike."""
    parts = []
    for escaped, star, question, negate, members, char in _GLOB.findall(pattern):
        if star:
            parts.append(".*")
        elif question:
            parts.append(".")
        elif members:
            parts.append(f"[{'^' if negate else ''}{_members(members)}]")
        else:
            parts.append(re.escape(escaped or char))
    return re.compile("".join(parts), re.S)


def _members(members: str) -> str:
    out = []
    for escaped, low, high, char in _CLASS.findall(members):
        if low:  # Redis accepts a reversed range; a regex does not
            out.append(f"{re.escape(min(low, high))}-{re.escape(max(low, high))}")
        else:
            out.append(re.escape(escaped or char))
    return "".join(out)


# -- in-process ------------------------------------------------------------------------


@dataclass(slots=True)
class _Entry:
    value: str | list[str]  # JSON text, or a list of JSON texts (newest first)
    expires: float | None  # time.monotonic() deadline


class MemoryCache(Cache):
    """The embedded cache: one process, bounded to ``max_entries`` keys.

    Every method runs without awaiting, so each is atomic on the event loop. When full, a new
    key first drops the expired entries (a heap of deadlines finds them without a scan), then
    the least recently used ones.
    """

    def __init__(self, namespace: str = "", max_entries: int = 250_000) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, not {max_entries}")
        self.namespace = namespace  # one instance per app: the dict itself is the namespace
        self.max_entries = max_entries
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._deadlines: list[tuple[float, str]] = []
        self._warned = False

    async def get(self, key: str) -> Any | None:
        entry = self._live(key)
        if entry is None:
            return None
        if isinstance(entry.value, list):
            raise _wrong_type(key)
        return json.loads(entry.value)

    async def get_many(self, keys: list[str]) -> list[Any | None]:
        entries = [self._live(key) for key in keys]
        return [json.loads(e.value) if e and isinstance(e.value, str) else None for e in entries]

    async def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        self._store(key, encode(key, value), self._deadline(ttl))

    async def take(self, key: str) -> Any | None:
        entry = self._live(key)
        if entry is None:
            return None
        if isinstance(entry.value, list):
            raise _wrong_type(key)
        del self._entries[key]
        return json.loads(entry.value)

    async def delete(self, *keys: str) -> int:
        count = 0
        for key in keys:
            if self._live(key) is not None:
                del self._entries[key]
                count += 1
        return count

    async def exists(self, key: str) -> bool:
        return self._live(key) is not None

    async def increment(self, key: str, amount: int = 1, ttl: float | None = None) -> int:
        check_amount(amount)
        deadline, entry = self._deadline(ttl), self._live(key)
        if entry is None:
            self._store(key, str(_checked(key, amount)), deadline)
            return amount
        if isinstance(entry.value, list):
            raise _wrong_type(key)
        try:
            count = _checked(key, int(entry.value) + amount)
        except ValueError as exc:  # a JSON text that is not an integer: "1.5", "true", '"7"'
            raise _not_integer(key) from exc
        entry.value = str(count)
        return count

    async def expire(self, key: str, ttl: float) -> bool:
        deadline = self._deadline(ttl)
        entry = self._live(key)
        if entry is None:
            return False
        entry.expires = deadline
        self._track(key, deadline)
        return True

    async def ttl(self, key: str) -> float | None:
        entry = self._live(key)
        if entry is None or entry.expires is None:
            return None
        return max(0.0, entry.expires - time.monotonic())

    async def keys(
        self, pattern: str = "*", cursor: str | None = None, count: int = 100
    ) -> tuple[list[str], str | None]:
        # The cursor is the last key returned: pages walk the sorted keys, so a key present
        # all along is listed exactly once even while others come and go.
        self._drop_expired()
        match = glob(pattern).fullmatch
        names = sorted(k for k in self._entries if (cursor is None or k > cursor) and match(k))
        page = names[:count]
        return page, (page[-1] if len(names) > count else None)

    async def stats(self) -> dict[str, Any]:
        self._drop_expired()
        return {"backend": "memory", "keys": len(self._entries), "max_entries": self.max_entries}

    async def push(self, key: str, value: Any, keep: int) -> None:
        _check_keep(keep)
        text = encode(key, value)
        entry = self._live(key)
        if entry is None:
            self._store(key, [text], None)
        elif isinstance(entry.value, str):
            raise _wrong_type(key)
        else:
            entry.value.insert(0, text)
            del entry.value[keep:]

    async def items(self, key: str) -> list[Any]:
        entry = self._live(key)
        if entry is None:
            return []
        if isinstance(entry.value, str):
            raise _wrong_type(key)
        return [json.loads(text) for text in entry.value]

    async def close(self) -> None:
        self._entries.clear()
        self._deadlines.clear()

    @staticmethod
    def _deadline(ttl: float | None) -> float | None:
        return None if ttl is None else time.monotonic() + milliseconds(ttl) / 1000

    def _live(self, key: str) -> _Entry | None:
        """The entry under ``key`` unless expired, marked as just used."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.expires is not None and entry.expires <= time.monotonic():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry

    def _store(self, key: str, value: str | list[str], expires: float | None) -> None:
        if key not in self._entries:
            self._make_room()
        self._entries[key] = _Entry(value, expires)
        self._entries.move_to_end(key)
        if expires is not None:
            self._track(key, expires)

    def _make_room(self) -> None:
        self._drop_expired()
        if len(self._entries) >= self.max_entries and not self._warned:
            # Live keys are going: rate limits and one-time codes kept here can vanish early.
            # Production deployments use Redis (which should run with maxmemory-policy noeviction).
            log.warning("the in-process cache is full (%d keys): dropping the least recently used", self.max_entries)
            self._warned = True
        while len(self._entries) >= self.max_entries:
            self._entries.popitem(last=False)

    def _track(self, key: str, expires: float) -> None:
        heapq.heappush(self._deadlines, (expires, key))
        # Rewriting one key with a ttl leaves stale deadlines behind: rebuild the heap once
        # they outnumber the entries, so memory stays bounded by max_entries.
        if len(self._deadlines) > 2 * len(self._entries) + 64:
            self._deadlines = [(e.expires, k) for k, e in self._entries.items() if e.expires is not None]
            heapq.heapify(self._deadlines)

    def _drop_expired(self) -> None:
        now = time.monotonic()
        while self._deadlines and self._deadlines[0][0] <= now:
            expires, key = heapq.heappop(self._deadlines)
            entry = self._entries.get(key)
            if entry is not None and entry.expires == expires:  # else the deadline is stale
                del self._entries[key]


def _check_keep(keep: int) -> None:
    # LTRIM 0 -1 would keep everything: a cap below 1 is a caller's bug, not a request.
    if keep < 1:
        raise ValueError(f"keep must be at least 1, not {keep}")


# -- Redis -----------------------------------------------------------------------------


class RedisCache(Cache):
    """The shared cache: every key lives in Redis as ``{namespace}:{key}``.

    One pooled client. Short socket timeouts turn an unreachable or stalled Redis into a 503
    within about a second instead of a hung request; the pool drops broken connections and
    one immediate retry on a connection error reconnects, so service resumes by itself
    when Redis comes back. At most ``limit`` calls are in flight: a burst waits up to
    ``wait`` seconds for a slot rather than failing at the pool's cap.
    """

    def __init__(self, client: Redis, namespace: str, *, limit: int = 50, wait: float = 2.0) -> None:
        self.redis = client
        self.namespace = namespace
        self._prefix = f"{namespace}:"
        self._slots = asyncio.Semaphore(limit)
        self._wait = wait

    async def start(self) -> None:
        """Warn when Redis may evict keys: an evicted failure counter or spent budget would
        silently give an attacker fresh guesses and sends."""
        try:
            config = await self.redis.config_get("maxmemory-policy")
        except Exception:  # managed services often refuse CONFIG: nothing to tell then
            return
        policy = config.get("maxmemory-policy", "noeviction")
        if policy != "noeviction":
            log.warning("redis evicts keys under memory pressure (maxmemory-policy %s): rate limits and code "
                        "attempt counters may be lost; set maxmemory-policy noeviction", policy)  # fmt: skip

    @classmethod
    def from_url(cls, url: str, namespace: str, *, timeout: float = 1.0, connections: int = 50) -> RedisCache:
        client = Redis.from_url(
            url,
            max_connections=connections,
            socket_connect_timeout=timeout,
            socket_timeout=timeout,
            health_check_interval=15,
            # Only connection errors: a timed-out command may still run, so repeating it
            # could count an increment twice.
            retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
        )
        return cls(client, namespace, limit=connections, wait=2 * timeout)

    async def get(self, key: str) -> Any | None:
        async with self._call(key):
            text = await self.redis.get(self._prefix + key)
        return None if text is None else json.loads(text)

    async def get_many(self, keys: list[str]) -> list[Any | None]:
        if not keys:
            return []
        async with self._call():
            texts = await self.redis.mget([self._prefix + key for key in keys])
        return [None if text is None else json.loads(text) for text in texts]

    async def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        text, px = encode(key, value), None if ttl is None else milliseconds(ttl)
        async with self._call(key):
            await self.redis.set(self._prefix + key, text, px=px)

    async def take(self, key: str) -> Any | None:
        async with self._call(key):
            text = await self.redis.getdel(self._prefix + key)
        return None if text is None else json.loads(text)

    async def delete(self, *keys: str) -> int:
        if not keys:
            return 0
        async with self._call():
            return await self.redis.delete(*(self._prefix + key for key in keys))

    async def exists(self, key: str) -> bool:
        async with self._call(key):
            return bool(await self.redis.exists(self._prefix + key))

    async def increment(self, key: str, amount: int = 1, ttl: float | None = None) -> int:
        name, px = self._prefix + key, None if ttl is None else milliseconds(ttl)
        check_amount(amount)
        async with self._call(key):
            if px is None:
                return await self.redis.incrby(name, amount)
            # MULTI/EXEC: create the key at 0 with its ttl only if missing, then add, so
            # the ttl is set exactly when the key is created, and atomically.
            async with self.redis.pipeline(transaction=True) as tx:
                tx.set(name, 0, px=px, nx=True).incrby(name, amount)
                return (await tx.execute())[1]

    async def expire(self, key: str, ttl: float) -> bool:
        px = milliseconds(ttl)
        async with self._call(key):
            return bool(await self.redis.pexpire(self._prefix + key, px))

    async def ttl(self, key: str) -> float | None:
        async with self._call(key):
            left = await self.redis.pttl(self._prefix + key)
        return None if left < 0 else left / 1000

    async def keys(
        self, pattern: str = "*", cursor: str | None = None, count: int = 100
    ) -> tuple[list[str], str | None]:
        position = _cursor(cursor)
        match = _glob_escape(self._prefix) + pattern
        found: list[str] = []
        async with self._call():
            # SCAN pages may be short, even empty, long before the end: gather up to count.
            while True:
                position, batch = await self.redis.scan(position, match=match, count=count)
                found += [name.decode()[len(self._prefix) :] for name in batch]
                if position == 0 or len(found) >= count:
                    return found, (str(position) if position else None)

    async def stats(self) -> dict[str, Any]:
        match = _glob_escape(self._prefix) + "*"
        async with self._call():
            count = sum([1 async for _ in self.redis.scan_iter(match=match, count=1000)])
        return {"backend": "redis", "keys": count}

    async def push(self, key: str, value: Any, keep: int) -> None:
        _check_keep(keep)
        text, name = encode(key, value), self._prefix + key
        async with self._call(key):
            async with self.redis.pipeline(transaction=True) as tx:
                await tx.lpush(name, text).ltrim(name, 0, keep - 1).execute()

    async def items(self, key: str) -> list[Any]:
        async with self._call(key):
            texts = await self.redis.lrange(self._prefix + key, 0, -1)
        return [json.loads(text) for text in texts]

    async def close(self) -> None:
        await self.redis.aclose()

    def _call(self, key: str = "") -> _Call:
        return _Call(self, key)


class _Call:
    """One Redis call: a slot among the cache's ``limit``, and Redis failures as FlowErrors."""

    __slots__ = ("cache", "key")

    def __init__(self, cache: RedisCache, key: str) -> None:
        self.cache, self.key = cache, key

    async def __aenter__(self) -> None:
        slots = self.cache._slots
        if not slots.locked():
            await slots.acquire()  # free: returns at once, no timer to arm
            return
        try:
            async with asyncio.timeout(self.cache._wait):
                await slots.acquire()
        except TimeoutError as exc:
            raise _unavailable() from exc

    async def __aexit__(self, kind: type | None, error: BaseException | None, traceback: Any) -> None:
        self.cache._slots.release()
        if isinstance(error, (RedisConnectionError, RedisTimeoutError)):
            raise _unavailable() from error
        if isinstance(error, ResponseError):
            if "WRONGTYPE" in str(error):
                raise _wrong_type(self.key) from error
            if "not an integer" in str(error) or "overflow" in str(error):
                raise _not_integer(self.key) from error


def _unavailable() -> FlowError:
    return FlowError("cache_unavailable", "The cache service is unavailable", status=503)


def _cursor(cursor: str | None) -> int:
    if cursor is None:
        return 0
    if not (cursor.isascii() and cursor.isdigit()):
        raise FlowError("cache_invalid_cursor", f"Not a cache cursor: {cursor!r}", status=400)
    return int(cursor)


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)

