"""Webhook writes: endpoints, the event outbox, deliveries. Public entry points are re-exported here."""

from webhooks.services.delivery import webhook_delivery_attempt, webhook_delivery_redeliver
from webhooks.services.endpoints import (
    webhook_endpoint_create,
    webhook_endpoint_delete,
    webhook_endpoint_enable,
    webhook_endpoint_rotate_secret,
)
from webhooks.services.events import (
    webhook_event_dispatch,
    webhook_event_record,
    webhook_events_record,
    webhook_test_event_send,
)

__all__ = [
    "webhook_delivery_attempt",
    "webhook_delivery_redeliver",
    "webhook_endpoint_create",
    "webhook_endpoint_delete",
    "webhook_endpoint_enable",
    "webhook_endpoint_rotate_secret",
    "webhook_event_dispatch",
    "webhook_event_record",
    "webhook_events_record",
    "webhook_test_event_send",
]
