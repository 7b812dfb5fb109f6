"""Moving an account between merchants: the operator's decision on a transfer request.

A request is made when an account whose binding to one tenant is revoked is authorized again through
another tenant's link (`tenants/services/authorization.py`, docs/architecture.md §3.3): nothing is
stored for the old tenant, and the authorization's refresh token waits in the request, encrypted.
Approving moves the account: bound to the new tenant, `authorized` with that refresh token (the access
token follows with the first refresh), the old tenant's queued uploads rejected (`authorizer_moved`,
after commit). Its history stays the old tenant's: uploads keep their tenant.
"""

from __future__ import annotations

import logging

from django.db import transaction
from django.utils import timezone

from tenants.errors import TransferNotPossible
from tenants.models import Authorizer, AuthorizerTransferRequest
from tenants.services.authorization import authorizer_sync_info_quietly, authorizer_transfers_supersede
from tenants.services.events import AUTHORIZED, authorizer_event_record
from tenants.signals import authorizer_moved

logger = logging.getLogger(__name__)

State = AuthorizerTransferRequest.State


def authorizer_transfer_approve(*, request: AuthorizerTransferRequest, decided_by: str) -> Authorizer:
    """Move the request's account to its `to_tenant`. TransferNotPossible when the request is no longer
    pending, or the account is no longer revoked for `from_tenant` (the request is then superseded)."""
    with transaction.atomic():
        req = AuthorizerTransferRequest.objects.select_for_update().get(pk=request.pk)
        if req.state != State.PENDING:
            raise TransferNotPossible(f"the request for {req.appid} is {req.get_state_display().lower()}, not pending")
        row = Authorizer.objects.select_for_update().get(pk=req.authorizer_id)
        stale = row.tenant_id != req.from_tenant_id or row.status != Authorizer.Status.REVOKED
        refresh_token = req.get_refresh_token()
        if stale or not refresh_token:
            req.state, req.refresh_token_ciphertext = State.SUPERSEDED, ""
            req.decided_at, req.decided_by = timezone.now(), decided_by[:150]
            req.note = ("the account changed since the request was made (authorized again by its merchant, or "
                        "moved)" if stale else "no refresh token was kept for it")
            req.save()
            error = TransferNotPossible(f"{req.appid}: {req.note}; nothing was moved")
        else:
            error = None
            from_tenant_id, now = row.tenant_id, timezone.now()
            row.tenant_id = req.to_tenant_id
            row.mode = Authorizer.Mode.COMPONENT
            row.status = Authorizer.Status.AUTHORIZED
            row.func_info = sorted(set(req.func_info or []))
            row.set_refresh_token(refresh_token)
            row.set_access_token(None)  # the first refresh gets one (api_authorizer_token, docs/wechat-protocol.md §7)
            row.access_token_expires_at = None
            row.token_generation += 1
            row.authorized_at, row.revoked_at, row.last_error = now, None, ""
            row.save()
            req.state, req.refresh_token_ciphertext = State.TRANSFERRED, ""
            req.decided_at, req.decided_by = now, decided_by[:150]
            req.save()
            authorizer_event_record(authorizer=row, event_type=AUTHORIZED)  # the new merchant's webhook
            authorizer_transfers_supersede(row, note=f"the account was moved to {req.to_tenant.slug}")
            transaction.on_commit(lambda: authorizer_moved.send(
                sender=Authorizer, authorizer_id=row.pk, from_tenant_id=from_tenant_id, to_tenant_id=row.tenant_id
            ))
    if error is not None:
        raise error
    logger.warning("authorizer moved to another tenant",
                   extra={"authorizer_appid": row.appid, "transfer_request_id": req.pk, "decided_by": decided_by})
    authorizer_sync_info_quietly(row)  # names, and WeChat's current refresh token if it differs (compare-and-swap)
    return row


def authorizer_transfer_decline(*, request: AuthorizerTransferRequest, decided_by: str) -> AuthorizerTransferRequest:
    """The account stays where it is (revoked for its tenant); the kept refresh token is wiped."""
    with transaction.atomic():
        req = AuthorizerTransferRequest.objects.select_for_update().get(pk=request.pk)
        if req.state != State.PENDING:
            raise TransferNotPossible(f"the request for {req.appid} is {req.get_state_display().lower()}, not pending")
        req.state, req.refresh_token_ciphertext = State.DECLINED, ""
        req.decided_at, req.decided_by = timezone.now(), decided_by[:150]
        req.save()
    return req


def authorizer_moved_by_hand(*, authorizer: Authorizer, from_tenant_id: int | None) -> None:
    """An operator changed the account's tenant in the admin form: the old tenant's queued uploads are
    rejected like after a transfer (uploads in flight are refused at send time, uploads/services/process.py)."""
    if from_tenant_id is None or from_tenant_id == authorizer.tenant_id:
        return
    transaction.on_commit(lambda: authorizer_moved.send(
        sender=Authorizer, authorizer_id=authorizer.pk, from_tenant_id=from_tenant_id, to_tenant_id=authorizer.tenant_id
    ))
