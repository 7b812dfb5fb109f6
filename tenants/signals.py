"""Signals other apps listen to (uploads rejects queued uploads of a revoked authorizer)."""

from django.dispatch import Signal

#: Sent after commit when an authorizer becomes revoked or reauthorization_required.
#: kwargs: authorizer_id, status
authorizer_status_changed = Signal()

#: Sent after commit when an operator moves an authorizer to another tenant (an approved transfer
#: request, or the admin form). kwargs: authorizer_id, from_tenant_id, to_tenant_id.
authorizer_moved = Signal()
