"""The Redis broker transport: kombu's, with one redis client per channel instead of one per operation.

kombu's Redis channel builds a new `redis.Redis` for every publish, every delivery's bookkeeping
(the unacknowledged-message index that acks_late relies on) and every ack. Building one costs about
0.1 ms of CPU with redis-py 8 (it fills a case-insensitive table of ~170 response callbacks), three
times per upload. A `redis.Redis` over a connection pool is safe to share between threads (each command
takes a connection from the pool), so the channel keeps one per pool and rebuilds it only when kombu
replaces the pool (after a fork or a reconnect). Nothing else changes: the same keys, the same
visibility-timeout redelivery. docs/architecture.md §7, "Cost".

Installed for `redis://` and `rediss://` broker URLs by `install()` (openplatform/celery.py).
"""

from __future__ import annotations

import threading

from kombu.transport import TRANSPORT_ALIASES
from kombu.transport import redis as kombu_redis


class Channel(kombu_redis.Channel):
    _shared_client = None
    _shared_client_pool = None
    _shared_client_lock = threading.Lock()

    def _create_client(self, asynchronous=False):
        if asynchronous:  # the channel's own BRPOP/pub-sub connection: kombu caches it already
            return super()._create_client(asynchronous=True)
        pool = self.pool
        client = self._shared_client
        if client is None or self._shared_client_pool is not pool:
            with self._shared_client_lock:
                if self._shared_client is None or self._shared_client_pool is not pool:
                    self._shared_client = super()._create_client()
                    self._shared_client_pool = pool
                client = self._shared_client
        return client


class Transport(kombu_redis.Transport):
    Channel = Channel


def install() -> None:
    """Make `redis://` and `rediss://` broker URLs use this transport (idempotent)."""
    for scheme in ("redis", "rediss"):
        TRANSPORT_ALIASES[scheme] = "openplatform.core.broker:Transport"
