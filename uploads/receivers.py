from django.dispatch import receiver

from tenants.models import Authorizer
from tenants.signals import authorizer_moved, authorizer_status_changed
from uploads.services.process import MOVED_REASON, uploads_reject_for_authorizer


@receiver(authorizer_status_changed)
def reject_queued_uploads(sender, authorizer_id: int, status: str, **kwargs) -> None:
    if status in (Authorizer.Status.REVOKED, Authorizer.Status.REAUTHORIZATION_REQUIRED):
        uploads_reject_for_authorizer(authorizer_id=authorizer_id, reason=f"authorizer is {status}; nothing was sent to WeChat")


@receiver(authorizer_moved)
def reject_queued_uploads_of_the_old_tenant(sender, authorizer_id: int, from_tenant_id: int | None, **kwargs) -> None:
    """The account now belongs to another tenant: the old tenant's queued uploads are never sent (its
    history stays its own: uploads keep their tenant)."""
    if from_tenant_id is not None:
        uploads_reject_for_authorizer(authorizer_id=authorizer_id, tenant_id=from_tenant_id,
                                      reason=MOVED_REASON)
