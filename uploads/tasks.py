"""Celery tasks of the uploads app: thin, idempotent, stable names, ids as arguments."""

from __future__ import annotations

import logging
from datetime import timedelta

from celery import Task, shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.utils import timezone

from uploads.models import Upload, UploadBlob
from uploads.services.process import lease_seconds, upload_process

logger = logging.getLogger(__name__)


def upload_time_limits(lease: float) -> tuple[float, float]:
    """(soft, hard) time limits of one run, both inside the lease it holds.

    The hard limit ends a run before its lease does, so no other worker can take an upload over while
    its run is still alive. Proportional, so a short lease (tests) still leaves positive limits: with
    the 90 s default, 72 s soft and 81 s hard; with 20 s, 16 s and 18 s.
    """
    return lease * 0.8, lease * 0.9


SOFT_TIME_LIMIT, HARD_TIME_LIMIT = upload_time_limits(settings.UPLOAD_LEASE_SECONDS)


class WorkerTimeLimits(Task):
    """A task whose time limits are always the worker's own (computed from the worker's lease).

    Celery copies the *publisher's* task-level `time_limit`/`soft_time_limit` into every message it
    sends, and a worker obeys the message's over its own: an API process whose UPLOAD_LEASE_SECONDS
    differs from the worker's (or a message queued before the lease was changed) would give runs
    limits that no longer fit inside the worker's lease. So messages go out without limits and the
    worker falls back to the task's. (Found by tests/test_task_paths_worker.py: a worker with a 5 s
    lease ran uploads enqueued by a 90 s-lease process under 72/81 s limits.)
    """

    def apply_async(self, args=None, kwargs=None, task_id=None, producer=None, link=None, link_error=None,
                    shadow=None, **options):
        options.setdefault("time_limit", None)
        options.setdefault("soft_time_limit", None)
        return super().apply_async(args, kwargs, task_id, producer, link, link_error, shadow, **options)


@shared_task(
    name="uploads.upload_image",
    base=WorkerTimeLimits,
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    max_retries=None,
    soft_time_limit=SOFT_TIME_LIMIT,
    time_limit=HARD_TIME_LIMIT,
)
def upload_image(self, upload_id: str) -> str:
    try:
        outcome = upload_process(upload_id=upload_id)
    except SoftTimeLimitExceeded:
        # The run keeps its lease (and WeChat may have the image): come back when the lease has run
        # out, and the next run takes over, recording this one as lost.
        logger.warning("upload run hit its time limit", extra={"upload_id": upload_id})
        raise self.retry(countdown=lease_seconds() + 1) from None
    except (OperationalError, InterfaceError) as exc:
        # The database connection dropped (failover, restart, a killed backend); the broken connection is
        # closed after the task. Without a retry the message would be acked as failed and the upload left
        # to the sweeper (minutes). What the run committed stands: a claim it made keeps its lease, which
        # the retry waits out and then takes over.
        logger.warning("database unavailable during an upload run (%s); retrying", exc.__class__.__name__,
                       extra={"upload_id": upload_id})
        raise self.retry(countdown=1) from None
    if outcome.retry_in is not None:
        raise self.retry(countdown=outcome.retry_in)
    return outcome.status


#: A queued upload whose message should have run by now (broker lost it, or it was never sent).
STUCK_QUEUED_AFTER = timedelta(minutes=2)


@shared_task(name="uploads.sweep_stuck_uploads")
def sweep_stuck_uploads() -> int:
    """Beat: re-enqueue queued uploads past due and uploads whose worker's lease ran out."""
    now = timezone.now()
    stuck = Upload.objects.stuck(now=now, grace=STUCK_QUEUED_AFTER).values_list("pk", flat=True)[:1000]
    count = 0
    for pk in stuck:
        upload_image.delay(str(pk))
        count += 1
    if count:
        logger.warning("re-enqueued %d stuck uploads", count, extra={"lease_seconds": lease_seconds()})
    return count


@shared_task(name="uploads.purge_image_bytes")
def purge_image_bytes() -> int:
    """Beat: delete the bytes of final uploads older than the retention; the record stays."""
    cutoff = timezone.now() - timedelta(days=settings.UPLOAD_BYTES_RETENTION_DAYS)
    ids = list(
        Upload.objects.final()
        .filter(finished_at__lt=cutoff, bytes_purged_at__isnull=True)
        .values_list("pk", flat=True)[:5000]
    )
    if not ids:
        return 0
    deleted, _ = UploadBlob.objects.filter(upload_id__in=ids).delete()
    Upload.objects.filter(pk__in=ids).update(bytes_purged_at=timezone.now())
    return deleted
