"""The Celery app: `celery -A openplatform worker`, `celery -A openplatform beat`."""

import os

from celery import Celery, signals

from openplatform.core import broker

broker.install()  # kombu's Redis transport with one client per channel (openplatform/core/broker.py)
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "openplatform.settings")

app = Celery("openplatform")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@signals.worker_ready.connect
@signals.worker_process_init.connect
def _freeze_startup(**kwargs) -> None:
    """Keep what startup built out of later garbage collections (openplatform/core/garbage.py): in the
    worker's own process (worker_ready; where the threads pool runs tasks) and in each prefork child."""
    from openplatform.core.garbage import freeze_startup

    freeze_startup()


@signals.task_prerun.connect
@signals.task_postrun.connect
def _close_old_db_connections(sender=None, **kwargs) -> None:
    """Around each task, what Django does around each request: drop a connection that failed or
    outlived CONN_MAX_AGE, and health-check it before reuse (CONN_HEALTH_CHECKS). Celery itself only
    recycles connections every CELERY_DB_REUSE_MAX tasks (settings.py). Never in eager mode: a test's
    transaction must keep its connection.

    The signals fire in the thread that runs the task, and Django's connections are per thread: on the
    threads pool each thread keeps its own connection across its tasks and this checks that one. So a
    worker holds one PostgreSQL connection per thread that has run a task (at most --concurrency), a
    prefork worker one per pool process (deploy/OPERATIONS.md, "PostgreSQL connections")."""
    if getattr(getattr(sender, "request", None), "is_eager", False):
        return
    from django.db import close_old_connections

    close_old_connections()
