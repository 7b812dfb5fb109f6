"""Enqueue after commit without ever failing the request that already stored its work.

If the broker is unreachable the row is still committed; the sweeper jobs find rows that were never
picked up and enqueue them again, so nothing accepted is lost.
"""

from __future__ import annotations

import logging

from django.db import transaction

logger = logging.getLogger(__name__)


def enqueue_on_commit(task, *args, **options) -> None:
    def send() -> None:
        try:
            task.apply_async(args=args, **options)
        except Exception as exc:  # broker down: the sweeper re-enqueues later
            logger.error("could not enqueue %s (%s); the sweeper will retry", task.name, exc.__class__.__name__)

    transaction.on_commit(send)
