from django.dispatch import receiver

from tenants.models import Authorizer
from tenants.signals import authorizer_status_changed
from uploads.services.process import uploads_reject_for_authorizer


@receiver(authorizer_status_changed)
def reject_queued_uploads(sender, authorizer_id: int, status: str, **kwargs) -> None:
    if status in (Authorizer.Status.REVOKED, Authorizer.Status.REAUTHORIZATION_REQUIRED):
        uploads_reject_for_authorizer(authorizer_id=authorizer_id, reason=f"authorizer is {status}; nothing was sent to WeChat")
