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
            # The reprs Celery would make with its saferepr (the ids the task gets), at a fraction of the cost.
            task.apply_async(args=args, argsrepr=repr(args), kwargsrepr="{}", **options)
        except Exception as exc:  # broker down: the sweeper re-enqueues later
            logger.error("could not enqueue %s (%s); the sweeper will retry", task.name, exc.__class__.__name__)

    transaction.on_commit(send)
