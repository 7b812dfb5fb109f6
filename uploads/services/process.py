"""Processing one upload (the task body): claim, check, upload, record, classify (docs/architecture.md §3.5).

State machine: queued -> uploading (claimed with a lease) -> succeeded | failed | rejected, or back to
queued with `next_attempt_at` for a transient error. A claim is a conditional UPDATE, so two
deliveries of the same task never upload concurrently; a delivery that finds a live lease is told
to come back when the lease ends (no run starts an upload call that could outlast its lease). A run
writes its result only while it still holds its lease (compare-and-set on `lease_until`), together
with its attempt rows in one transaction. A run that finds an expired lease takes over and records
the lost run as an attempt, so an upload that kills its worker every time still ends, as `failed`.

45009 (daily quota) fails the upload with a clear message rather than deferring it until the quota
resets (midnight Beijing time): a merchant expects an answer within minutes, and the admin
"retry" action resends it once the quota is back.
"""

from __future__ import annotations

import logging
import random
import socket
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError, connection, transaction
from django.db.models import F
from django.utils import timezone

from openplatform.component.config import wechat_client
from openplatform.core.sql import savepoint_if_in_transaction
from openplatform.core.tokens import TokenRefreshPending
from openplatform.wechat.client import RetryPolicy
from openplatform.wechat.errors import (
    ERRCODE_MEANINGS,
    InvalidPayload,
    PermissionDenied,
    QuotaExceeded,
    TicketInvalid,
    TokenInvalid,
    WeChatError,
)
from openplatform.wechat.permissions import UPLOADIMG_REQUIRED_ANY_OF, can_upload_images, uploadimg_hint
from tenants.errors import AuthorizerUnavailable, ReauthorizationRequired
from tenants.models import Authorizer
from tenants.services.tokens import authorizer_access_token_get, authorizer_access_token_refresh_after_failure
from uploads.errors import UploadNotRetryable
from uploads.models import Upload, UploadAttempt, UploadBlob
from uploads.representation import upload_json
from uploads.services import pg
from uploads.services.dedupe import dedupe_since, with_reusable
from uploads.services.events import EVENT_TYPES, upload_event_record, uploads_events_record
from webhooks.services.events import webhook_event_dispatch_enqueue

logger = logging.getLogger(__name__)

NO_RETRY = RetryPolicy(max_retries=0)
#: A result is written up to this many times, each on a fresh connection, with a short pause between:
#: one lost to a dropped connection (failover, restart, a killed backend, possibly twice in a row) would
#: let the lease run out and the run that takes over send the image to WeChat again.
RESULT_WRITE_TRIES = 4
RESULT_WRITE_PAUSE_SECONDS = 0.1
#: Why an upload of an account that now belongs to another tenant is never sent (docs/architecture.md §3.5).
MOVED_REASON = "the WeChat account has moved to another merchant; nothing was sent to WeChat"
WORKER_NAME = socket.gethostname()


def lease_seconds() -> int:
    return settings.UPLOAD_LEASE_SECONDS


def max_attempts() -> int:
    return settings.UPLOAD_MAX_ATTEMPTS


def _budget_spent(upload: Upload) -> bool:
    """Attempts since the last operator retry have reached the limit."""
    return upload.attempts - upload.attempts_before_retry >= max_attempts()


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


@dataclass
class _Run:
    """One claimed run of an upload: the row as loaded after the claim, and the lease that owns it."""

    upload: Upload
    lease_until: datetime
    #: The image bytes, when the claim loaded them (PostgreSQL); else read when needed.
    data: bytes | None = None
    #: time.monotonic() when the upload and its authorizer were read.
    loaded_at: float = field(default_factory=time.monotonic)
    #: Attempt rows not yet written: they are saved in one transaction with the upload's new state,
    #: so the stored `attempts` count and the attempt rows never disagree (a run can die anywhere).
    pending: list[UploadAttempt] = field(default_factory=list)

    def __post_init__(self) -> None:
        #: The authorizer's token generation as read with the upload.
        self.loaded_generation = self.upload.authorizer.token_generation


def _claim(upload_id) -> tuple[datetime, bool] | None:
    """Take the upload for this run: (lease end, took over a lost run's expired lease), or None.

    Two conditional UPDATEs, so two deliveries never both win; the second one runs only when the first
    matched nothing (the upload is not due, final, or held by a lease).
    """
    now = timezone.now()
    lease_until = now + timedelta(seconds=lease_seconds())
    values = {"status": Upload.Status.UPLOADING, "started_at": now, "lease_until": lease_until, "updated_at": now}
    if Upload.objects.filter(pk=upload_id).due(now=now).update(**values):
        return lease_until, False
    if Upload.objects.filter(pk=upload_id).lease_expired(now=now).update(**values):
        return lease_until, True
    return None


_ALWAYS_SAVED = ["permission_required", "permission_granted", "permission_passed", "attempts", "updated_at"]


def _save_if_still_ours(run: _Run, fields: dict) -> bool:
    """Write the run's result only while it still holds its lease (compare-and-set on lease_until).

    If the database connection drops (failover, server restart, a killed backend) the write is made
    again on a fresh connection (RESULT_WRITE_TRIES in all): WeChat has usually answered by now, and a result lost here would
    let the lease run out and the run that takes over send the image to WeChat a second time. The
    compare-and-set makes the second write safe even when the first one did commit.
    """
    upload = run.upload
    for name, value in fields.items():
        setattr(upload, name, value)
    upload.updated_at = timezone.now()
    values = {name: getattr(upload, name) for name in [*fields, *_ALWAYS_SAVED]}
    for tries_left in range(RESULT_WRITE_TRIES - 1, -1, -1):
        try:
            written = _write_if_still_ours(run, values)
            break
        except (OperationalError, InterfaceError):
            if connection.in_atomic_block or not tries_left:
                raise  # inside a caller's transaction, which went with the connection: not ours to redo
            logger.warning("database connection lost while saving an upload's result; saving it again",
                           extra={"upload_id": str(upload.pk)})
            connection.close()
            time.sleep(RESULT_WRITE_PAUSE_SECONDS * (RESULT_WRITE_TRIES - tries_left))
    if not written:
        logger.warning("upload lease lost before its result was saved", extra={"upload_id": str(upload.pk)})
    return bool(written)


def _write_if_still_ours(run: _Run, values: dict) -> int:
    if pg.available():
        with savepoint_if_in_transaction():  # a caller's transaction (tests, the admin) stays usable
            return _write_in_one_statement(run, values)
    pending = list(run.pending)
    try:
        with transaction.atomic():
            written = Upload.objects.filter(
                pk=run.upload.pk, status=Upload.Status.UPLOADING, lease_until=run.lease_until
            ).update(**values)
            if written:
                _flush_attempts(run)
                if values.get("status") in Upload.FINAL_STATUSES:  # the webhook outbox, same transaction
                    upload_event_record(upload=run.upload)
    except DatabaseError:
        for attempt in pending:  # rolled back: still to be written, with new ids
            attempt.pk = None
        run.pending[:] = pending
        raise
    return written


def _write_in_one_statement(run: _Run, values: dict) -> int:
    """The result, the attempt rows and (for a final status) the webhook event: one statement (pg.py)."""
    upload = run.upload
    event = None
    if values.get("status") in Upload.FINAL_STATUSES:
        event = (EVENT_TYPES[values["status"]], upload_json(upload))
    written, to_dispatch = pg.upload_result_write(upload=upload, lease_until=run.lease_until, values=values,
                                                  attempts=run.pending, event=event, now=timezone.now())
    if written:
        run.pending.clear()
        if to_dispatch is not None:
            webhook_event_dispatch_enqueue(to_dispatch)
    return written


def _finish(run: _Run, status: str, *, url: str = "", errcode: int | None = None, errmsg: str = "",
            **fields) -> Outcome:
    saved = _save_if_still_ours(run, {
        "status": status, "url": url, "errcode": errcode, "errmsg": errmsg[:4000],
        "finished_at": timezone.now(), "lease_until": None, "next_attempt_at": None, **fields,
    })
    if not saved:
        return _current(run.upload.pk)
    logger.info("upload %s", status, extra={"upload_id": str(run.upload.pk), "errcode": errcode})
    return Outcome(status)


def _requeue(run: _Run, delay: float, *, errcode: int | None, errmsg: str) -> Outcome:
    saved = _save_if_still_ours(run, {
        "status": Upload.Status.QUEUED, "errcode": errcode, "errmsg": errmsg[:4000],
        "next_attempt_at": timezone.now() + timedelta(seconds=delay), "lease_until": None,
    })
    if not saved:
        return _current(run.upload.pk)
    return Outcome(Upload.Status.QUEUED, retry_in=delay)


def _current(upload_id) -> Outcome:
    """What a run that did not (or no longer does) own the upload reports: final, or when to come back."""
    row = Upload.objects.filter(pk=upload_id).values("status", "lease_until", "next_attempt_at").first()
    if row is None:
        return Outcome("missing")
    if row["status"] in Upload.FINAL_STATUSES:
        return Outcome(row["status"])
    # Another delivery owns a live lease, or the backoff has not elapsed: come back then.
    due = row["lease_until"] if row["status"] == Upload.Status.UPLOADING else row["next_attempt_at"]
    wait = max(1.0, (due - timezone.now()).total_seconds() + 1) if due else 1.0
    return Outcome(row["status"], retry_in=wait)


def _claim_and_load(upload_id) -> tuple[_Run, bool] | None:
    """(the run, took over a lost run's expired lease), or None when the upload is not this run's to take."""
    if pg.available():  # one statement: claim, and read the upload, its authorizer, bytes and a reusable URL
        now = timezone.now()
        claimed = pg.upload_claim(upload_id=upload_id, now=now, lease_until=now + timedelta(seconds=lease_seconds()),
                                  since=dedupe_since())
        if claimed is None:
            return None
        # What with_reusable() annotates, the first upload of the bytes already resolved.
        upload, reusable = claimed.upload, claimed.reusable
        upload.reusable_id = reusable.upload_id if reusable else None
        upload.reusable_root_id = None
        upload.reusable_url = reusable.url if reusable else None
        return _Run(upload, lease_until=upload.lease_until, data=claimed.data), claimed.took_over
    claim = _claim(upload_id)
    if claim is None:
        return None
    # Loaded after the claim, so `attempts` is what the previous run saved.
    upload = with_reusable(Upload.objects.select_related("authorizer")).get(pk=upload_id)
    return _Run(upload, lease_until=claim[0]), claim[1]


def upload_process(*, upload_id) -> Outcome:
    claimed = _claim_and_load(upload_id)
    if claimed is None:
        return _current(upload_id)
    run, took_over = claimed
    upload, authorizer = run.upload, run.upload.authorizer
    if took_over:
        _record_lost_run(run)
        if _budget_spent(upload):
            return _finish(run, Upload.Status.FAILED, errmsg=(
                f"gave up after {upload.attempts} attempts: the worker running it was lost "
                "(killed, out of memory or past its time limit) every time"
            ))

    if authorizer.tenant_id != upload.tenant_id:
        return _finish(run, Upload.Status.REJECTED, errmsg=_moved(authorizer))
    if authorizer.status != Authorizer.Status.AUTHORIZED:
        return _finish(run, Upload.Status.REJECTED,
                       errmsg=f"authorizer {authorizer.appid} is {authorizer.status}; nothing was sent to WeChat")
    granted = sorted(authorizer.func_info or [])
    upload.permission_required = list(UPLOADIMG_REQUIRED_ANY_OF)
    upload.permission_granted = granted
    upload.permission_passed = can_upload_images(granted)
    if not upload.permission_passed:
        return _finish(run, Upload.Status.REJECTED, errmsg=(
            "permission-set check failed: uploadimg needs one of "
            f"{', '.join(map(str, UPLOADIMG_REQUIRED_ANY_OF))}; "
            + uploadimg_hint(is_mini_program=authorizer.is_mini_program)
        ))
    if upload.dedupe and upload.reusable_url:  # the same bytes succeeded since it was accepted
        return _finish_reused(run)
    data = run.data
    if data is None:
        blob = UploadBlob.objects.filter(upload_id=upload.pk).values_list("data", flat=True).first()
        data = bytes(blob) if blob is not None else None
    if data is None:
        return _finish(run, Upload.Status.FAILED, errmsg="the image bytes are no longer stored (retention)")
    return _attempt_upload(run, authorizer, data)


def _attempt_upload(run: _Run, authorizer: Authorizer, data: bytes) -> Outcome:
    upload = run.upload
    token_retried = False
    while True:
        started, t0 = timezone.now(), time.perf_counter()
        try:
            lease = authorizer_access_token_get(authorizer=authorizer)
        except TokenRefreshPending as exc:
            # Another worker is refreshing this token (or just failed to): nothing was tried here, so the
            # upload comes back later without spending an attempt (docs/architecture.md §3.4).
            return _wait_for_token(run, exc)
        except ReauthorizationRequired as exc:
            return _finish(run, Upload.Status.FAILED, errcode=61023, errmsg=str(exc))
        except AuthorizerUnavailable as exc:
            return _finish(run, Upload.Status.REJECTED, errmsg=f"{exc}; nothing was sent to WeChat")
        except WeChatError as exc:
            # Nothing reached uploadimg, but the try counts: a token endpoint that keeps failing must
            # not keep the upload queued forever.
            # A missing or rejected component ticket heals by itself within 10 minutes (the next push):
            # retry later, like a transient error (docs/wechat-protocol.md §11).
            retry_later = exc.retryable or isinstance(exc, TicketInvalid)
            number = _next_attempt_number(upload)
            _record_attempt(run, number, started, (time.perf_counter() - t0) * 1000, exc.http_status,
                            exc.errcode, f"access token: {exc.describe()}",
                            UploadAttempt.Outcome.TRANSIENT if retry_later else UploadAttempt.Outcome.FAILED,
                            None)
            if retry_later:
                return _transient(run, exc, "could not get an access token")
            errmsg = f"access token: {exc}"
            if isinstance(exc, QuotaExceeded):
                errmsg += "; " + _token_quota_hint(authorizer)
            return _finish(run, Upload.Status.FAILED, errcode=exc.errcode, errmsg=errmsg)

        if _lease_too_short_for_a_call(run):
            return _requeue(run, retry_delay(upload.attempts), errcode=None, errmsg=(
                "not sent: too little of this run's lease was left for an upload call; sent again later"
            ))
        # Ownership, re-read right before the call when the row read with the claim may be stale: the
        # account may have moved to another tenant while this run fetched a token or waited for one (an
        # approved transfer request, the admin form); the image is then never sent on the new owner's
        # account. Read with the claim a moment ago and served from that row, it is current.
        if _ownership_may_be_stale(run, lease) and not Authorizer.objects.filter(
            pk=authorizer.pk, tenant_id=upload.tenant_id
        ).exists():
            return _finish(run, Upload.Status.REJECTED, errmsg=_moved(authorizer))
        number = _next_attempt_number(upload)
        started = timezone.now()
        t0 = time.perf_counter()
        try:
            result = wechat_client().upload_image(
                access_token=lease.token, data=data, retry=NO_RETRY, appid=authorizer.appid
            )
        except WeChatError as exc:
            duration = (time.perf_counter() - t0) * 1000
            outcome = _classify(exc, token_retried)
            _record_attempt(run, number, started, duration, exc.http_status, exc.errcode, exc.errmsg,
                            outcome, lease.generation)
            if outcome == UploadAttempt.Outcome.TOKEN_INVALID:
                token_retried = True
                # Saved now (with the count), so a run lost from here on cannot reuse its number.
                _save_attempts_now(run)
                try:  # expire this token only if it is still current; one refresh, one retry
                    authorizer_access_token_refresh_after_failure(authorizer=authorizer, failed_generation=lease.generation)
                except ReauthorizationRequired as rexc:
                    return _finish(run, Upload.Status.FAILED, errcode=61023, errmsg=str(rexc))
                except AuthorizerUnavailable as rexc:
                    # Revoked while this upload was in flight: WeChat saw it and refused the token.
                    return _finish(run, Upload.Status.FAILED, errcode=exc.errcode,
                                   errmsg=f"{rexc} (while uploading: {exc.describe()})")
                except TokenRefreshPending as rexc:
                    return _wait_for_token(run, rexc)
                except WeChatError as rexc:
                    return _transient(run, rexc, "token refresh failed")
                continue
            if outcome == UploadAttempt.Outcome.TRANSIENT:
                return _transient(run, exc, "WeChat did not answer")
            return _finish(run, Upload.Status.FAILED, errcode=exc.errcode, errmsg=_explain(exc, authorizer))
        _record_attempt(run, number, started, result.latency_ms, result.http_status, 0, "ok",
                        UploadAttempt.Outcome.SUCCEEDED, lease.generation)
        return _finish(run, Upload.Status.SUCCEEDED, url=result.url, errcode=0, errmsg="")


def _finish_reused(run: _Run) -> Outcome:
    """Succeed with the URL of an earlier upload of the same bytes to this authorizer (services/dedupe.py)."""
    upload = run.upload
    original = upload.reusable_root_id or upload.reusable_id
    _record_attempt(run, _next_attempt_number(upload), timezone.now(), 0, None, 0,
                    f"same bytes as upload {original}: its URL reused, nothing sent to WeChat",
                    UploadAttempt.Outcome.REUSED, None)
    run.pending[-1].reused_upload_id = original
    return _finish(run, Upload.Status.SUCCEEDED, url=upload.reusable_url, errcode=0, reused_from_id=original)


#: A row read longer ago than this before the upload call is read again for its owner.
OWNERSHIP_FRESH_SECONDS = 1.0


def _ownership_may_be_stale(run: _Run, lease) -> bool:
    """Whether the authorizer row read with the claim may no longer say who owns the account: its token was
    refreshed (or another run's refresh was waited for) since, or the read is over a second old. A move
    commits in its own transaction; within the milliseconds between the claim and the call, a re-read
    would narrow the window a move could slip through, not close it (docs/architecture.md §3.5)."""
    return lease.generation != run.loaded_generation or time.monotonic() - run.loaded_at > OWNERSHIP_FRESH_SECONDS


def _moved(authorizer: Authorizer) -> str:
    return f"{MOVED_REASON} (account {authorizer.appid})"


def _lease_too_short_for_a_call(run: _Run) -> bool:
    """Whether the upload call might outlast the lease (docs/architecture.md §3.5): then it is not started.

    On the threads pool no time limit stops a run (uploads/tasks.py): its lease and its calls' timeouts
    bound it. A call waits at most WECHAT_HTTP_TIMEOUT to connect and as long again for its answer (one
    short JSON line); with a second for the result's write, a call started with less of the lease left
    could still be in flight when another run takes the upload over and sends it again. Usually the
    call starts milliseconds after the claim; only a slow token refresh before it gets here.
    """
    budget = 2 * settings.WECHAT_HTTP_TIMEOUT + 1
    return (run.lease_until - timezone.now()).total_seconds() < budget


def _next_attempt_number(upload: Upload) -> int:
    upload.attempts += 1
    return upload.attempts


def _record_lost_run(run: _Run) -> None:
    """The previous run's lease ran out without a result: its worker died or hung, maybe mid-call, or the
    run hit the task's soft time limit (uploads/tasks.py keeps its lease and comes back after it).

    Recorded as an attempt (WeChat may have received the image), and counted, so that an upload whose
    run kills the worker every time ends as `failed` instead of being redelivered forever.
    """
    upload = run.upload
    number = _next_attempt_number(upload)
    _record_attempt(run, number, upload.started_at or timezone.now(), 0, None, None,
                    "the previous run ended without saving a result (its worker was killed or lost, or "
                    "the run hit its time limit); WeChat may or may not have received the image",
                    UploadAttempt.Outcome.LOST, None)
    _save_attempts_now(run)
    logger.warning("took over an upload whose worker was lost", extra={"upload_id": str(upload.pk)})


def _classify(exc: WeChatError, token_retried: bool) -> str:
    if isinstance(exc, TokenInvalid):
        return UploadAttempt.Outcome.FAILED if token_retried else UploadAttempt.Outcome.TOKEN_INVALID
    if exc.retryable:
        return UploadAttempt.Outcome.TRANSIENT
    return UploadAttempt.Outcome.FAILED


def _transient(run: _Run, exc: WeChatError, what: str) -> Outcome:
    upload = run.upload
    errmsg = f"{what}: {exc.describe()}"
    if _budget_spent(upload):
        return _finish(run, Upload.Status.FAILED, errcode=exc.errcode,
                       errmsg=f"{errmsg} (gave up after {upload.attempts} attempts)")
    return _requeue(run, retry_delay(upload.attempts, error=exc), errcode=exc.errcode, errmsg=errmsg)


def _wait_for_token(run: _Run, exc: TokenRefreshPending) -> Outcome:
    """Requeue without spending an attempt: the refresh is another run's (which counts its own failures).

    Never a loop without end: the other run's lease runs out (settings.TOKEN_REFRESH_LEASE_SECONDS), and
    then this upload's next run refreshes the token itself, and a failure of its own counts.
    """
    delay = exc.retry_after + random.uniform(0, settings.UPLOAD_RETRY_BASE_SECONDS)  # spread the waiters out
    return _requeue(run, delay, errcode=None, errmsg=f"waiting for the access token: {exc.describe()}")


def _explain(exc: WeChatError, authorizer: Authorizer) -> str:
    meaning = ERRCODE_MEANINGS.get(exc.errcode or 0, "")
    text = f"{exc.errcode} {exc.errmsg}".strip()
    if meaning:
        text += f" ({meaning})"
    if isinstance(exc, PermissionDenied):
        text += "; " + uploadimg_hint(is_mini_program=authorizer.is_mini_program, errcode=exc.errcode)
    elif isinstance(exc, QuotaExceeded):
        text += (
            "; the account's daily uploadimg quota is used up. An operator can clear it now in the admin "
            "(Authorizers: \"Clear this account's API quota\", 10 resets a month per account), then retry "
            "(Authorizers: \"Retry its uploads that failed with 45009\"); or wait until the quota resets at "
            "00:00 Beijing time and retry then"
        )
    elif isinstance(exc, TokenInvalid):
        text += "; WeChat refused a freshly refreshed token too"
    elif isinstance(exc, InvalidPayload):
        text += "; WeChat refused the image itself"
    return text


def _token_quota_hint(authorizer: Authorizer) -> str:
    """What to do when the token endpoint answered 45009 (docs/wechat-protocol.md §11)."""
    if authorizer.mode == Authorizer.Mode.DIRECT:
        return "the account's daily stable_token quota is used up: retry after it resets (00:00 Beijing time)"
    return (
        "the component's daily api_authorizer_token quota is used up. An operator can clear it now (admin "
        "home page: \"clear the component's API quota\", 10 resets a month), then retry (Authorizers: "
        "\"Retry its uploads that failed with 45009\"); or wait until 00:00 Beijing time and retry then"
    )


def _record_attempt(run: _Run, number, started, duration_ms, http_status, errcode, errmsg, outcome,
                    generation) -> None:
    run.pending.append(UploadAttempt(
        upload=run.upload, number=number, started_at=started, duration_ms=round(duration_ms, 2),
        http_status=http_status, errcode=errcode, errmsg=(errmsg or "")[:2000], outcome=outcome,
        token_generation=generation, worker=WORKER_NAME,
    ))


def _save_attempts_now(run: _Run) -> None:
    """Write the attempt rows recorded so far with the count, before the run goes on."""
    with transaction.atomic():
        Upload.objects.filter(pk=run.upload.pk).update(attempts=run.upload.attempts)
        _flush_attempts(run)


def _flush_attempts(run: _Run) -> None:
    if run.pending:
        UploadAttempt.objects.bulk_create(run.pending)
        run.pending.clear()


def upload_retry(*, upload: Upload) -> Upload:
    """Admin action: send a failed upload again as a new attempt on the same record.

    Raises UploadNotRetryable unless the upload failed and its bytes are still stored.
    """
    if upload.status != Upload.Status.FAILED:
        raise UploadNotRetryable(f"only failed uploads can be retried (this one is {upload.status})")
    if not UploadBlob.objects.filter(upload_id=upload.pk).exists():
        raise UploadNotRetryable("the image bytes are no longer stored (retention); ask the merchant to upload again")
    from openplatform.core.queueing import enqueue_on_commit
    from uploads.tasks import upload_image

    with transaction.atomic():
        Upload.objects.failed().filter(pk=upload.pk).update(
            status=Upload.Status.QUEUED, next_attempt_at=timezone.now(), finished_at=None,
            attempts_before_retry=F("attempts"), updated_at=timezone.now(),
        )
        enqueue_on_commit(upload_image, str(upload.pk))
    upload.refresh_from_db()
    return upload


@dataclass
class BulkRetry:
    #: Uploads queued again (their task enqueued after commit).
    retried: list = field(default_factory=list)
    #: (upload id, why) of the ones that could not be (their bytes were purged).
    refused: list[tuple] = field(default_factory=list)


def uploads_retry_failed_for_quota(*, uploads) -> BulkRetry:
    """Send again, oldest first, every upload of the queryset `uploads` that failed with 45009: after an
    operator cleared the quota (or it reset at 00:00 Beijing time). Others in `uploads` are left alone."""
    report = BulkRetry()
    for upload in uploads.failed_for_quota().order_by("created_at"):
        try:
            upload_retry(upload=upload)
        except UploadNotRetryable as exc:
            report.refused.append((upload.pk, str(exc)))
        else:
            report.retried.append(upload.pk)
    return report


def uploads_reject_for_authorizer(*, authorizer_id: int, reason: str, tenant_id: int | None = None) -> int:
    """Queued uploads of a revoked authorizer (or, with `tenant_id`, that tenant's queued uploads of an
    authorizer moved away from it) become `rejected` (never sent), each with its webhook event."""
    now = timezone.now()
    queued = Upload.objects.queued().filter(authorizer_id=authorizer_id)
    if tenant_id is not None:
        queued = queued.filter(tenant_id=tenant_id)
    with transaction.atomic():
        ids = list(queued.values_list("pk", flat=True))
        count = Upload.objects.queued().filter(pk__in=ids).update(
            status=Upload.Status.REJECTED, errmsg=reason, finished_at=now, next_attempt_at=None, updated_at=now
        )
        # Those this update rejected (a worker may have claimed one in between), their events with them.
        uploads_events_record(uploads=Upload.objects.select_related("authorizer").filter(
            pk__in=ids, status=Upload.Status.REJECTED, finished_at=now))
    return count
