"""Processing one upload (the task body): claim, check, upload, record, classify (DESIGN.md §3.5).

State machine: queued -> uploading (claimed with a lease) -> succeeded | failed | rejected, or back to
queued with `next_attempt_at` for a transient error. A claim is a conditional UPDATE, so two
deliveries of the same task never upload concurrently; a delivery that finds a live lease is told
to come back when the lease ends (the lease outlives every timeout inside one run).

45009 (daily quota) fails the upload with a clear message rather than deferring it until the quota
resets (midnight Beijing time): a merchant expects an answer within minutes, and the admin
"retry" action resends it once the quota is back.
"""

from __future__ import annotations

import logging
import random
import socket
import time
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from openplatform.component import wechat_client
from openplatform.wechat.client import RetryPolicy
from openplatform.wechat.errors import (
    ERRCODE_MEANINGS,
    InvalidPayload,
    PermissionDenied,
    QuotaExceeded,
    TokenInvalid,
    TransientError,
    WeChatError,
)
from openplatform.wechat.permissions import UPLOADIMG_REQUIRED_ANY_OF, can_upload_images, uploadimg_hint
from tenants.errors import AuthorizerUnavailable, ReauthorizationRequired
from tenants.models import Authorizer
from tenants.services.tokens import authorizer_access_token_get, authorizer_access_token_refresh
from uploads.models import Upload, UploadAttempt, UploadBlob

logger = logging.getLogger(__name__)

NO_RETRY = RetryPolicy(max_retries=0)
WORKER_NAME = socket.gethostname()


def lease_seconds() -> int:
    return settings.UPLOAD_LEASE_SECONDS


def max_attempts() -> int:
    return settings.UPLOAD_MAX_ATTEMPTS


def retry_delay(attempt: int, *, error: WeChatError | None = None) -> float:
    """Capped exponential backoff with full jitter; a minute-quota error waits at least a minute."""
    base, cap = settings.UPLOAD_RETRY_BASE_SECONDS, settings.UPLOAD_RETRY_MAX_SECONDS
    delay = random.uniform(0, min(cap, base * 2 ** max(0, attempt - 1)))
    if error is not None and error.errcode == 45011:
        delay = max(delay, 60.0)
    return max(delay, base / 2)


@dataclass(frozen=True)
class Outcome:
    status: str
    #: Seconds after which the task should run again (transient error, or someone else's live lease).
    retry_in: float | None = None


def _claim(upload_id) -> int:
    now = timezone.now()
    return Upload.objects.filter(
        Q(pk=upload_id)
        & (
            Q(status=Upload.Status.QUEUED, next_attempt_at__lte=now)
            | Q(status=Upload.Status.QUEUED, next_attempt_at__isnull=True)
            | Q(status=Upload.Status.UPLOADING, lease_until__lt=now)
        )
    ).update(
        status=Upload.Status.UPLOADING,
        started_at=now,
        lease_until=now + timedelta(seconds=lease_seconds()),
        updated_at=now,
    )


def _finish(upload: Upload, status: str, *, url: str = "", errcode: int | None = None, errmsg: str = "") -> Outcome:
    now = timezone.now()
    upload.status, upload.url, upload.errcode, upload.errmsg = status, url, errcode, errmsg[:4000]
    upload.finished_at, upload.lease_until, upload.next_attempt_at = now, None, None
    upload.save(update_fields=[
        "status", "url", "errcode", "errmsg", "finished_at", "lease_until", "next_attempt_at",
        "permission_required", "permission_granted", "permission_passed", "attempts", "updated_at",
    ])
    logger.info("upload %s", status, extra={"upload_id": str(upload.pk), "errcode": errcode})
    return Outcome(status)


def _requeue(upload: Upload, delay: float, *, errcode: int | None, errmsg: str) -> Outcome:
    upload.status = Upload.Status.QUEUED
    upload.errcode, upload.errmsg = errcode, errmsg[:4000]
    upload.next_attempt_at = timezone.now() + timedelta(seconds=delay)
    upload.lease_until = None
    upload.save(update_fields=[
        "status", "errcode", "errmsg", "next_attempt_at", "lease_until", "permission_required",
        "permission_granted", "permission_passed", "attempts", "updated_at",
    ])
    return Outcome(Upload.Status.QUEUED, retry_in=delay)


def upload_process(*, upload_id) -> Outcome:
    upload = Upload.objects.select_related("authorizer").filter(pk=upload_id).first()
    if upload is None or upload.is_final:
        return Outcome(upload.status if upload else "missing")
    if not _claim(upload_id):
        upload.refresh_from_db(fields=["status", "lease_until", "next_attempt_at"])
        if upload.is_final:
            return Outcome(upload.status)
        # Another delivery owns a live lease, or backoff has not elapsed: come back then.
        due = upload.lease_until if upload.status == Upload.Status.UPLOADING else upload.next_attempt_at
        wait = max(1.0, (due - timezone.now()).total_seconds() + 1) if due else 1.0
        return Outcome(upload.status, retry_in=wait)
    upload.status = Upload.Status.UPLOADING
    authorizer: Authorizer = upload.authorizer

    if authorizer.status != Authorizer.Status.AUTHORIZED:
        return _finish(upload, Upload.Status.REJECTED,
                       errmsg=f"authorizer {authorizer.appid} is {authorizer.status}; nothing was sent to WeChat")
    granted = sorted(authorizer.func_info or [])
    upload.permission_required = list(UPLOADIMG_REQUIRED_ANY_OF)
    upload.permission_granted = granted
    upload.permission_passed = can_upload_images(granted)
    if not upload.permission_passed:
        return _finish(upload, Upload.Status.REJECTED, errmsg=(
            "permission-set check failed: uploadimg needs one of "
            f"{', '.join(map(str, UPLOADIMG_REQUIRED_ANY_OF))}; "
            + uploadimg_hint(is_mini_program=authorizer.is_mini_program)
        ))
    blob = UploadBlob.objects.filter(upload_id=upload.pk).values_list("data", flat=True).first()
    if blob is None:
        return _finish(upload, Upload.Status.FAILED, errmsg="the image bytes are no longer stored (retention)")
    return _attempt_upload(upload, authorizer, bytes(blob))


def _attempt_upload(upload: Upload, authorizer: Authorizer, data: bytes) -> Outcome:
    token_retried = False
    while True:
        try:
            lease = authorizer_access_token_get(authorizer=authorizer)
        except ReauthorizationRequired as exc:
            return _finish(upload, Upload.Status.FAILED, errcode=61023, errmsg=str(exc))
        except AuthorizerUnavailable as exc:
            return _finish(upload, Upload.Status.REJECTED, errmsg=f"{exc}; nothing was sent to WeChat")
        except TransientError as exc:
            return _transient(upload, exc, "could not get an access token")
        except WeChatError as exc:
            return _finish(upload, Upload.Status.FAILED, errcode=exc.errcode, errmsg=f"access token: {exc}")

        number = upload.attempts + 1
        upload.attempts = number
        started = timezone.now()
        t0 = time.perf_counter()
        try:
            result = wechat_client().upload_image(access_token=lease.token, data=data, retry=NO_RETRY)
        except WeChatError as exc:
            duration = (time.perf_counter() - t0) * 1000
            outcome = _classify(exc, token_retried)
            _record_attempt(upload, number, started, duration, exc.http_status, exc.errcode, exc.errmsg,
                            outcome, lease.generation)
            if outcome == UploadAttempt.Outcome.TOKEN_INVALID:
                token_retried = True
                try:  # expire this token only if it is still current; one refresh, one retry
                    authorizer_access_token_refresh(authorizer=authorizer, failed_generation=lease.generation)
                except ReauthorizationRequired as rexc:
                    return _finish(upload, Upload.Status.FAILED, errcode=61023, errmsg=str(rexc))
                except (WeChatError, AuthorizerUnavailable) as rexc:
                    return _transient(upload, rexc if isinstance(rexc, WeChatError) else exc, "token refresh failed")
                continue
            if outcome == UploadAttempt.Outcome.TRANSIENT:
                return _transient(upload, exc, "WeChat did not answer")
            return _finish(upload, Upload.Status.FAILED, errcode=exc.errcode, errmsg=_explain(exc, authorizer))
        _record_attempt(upload, number, started, result.latency_ms, result.http_status, 0, "ok",
                        UploadAttempt.Outcome.SUCCEEDED, lease.generation)
        return _finish(upload, Upload.Status.SUCCEEDED, url=result.url, errcode=0, errmsg="")


def _classify(exc: WeChatError, token_retried: bool) -> str:
    if isinstance(exc, TokenInvalid):
        return UploadAttempt.Outcome.FAILED if token_retried else UploadAttempt.Outcome.TOKEN_INVALID
    if exc.retryable:
        return UploadAttempt.Outcome.TRANSIENT
    return UploadAttempt.Outcome.FAILED


def _transient(upload: Upload, exc: WeChatError, what: str) -> Outcome:
    errmsg = f"{what}: {exc.describe()}"
    if upload.attempts >= max_attempts():
        return _finish(upload, Upload.Status.FAILED, errcode=exc.errcode,
                       errmsg=f"{errmsg} (gave up after {upload.attempts} attempts)")
    return _requeue(upload, retry_delay(upload.attempts, error=exc), errcode=exc.errcode, errmsg=errmsg)


def _explain(exc: WeChatError, authorizer: Authorizer) -> str:
    meaning = ERRCODE_MEANINGS.get(exc.errcode or 0, "")
    text = f"{exc.errcode} {exc.errmsg}".strip()
    if meaning:
        text += f" ({meaning})"
    if isinstance(exc, PermissionDenied):
        text += "; " + uploadimg_hint(is_mini_program=authorizer.is_mini_program)
    elif isinstance(exc, QuotaExceeded):
        text += "; the account's daily uploadimg quota is used up: retry after it resets (00:00 Beijing time)"
    elif isinstance(exc, TokenInvalid):
        text += "; WeChat refused a freshly refreshed token too"
    elif isinstance(exc, InvalidPayload):
        text += "; WeChat refused the image itself"
    return text


def _record_attempt(upload, number, started, duration_ms, http_status, errcode, errmsg, outcome, generation) -> None:
    UploadAttempt.objects.create(
        upload=upload, number=number, started_at=started, duration_ms=round(duration_ms, 2),
        http_status=http_status, errcode=errcode, errmsg=(errmsg or "")[:2000], outcome=outcome,
        token_generation=generation, worker=WORKER_NAME,
    )


def upload_retry(*, upload: Upload) -> Upload:
    """Admin action: send a failed upload again as a new attempt on the same record."""
    if upload.status != Upload.Status.FAILED:
        raise ValueError(f"only failed uploads can be retried (this one is {upload.status})")
    if not UploadBlob.objects.filter(upload_id=upload.pk).exists():
        raise ValueError("the image bytes are no longer stored (retention); ask the merchant to upload again")
    from openplatform.queueing import enqueue_on_commit
    from uploads.tasks import upload_image

    with transaction.atomic():
        Upload.objects.filter(pk=upload.pk, status=Upload.Status.FAILED).update(
            status=Upload.Status.QUEUED, next_attempt_at=timezone.now(), finished_at=None,
            attempts=F("attempts"), updated_at=timezone.now(),
        )
        enqueue_on_commit(upload_image, str(upload.pk))
    upload.refresh_from_db()
    return upload


def uploads_reject_for_authorizer(*, authorizer_id: int, reason: str) -> int:
    """Queued uploads of a revoked authorizer become `rejected` (never sent)."""
    now = timezone.now()
    return Upload.objects.filter(authorizer_id=authorizer_id, status=Upload.Status.QUEUED).update(
        status=Upload.Status.REJECTED, errmsg=reason, finished_at=now, next_attempt_at=None, updated_at=now
    )
