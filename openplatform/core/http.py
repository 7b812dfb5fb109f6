"""Who is asking, and how often: the client's address and the cache counters the throttles share.

One rule for the client's address across the app (the merchant API's throttles, the failed-key
limit, the admin allow-list): REMOTE_ADDR, or the X-Forwarded-For entry appended by the outermost of
TRUSTED_PROXY_COUNT trusted proxies (DRF's NUM_PROXIES, set from it in settings.py). A client-sent
X-Forwarded-For is never believed when no proxy is trusted.

Counters live in the Django cache, which production requires to be shared (CACHE_URL, Redis): a
per-process counter would let each web process grant the limit again.
"""

from __future__ import annotations

import time

from django.core.cache import cache
from redis.commands.core import Script
from rest_framework.throttling import BaseThrottle

from openplatform.core.cache import RedisCacheClient


def client_address(request) -> str:
    """The client's address (a Django HttpRequest or a DRF Request)."""
    return BaseThrottle().get_ident(request)


def window_hits(key: str, *, window: int, add: int = 1) -> tuple[int, float]:
    """Count `add` hits on `key` in the current fixed window of `window` seconds, atomically.

    Returns (hits in this window so far, seconds until the window ends). `add=0` only reads. The
    increment is atomic (Redis INCRBY, or the locmem cache's incr), so concurrent requests from several
    processes never lose a count, unlike a read-modify-write of a list. On Redis it is one round trip:
    INCRBY and EXPIRE NX in one script (docs/architecture.md §7, "Cost").
    """
    if add:
        return window_hits_many([(key, window)], add=add)[0]
    now = time.time()
    bucket = f"{key}:{int(now // window)}"
    left = window - (now % window)
    redis_client = _redis_client()
    if redis_client is not None:
        return int(redis_client.get(cache.make_and_validate_key(bucket)) or 0), left
    return int(cache.get(bucket) or 0), left


#: For each key: INCRBY by ARGV[1], then EXPIRE NX with its own ARGV[i + 1]; the counts, in order. A script
#: runs atomically, like the MULTI it replaces, and is one command to send and one reply to read instead
#: of six (MULTI, INCRBY and EXPIRE per counter, EXEC): 77 -> 50 us of client CPU for two counters.
#: EXPIRE NX needs Redis 7.
_COUNT = Script(None, b"""local counts = {}
for i, key in ipairs(KEYS) do
  counts[i] = redis.call('INCRBY', key, ARGV[1])
  redis.call('EXPIRE', key, ARGV[i + 1], 'NX')
end
return counts""")


def window_hits_many(counters: list[tuple[str, int]], *, add: int = 1) -> list[tuple[int, float]]:
    """`window_hits` for several (key, window) counters at once: on Redis, all of them in one script call
    (one round trip for a request's per-key and per-tenant throttles)."""
    now = time.time()
    buckets = [(f"{key}:{int(now // window)}", window, window - (now % window)) for key, window in counters]
    redis_client = _redis_client()
    if redis_client is not None:
        counts = _COUNT(keys=[cache.make_and_validate_key(bucket) for bucket, _w, _l in buckets],
                        args=[add, *(window + 1 for _b, window, _l in buckets)], client=redis_client)
        return [(int(count), left) for count, (_b, _w, left) in zip(counts, buckets, strict=True)]
    return [(_locmem_hits(bucket, window, add), left) for bucket, window, left in buckets]


def _locmem_hits(bucket: str, window: int, add: int) -> int:
    for _ in range(2):
        cache.add(bucket, 0, timeout=window + 1)
        try:
            return int(cache.incr(bucket, add))
        except ValueError:  # expired between add() and incr(): start it again
            continue
    return add


def _redis_client():
    """The default cache's redis client when it is the Redis backend (openplatform/core/cache.py), else None."""
    backend = getattr(cache, "_cache", None)
    if not isinstance(backend, RedisCacheClient):
        return None
    return backend.get_client(write=True)
