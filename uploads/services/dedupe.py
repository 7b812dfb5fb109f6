"""Deduplication: bytes that already succeeded for the same authorizer reuse that upload's URL.

Decided in the accept path, so the 202 already says `succeeded` with the URL: no task, no stored
bytes, no WeChat call. The lookup is one indexed query (authorizer, sha256, status). The sha256 is of
the bytes as they would be sent (after `fit`). Never across authorizers: the lookup is keyed by the
authorizer, as the quota and the merchant's records are, and by the tenant: an account that moved to
another merchant (an operator's transfer) never hands the new one the old one's uploads.

Checked once more by the task, before it sends: an upload accepted while the first one of the same
bytes was still queued (a batch) reuses its URL if that one has succeeded by then. That check rides on
the query that loads the upload (`with_reusable`), so the task runs no extra query. Two identical
uploads sent at the same moment are both sent: neither waits for the other.

Only for an authorizer that may upload now (authorized, with an upload permission set): a reuse must
not succeed where a fresh upload would be rejected. `dedupe=false` on the request turns both off.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import CharField, OuterRef, QuerySet, Subquery, UUIDField, Value
from django.utils import timezone

from openplatform.wechat.permissions import UPLOADIMG_REQUIRED_ANY_OF
from tenants.models import Authorizer
from uploads.models import Upload, UploadAttempt
from uploads.services.events import upload_event_record


@dataclass(frozen=True)
class Reusable:
    #: The first upload of these bytes (followed through earlier reuses).
    upload_id: object
    url: str


def dedupe_days() -> int:
    return settings.UPLOAD_DEDUPE_DAYS


def dedupe_since() -> datetime | None:
    """Uploads finished since then may be reused; None when deduplication is off (UPLOAD_DEDUPE_DAYS=0)."""
    days = dedupe_days()
    return timezone.now() - timedelta(days=days) if days > 0 else None


def upload_reusable_find(*, authorizer: Authorizer, tenant_id: int, sha256: str) -> Reusable | None:
    days = dedupe_days()
    if days <= 0 or not authorizer.can_upload_images:
        return None
    row = (
        Upload.objects.filter(authorizer=authorizer, tenant_id=tenant_id, sha256=sha256,
                              status=Upload.Status.SUCCEEDED, finished_at__gte=timezone.now() - timedelta(days=days))
        .exclude(url="")
        .order_by("-finished_at")
        .values("pk", "url", "reused_from_id")
        .first()
    )
    if row is None:
        return None
    return Reusable(upload_id=row["reused_from_id"] or row["pk"], url=row["url"])


def with_reusable(uploads: QuerySet[Upload]) -> QuerySet[Upload]:
    """Annotate each upload with the newest other succeeded upload of its bytes to its authorizer within
    the window: `reusable_id`, `reusable_root_id` (what that one reused, if anything), `reusable_url`."""
    days = dedupe_days()
    if days <= 0:
        none = {"reusable_id": UUIDField(), "reusable_root_id": UUIDField(), "reusable_url": CharField()}
        return uploads.annotate(**{name: Value(None, output_field=field) for name, field in none.items()})
    earlier = (
        Upload.objects.filter(authorizer_id=OuterRef("authorizer_id"), tenant_id=OuterRef("tenant_id"),
                              sha256=OuterRef("sha256"), status=Upload.Status.SUCCEEDED, finished_at__gte=timezone.now() - timedelta(days=days))
        .exclude(url="").exclude(pk=OuterRef("pk")).order_by("-finished_at")
    )
    return uploads.annotate(
        reusable_id=Subquery(earlier.values("pk")[:1]),
        reusable_root_id=Subquery(earlier.values("reused_from_id")[:1]),
        reusable_url=Subquery(earlier.values("url")[:1]),
    )


def upload_reuse_apply(*, upload: Upload, original: Reusable, authorizer: Authorizer) -> None:
    """Fill an unsaved upload in as succeeded with the original's URL."""
    now = timezone.now()
    upload.status = Upload.Status.SUCCEEDED
    upload.url = original.url
    upload.errcode, upload.errmsg = 0, ""
    upload.reused_from_id = original.upload_id
    upload.permission_required = list(UPLOADIMG_REQUIRED_ANY_OF)
    upload.permission_granted = sorted(authorizer.func_info or [])
    upload.permission_passed = True
    upload.attempts = 1
    upload.started_at = upload.finished_at = now
    upload.next_attempt_at = None


def upload_reuse_record(*, upload: Upload) -> None:
    """The `reused` attempt and the `upload.succeeded` event, in the caller's transaction."""
    UploadAttempt.objects.create(
        upload=upload, number=1, started_at=upload.started_at, duration_ms=0, outcome=UploadAttempt.Outcome.REUSED,
        errcode=0, errmsg=f"same bytes as upload {upload.reused_from_id}: its URL reused, nothing sent to WeChat",
        reused_upload_id=upload.reused_from_id,
    )
    upload_event_record(upload=upload)
