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

from kombu.transport import TRANSPORT_ALIASES
from kombu.transport import redis as kombu_redis


class Channel(kombu_redis.Channel):
    #: (the pool, the client over it): replaced as one tuple, so a thread sees a matching pair. Two threads
    #: that build a client at once both get a working one; the last one built is kept.
    _shared: tuple | None = None

    def _create_client(self, asynchronous=False):
        if asynchronous:  # the channel's own BRPOP/pub-sub connection: kombu caches it already
            return super()._create_client(asynchronous=True)
        pool = self.pool
        shared = self._shared
        if shared is None or shared[0] is not pool:
            shared = self._shared = (pool, super()._create_client())
        return shared[1]


class Transport(kombu_redis.Transport):
    Channel = Channel


def install() -> None:
    """Make `redis://` and `rediss://` broker URLs use this transport (idempotent)."""
    for scheme in ("redis", "rediss"):
        TRANSPORT_ALIASES[scheme] = "openplatform.core.broker:Transport"
