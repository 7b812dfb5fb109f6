"""Celery tasks of the uploads app: thin, idempotent, stable names, ids as arguments."""

from __future__ import annotations

import logging
from datetime import timedelta

from celery import shared_task
from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.utils import timezone

from uploads.models import Upload, UploadBlob
from uploads.services.process import lease_seconds, upload_process

logger = logging.getLogger(__name__)


# No time limits of its own. Uploads run on the threads pool (queue `uploads`, docs/architecture.md §4),
# which can stop no thread and ignores time limits, soft or hard. A run is bounded by its lease and the
# timeouts of its calls instead (uploads/services/process.py): each WeChat call by WECHAT_HTTP_TIMEOUT
# per try, an upload call is started only while it can end inside the lease (so no other run takes the
# upload over and sends it while this call is in flight), and once another run has taken the upload
# over, this one can no longer write its result (compare-and-set on the lease). On a prefork pool (an
# operator's fallback) CELERY_TASK_TIME_LIMIT and CELERY_TASK_SOFT_TIME_LIMIT apply, beyond the lease;
# a run stopped there is taken over or swept.
@shared_task(
    name="uploads.upload_image",
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    max_retries=None,
)
def upload_image(self, upload_id: str) -> str:
    try:
        outcome = upload_process(upload_id=upload_id)
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
