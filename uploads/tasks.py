"""Celery tasks of the uploads app: thin, idempotent, stable names, ids as arguments."""

from __future__ import annotations

import logging
from datetime import timedelta

from celery import shared_task
from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from uploads.models import Upload, UploadBlob
from uploads.services.process import lease_seconds, upload_process

logger = logging.getLogger(__name__)


@shared_task(
    name="uploads.upload_image",
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    max_retries=None,
    soft_time_limit=settings.UPLOAD_LEASE_SECONDS - 15,
    time_limit=settings.UPLOAD_LEASE_SECONDS - 5,
)
def upload_image(self, upload_id: str) -> str:
    outcome = upload_process(upload_id=upload_id)
    if outcome.retry_in is not None:
        raise self.retry(countdown=outcome.retry_in)
    return outcome.status


#: A queued upload whose message should have run by now (broker lost it, or it was never sent).
STUCK_QUEUED_AFTER = timedelta(minutes=2)


@shared_task(name="uploads.sweep_stuck_uploads")
def sweep_stuck_uploads() -> int:
    """Beat: re-enqueue queued uploads past due and uploads whose worker's lease ran out."""
    now = timezone.now()
    stuck = Upload.objects.filter(
        Q(status=Upload.Status.QUEUED, next_attempt_at__lt=now - STUCK_QUEUED_AFTER)
        | Q(status=Upload.Status.QUEUED, next_attempt_at__isnull=True, created_at__lt=now - STUCK_QUEUED_AFTER)
        | Q(status=Upload.Status.UPLOADING, lease_until__lt=now)
    ).values_list("pk", flat=True)[:1000]
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
        Upload.objects.filter(status__in=Upload.FINAL_STATUSES, finished_at__lt=cutoff, bytes_purged_at__isnull=True)
        .values_list("pk", flat=True)[:5000]
    )
    if not ids:
        return 0
    deleted, _ = UploadBlob.objects.filter(upload_id__in=ids).delete()
    Upload.objects.filter(pk__in=ids).update(bytes_purged_at=timezone.now())
    return deleted
