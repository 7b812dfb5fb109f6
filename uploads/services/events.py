"""Webhook events for uploads that became final: the upload as the API shows it, written by the
webhooks outbox in the caller's transaction (so the event commits with the status, or neither does)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from uploads.models import Upload
from uploads.representation import upload_json
from webhooks.services import webhook_events_record

EVENT_TYPES = {
    Upload.Status.SUCCEEDED: "upload.succeeded",
    Upload.Status.FAILED: "upload.failed",
    Upload.Status.REJECTED: "upload.rejected",
}


def upload_event_record(*, upload: Upload) -> None:
    uploads_events_record(uploads=[upload])


def uploads_events_record(*, uploads: Iterable[Upload]) -> None:
    """One event per final upload (their authorizer loaded), grouped per tenant."""
    by_tenant: dict[int, list[tuple[str, dict]]] = defaultdict(list)
    for upload in uploads:
        event_type = EVENT_TYPES.get(upload.status)
        if event_type:
            by_tenant[upload.tenant_id].append((event_type, upload_json(upload)))
    for tenant_id, events in by_tenant.items():
        webhook_events_record(tenant_id=tenant_id, events=events)
