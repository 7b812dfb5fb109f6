"""Accepting uploads: validate, store record and bytes in one transaction, enqueue after commit."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from django.db import IntegrityError, transaction
from django.utils import timezone

from openplatform.core.queueing import enqueue_on_commit
from openplatform.core.sql import savepoint_if_in_transaction
from tenants.models import Authorizer, Tenant, TenantAPIKey
from tenants.selectors import authorizer_get
from uploads.errors import IdempotencyConflict, UnknownAuthorizer
from uploads.images import check_image
from uploads.models import Upload, UploadBlob
from uploads.services import pg
from uploads.services.dedupe import (
    Reusable,
    dedupe_since,
    upload_reusable_find,
    upload_reuse_apply,
    upload_reuse_record,
)


@dataclass(frozen=True)
class Accepted:
    upload: Upload
    #: True when an earlier request with the same Idempotency-Key is being returned.
    replayed: bool = False


def _fingerprint(*, authorizer_appid: str, data_sha256: bytes, fit: bool, dedupe: bool = True) -> str:
    """Over the appid, the SHA-256 of the bytes as received (`data_sha256`), fit and dedupe."""
    h = hashlib.sha256()
    h.update(authorizer_appid.encode())
    h.update(b"\0")
    h.update(data_sha256)
    h.update(b"\1" if fit else b"\0")
    if not dedupe:  # only then, so fingerprints stored before dedupe existed still match
        h.update(b"\2")
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


def _authorizer_and_original(*, tenant: Tenant, appid: str, sha256: str,
                             dedupe: bool) -> tuple[Authorizer | None, Reusable | None]:
    """The tenant's authorizer with `appid`, and (with `dedupe`) an earlier upload of these bytes to reuse."""
    authorizer = authorizer_get(tenant=tenant, appid=appid)
    if authorizer is None or not dedupe:
        return authorizer, None
    return authorizer, upload_reusable_find(authorizer=authorizer, tenant_id=tenant.pk, sha256=sha256)


def _enqueue(upload: Upload) -> None:
    """The task is sent once the record and its bytes are committed."""
    from uploads.tasks import upload_image

    enqueue_on_commit(upload_image, str(upload.pk))


def _insert_for_appid(upload: Upload, data: bytes, *, appid: str,
                      dedupe: bool) -> tuple[Authorizer | None, Reusable | None, bool]:
    """PostgreSQL: the authorizer, the dedupe lookup and (when nothing is to be reused) the record and its
    bytes, in one statement (uploads/services/pg.py)."""
    with savepoint_if_in_transaction():  # an IntegrityError leaves a caller's transaction usable
        found = pg.upload_insert_for_appid(upload, data, appid=appid, since=dedupe_since() if dedupe else None)
    if found[2]:
        _enqueue(upload)
    return found


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
    dedupe: bool = True,
) -> Accepted:
    """Accept one image for one of the tenant's authorizers. Raises an UploadRefused subclass (uploads.errors).

    With `dedupe`, bytes that already succeeded for this authorizer are final at once (services/dedupe.py).
    """
    received = hashlib.sha256(data)  # once: the fingerprint's and, when the bytes are kept as they are, the record's
    fingerprint = _fingerprint(authorizer_appid=authorizer_appid, data_sha256=received.digest(), fit=fit, dedupe=dedupe)
    if idempotency_key:
        replay = _replay(tenant=tenant, idempotency_key=idempotency_key, fingerprint=fingerprint)
        if replay is not None:
            return replay
    if not authorizer_appid:
        raise UnknownAuthorizer()
    image = check_image(data, fit=fit, sha256=received.hexdigest())  # ImageRejected is an UploadRefused
    upload = Upload(  # its authorizer is the tenant's with `authorizer_appid`, found below
        tenant=tenant,
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
        dedupe=dedupe,
    )
    try:
        if pg.available():  # usually all of it in one statement
            authorizer, original, inserted = _insert_for_appid(upload, image.data, appid=authorizer_appid,
                                                               dedupe=dedupe)
            if inserted:
                return Accepted(upload)
            # Not inserted: an unknown appid, or an earlier upload of these bytes, reused below unless the
            # account can no longer upload images (the task then rejects the new upload with the reason).
            original = original if authorizer is not None and authorizer.can_upload_images else None
        else:
            authorizer, original = _authorizer_and_original(tenant=tenant, appid=authorizer_appid,
                                                            sha256=image.sha256, dedupe=dedupe)
        if authorizer is None:
            raise UnknownAuthorizer()  # the same answer whether the appid is another tenant's or nobody's
        upload.authorizer = authorizer
        if original is not None:
            upload_reuse_apply(upload=upload, original=original, authorizer=authorizer)
        with transaction.atomic():  # SQLite; on PostgreSQL only a reuse, or an account that cannot upload
            upload.save(force_insert=True)
            if original is not None:  # final already: no bytes kept, no task
                upload_reuse_record(upload=upload)
                return Accepted(upload)
            UploadBlob.objects.create(upload=upload, data=image.data)
            _enqueue(upload)
    except IntegrityError:
        # A concurrent request with the same Idempotency-Key won the race.
        if idempotency_key:
            replay = _replay(tenant=tenant, idempotency_key=idempotency_key, fingerprint=fingerprint)
            if replay is not None:
                return replay
        raise
    return Accepted(upload)
