"""Accepting uploads: validate, store record and bytes in one transaction, enqueue after commit."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from django.db import IntegrityError, transaction
from django.utils import timezone

from openplatform.core.queueing import enqueue_on_commit
from tenants.models import Authorizer, Tenant, TenantAPIKey
from tenants.selectors import authorizer_get
from uploads.errors import IdempotencyConflict, UnknownAuthorizer
from uploads.images import check_image
from uploads.models import Upload, UploadBlob


@dataclass(frozen=True)
class Accepted:
    upload: Upload
    #: True when an earlier request with the same Idempotency-Key is being returned.
    replayed: bool = False


def _fingerprint(*, authorizer_appid: str, data: bytes, fit: bool) -> str:
    h = hashlib.sha256()
    h.update(authorizer_appid.encode())
    h.update(b"\0")
    h.update(hashlib.sha256(data).digest())
    h.update(b"\1" if fit else b"\0")
    return h.hexdigest()


def _replay(*, tenant: Tenant, idempotency_key: str, fingerprint: str) -> Accepted | None:
    existing = (
        Upload.objects.select_related("authorizer").filter(tenant=tenant, idempotency_key=idempotency_key).first()
    )
    if existing is None:
        return None
    if existing.request_fingerprint != fingerprint:
        raise IdempotencyConflict()
    return Accepted(existing, replayed=True)


def upload_create(
    *,
    tenant: Tenant,
    authorizer_appid: str,
    data: bytes,
    fit: bool = False,
    idempotency_key: str = "",
    api_key: TenantAPIKey | None = None,
    requested_by: str = Upload.RequestedBy.API_KEY,
    admin_user=None,
) -> Accepted:
    """Accept one image for one of the tenant's authorizers. Raises an UploadRefused subclass (uploads.errors)."""
    fingerprint = _fingerprint(authorizer_appid=authorizer_appid, data=data, fit=fit)
    if idempotency_key:
        replay = _replay(tenant=tenant, idempotency_key=idempotency_key, fingerprint=fingerprint)
        if replay is not None:
            return replay
    authorizer: Authorizer | None = authorizer_get(tenant=tenant, appid=authorizer_appid) if authorizer_appid else None
    if authorizer is None:
        raise UnknownAuthorizer()  # the same answer whether the appid is another tenant's or nobody's
    image = check_image(data, fit=fit)  # ImageRejected is an UploadRefused
    upload = Upload(
        tenant=tenant,
        authorizer=authorizer,
        requested_by=requested_by,
        api_key=api_key,
        admin_user=admin_user,
        idempotency_key=idempotency_key,
        request_fingerprint=fingerprint,
        sha256=image.sha256,
        size=image.size,
        original_size=image.original_size,
        fitted=image.fitted,
        content_type=image.content_type,
        width=image.width,
        height=image.height,
        next_attempt_at=timezone.now(),
    )
    try:
        with transaction.atomic():
            upload.save(force_insert=True)
            UploadBlob.objects.create(upload=upload, data=image.data)
            from uploads.tasks import upload_image

            enqueue_on_commit(upload_image, str(upload.pk))
    except IntegrityError:
        # A concurrent request with the same Idempotency-Key won the race.
        if idempotency_key:
            replay = _replay(tenant=tenant, idempotency_key=idempotency_key, fingerprint=fingerprint)
            if replay is not None:
                return replay
        raise
    return Accepted(upload)
