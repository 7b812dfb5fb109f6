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
    now = time.time()
    bucket = f"{key}:{int(now // window)}"
    left = window - (now % window)
    redis_client = _redis_client()
    if redis_client is not None:
        name = cache.make_and_validate_key(bucket)
        if not add:
            return int(redis_client.get(name) or 0), left
        pipe = redis_client.pipeline(transaction=True)
        pipe.incrby(name, add)
        pipe.expire(name, window + 1, nx=True)
        hits, _ = pipe.execute()
        return int(hits), left
    if not add:
        return int(cache.get(bucket) or 0), left
    for _ in range(2):
        cache.add(bucket, 0, timeout=window + 1)
        try:
            return int(cache.incr(bucket, add)), left
        except ValueError:  # expired between add() and incr(): start it again
            continue
    return add, left


def _redis_client():
    """The default cache's redis client when it is the Redis backend (openplatform/core/cache.py), else None."""
    backend = getattr(cache, "_cache", None)
    if not isinstance(backend, RedisCacheClient):
        return None
    return backend.get_client(write=True)
