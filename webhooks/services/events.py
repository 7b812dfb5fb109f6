"""The outbox: an event row written in the caller's transaction, one delivery per subscribed endpoint.

Every event is recorded, whether or not the tenant has an endpoint for it: `GET /api/v1/webhook-events/`
is how a merchant catches up (after an outage of theirs, a disabled endpoint, or before they set one
up), and it must list everything, as Stripe's events API does. The cost is one small insert per state
change; deliveries are only created for enabled endpoints that subscribe to the type.

Deliveries are enqueued after commit (openplatform.core.queueing): if the broker is down then, the
rows are still there and the sweeper (tasks.sweep_webhook_deliveries) enqueues them later.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from django.db import transaction
from django.utils import timezone

from openplatform.core.queueing import enqueue_on_commit
from webhooks.errors import WebhookRefused
from webhooks.models import EVENT_TYPES, TEST_EVENT_TYPE, WebhookDelivery, WebhookEndpoint, WebhookEvent


def webhook_event_record(*, tenant_id: int | None, type: str, data: dict) -> WebhookEvent | None:
    """Record one event for `tenant_id` (None: not bound to a merchant yet, nothing is recorded).

    Call it inside the transaction that makes the change, so both commit or neither does.
    """
    if tenant_id is None:
        return None
    return webhook_events_record(tenant_id=tenant_id, events=[(type, data)])[0]


def webhook_events_record(*, tenant_id: int, events: Sequence[tuple[str, dict]]) -> list[WebhookEvent]:
    """Several events of one tenant in three queries (the endpoints, the events, the deliveries)."""
    unknown = {t for t, _ in events if t not in EVENT_TYPES}
    if unknown:
        raise ValueError(f"unknown webhook event type(s): {sorted(unknown)}")
    if not events:
        return []
    now = timezone.now()
    rows = [WebhookEvent(tenant_id=tenant_id, type=t, data=data, created_at=now) for t, data in events]
    WebhookEvent.objects.bulk_create(rows)
    endpoints = list(WebhookEndpoint.objects.filter(tenant_id=tenant_id, enabled=True).only("pk", "events"))
    _deliver(
        WebhookDelivery(event=event, endpoint_id=endpoint.pk, next_attempt_at=now, window_started_at=now,
                        created_at=now)
        for event in rows
        for endpoint in endpoints
        if endpoint.subscribes_to(event.type)
    )
    return rows


def _deliver(deliveries: Iterable[WebhookDelivery]) -> list[WebhookDelivery]:
    from webhooks.tasks import deliver_webhook

    deliveries = list(deliveries)
    if deliveries:
        WebhookDelivery.objects.bulk_create(deliveries)
        for delivery in deliveries:
            enqueue_on_commit(deliver_webhook, delivery.pk)
    return deliveries


def webhook_test_event_send(*, endpoint: WebhookEndpoint) -> WebhookDelivery:
    """Admin: a `webhook.test` event delivered to this endpoint only, whatever it subscribes to."""
    if not endpoint.enabled:
        raise WebhookRefused("endpoint_disabled", "The endpoint is disabled; enable it first.")
    now = timezone.now()
    with transaction.atomic():
        event = WebhookEvent.objects.create(
            tenant_id=endpoint.tenant_id, type=TEST_EVENT_TYPE, created_at=now,
            data={"endpoint_id": str(endpoint.pk), "message": "A test event sent from the service provider's console."},
        )
        (delivery,) = _deliver([WebhookDelivery(event=event, endpoint=endpoint, next_attempt_at=now,
                                                window_started_at=now, created_at=now)])
    return delivery
