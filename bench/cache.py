"""Cache set+get round trips per second: MemoryCache, RedisCache and raw redis.asyncio.

The raw loop does exactly what RedisCache does underneath (SET with PX, then GET, of the
same compact JSON) on a plain client, so ``ours / raw`` is the price of our layer: key
namespacing, JSON checks, error mapping and the bounded pool. Goal: at least 0.8.
Rounds alternate between contenders so a noisy moment hurts all of them alike; each
figure is the best round.

    python bench/cache.py [--url redis://127.0.0.1:6379/15] [--seconds 0.6] [--rounds 6]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from typing import Awaitable, Callable

from redis.asyncio import Redis

from flowengine.cache import MemoryCache, RedisCache

VALUE = {"code": 123456, "userId": "64f1c0ffee", "phoneNumber": "+15555550100", "tries": [1, 2]}
KEYS = [f"phone-code:{n}" for n in range(1000)]

RoundTrip = Callable[[str], Awaitable[None]]


def ours(cache: MemoryCache | RedisCache) -> RoundTrip:
    async def round_trip(key: str) -> None:
        await cache.set(key, VALUE, ttl=60)
        await cache.get(key)

    return round_trip


def raw(client: Redis, prefix: str) -> RoundTrip:
    async def round_trip(key: str) -> None:
        text = json.dumps(VALUE, ensure_ascii=False, separators=(",", ":"))
        await client.set(prefix + key, text, px=60_000)
        json.loads(await client.get(prefix + key))

    return round_trip


async def rate(round_trip: RoundTrip, seconds: float) -> float:
    """Round trips per second, one at a time, for about ``seconds``."""
    done, started = 0, time.perf_counter()
    deadline = started + seconds
    while time.perf_counter() < deadline:
        for key in KEYS[:100]:
            await round_trip(key)
        done += 100
    return done / (time.perf_counter() - started)


async def main(url: str, seconds: float, rounds: int) -> None:
    namespace = f"bench-{os.getpid()}"
    memory, redis_cache = MemoryCache(namespace), RedisCache.from_url(url, namespace)
    client = Redis.from_url(url)
    contenders = {
        "MemoryCache": ours(memory),
        "RedisCache": ours(redis_cache),
        "raw redis.asyncio": raw(client, f"{namespace}-raw:"),
    }
    best = dict.fromkeys(contenders, 0.0)
    try:
        for round_trip in contenders.values():  # warm up: connect, fill the pools
            await rate(round_trip, 0.2)
        for _ in range(rounds):
            for name, round_trip in contenders.items():
                best[name] = max(best[name], await rate(round_trip, seconds))
    finally:
        for pattern in (f"{namespace}:*", f"{namespace}-raw:*"):
            async for name in client.scan_iter(match=pattern):
                await client.delete(name)
        await redis_cache.close()
        await client.aclose()

    size = len(json.dumps(VALUE, separators=(",", ":")))
    print(f"cache set+get round trips/s: one client, sequential, {size}-byte JSON value, ttl 60 s")
    print(f"Redis at {url}; best of {rounds} rounds of {seconds} s\n")
    for name, value in best.items():
        print(f"  {name:<20} {value:>12,.0f}")
    ratio = best["RedisCache"] / best["raw redis.asyncio"]
    print(f"\n  RedisCache / raw     {ratio:>12.2f}   (goal >= 0.80)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/15")
    parser.add_argument("--seconds", type=float, default=0.6)
    parser.add_argument("--rounds", type=int, default=6)
    options = parser.parse_args()
    asyncio.run(main(options.url, options.seconds, options.rounds))
