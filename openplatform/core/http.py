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
    INCRBY and EXPIRE NX in one MULTI (docs/architecture.md §7, "Cost").
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


def window_hits_many(counters: list[tuple[str, int]], *, add: int = 1) -> list[tuple[int, float]]:
    """`window_hits` for several (key, window) counters at once: on Redis, all of them in one MULTI (one
    round trip for a request's per-key and per-tenant throttles)."""
    now = time.time()
    buckets = [(f"{key}:{int(now // window)}", window, window - (now % window)) for key, window in counters]
    redis_client = _redis_client()
    if redis_client is not None:
        pipe = redis_client.pipeline(transaction=True)
        for bucket, window, _left in buckets:
            name = cache.make_and_validate_key(bucket)
            pipe.incrby(name, add)
            pipe.expire(name, window + 1, nx=True)
        replies = pipe.execute()
        return [(int(replies[2 * i]), left) for i, (_b, _w, left) in enumerate(buckets)]
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
