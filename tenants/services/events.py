"""Webhook events for authorizers: the authorizer as the API shows it, written by the webhooks outbox
in the caller's transaction. Nothing is recorded for an authorizer not bound to a merchant yet."""

from __future__ import annotations

from tenants.models import Authorizer
from webhooks.services import webhook_event_record

AUTHORIZED = "authorizer.authorized"
REVOKED = "authorizer.revoked"
REAUTHORIZATION_REQUIRED = "authorizer.reauthorization_required"


def authorizer_event_record(*, authorizer: Authorizer, event_type: str) -> None:
    if authorizer.tenant_id is None:
        return
    from tenants.api import AuthorizerSerializer  # the API's representation; the API imports services

    webhook_event_record(tenant_id=authorizer.tenant_id, type=event_type, data=AuthorizerSerializer(authorizer).data)
