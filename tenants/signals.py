"""Signals other apps listen to (uploads rejects queued uploads of a revoked authorizer)."""

from django.dispatch import Signal

#: Sent after commit when an authorizer becomes revoked or reauthorization_required.
#: kwargs: authorizer_id, status
authorizer_status_changed = Signal()
