"""Django's Redis cache with one client object per connection pool (docs/architecture.md §7, "Cost").

Django's RedisCacheClient builds a new `redis.Redis` for every operation; with redis-py 5+ that
constructor fills a table of ~200 response callbacks, about 0.3 ms of CPU each time, several times per
API request (the throttles and the failed-key counter). A `redis.Redis` is safe to share between
threads (each command takes a connection from the pool), so this backend builds it once per pool.
Everything else is Django's backend unchanged.
"""

from __future__ import annotations

from django.core.cache.backends.redis import RedisCache as DjangoRedisCache
from django.core.cache.backends.redis import RedisCacheClient as DjangoRedisCacheClient


class RedisCacheClient(DjangoRedisCacheClient):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._clients: dict[int, object] = {}

    def get_client(self, key=None, *, write=False):
        pool = self._get_connection_pool(write)
        client = self._clients.get(id(pool))
        if client is None:
            client = self._clients[id(pool)] = self._client(connection_pool=pool)
        return client


class RedisCache(DjangoRedisCache):
    def __init__(self, server, params) -> None:
        super().__init__(server, params)
        self._class = RedisCacheClient
