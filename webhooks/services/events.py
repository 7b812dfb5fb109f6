"""The outbox: an event row written in the caller's transaction; deliveries are made from it after commit.

Every event is recorded, whether or not the tenant has an endpoint for it: `GET /api/v1/webhook-events/`
is how a merchant catches up (after an outage of theirs, a disabled endpoint, or before they set one
up), and it must list everything, as Stripe's events API does.

The writer's transaction does one INSERT and nothing else, whatever the number of endpoints: the
upload task and the accept path have fixed query budgets, and a bulk change (the queued uploads of a
revoked account) stays one statement per table. After commit, `webhooks.dispatch_event` creates one
delivery per enabled endpoint subscribed to the type (idempotent: one per event and endpoint) and
enqueues them. If the broker is down at commit, the sweeper finds the event undispatched and the
delivery pending, and enqueues them later: nothing is lost.

The upload task writes its event in the same statement as its result (uploads/services/pg.py), and
there the event of a tenant with no enabled endpoint is written already dispatched (there is nobody to
deliver it to): no dispatch task runs for it. An endpoint created in the same instant may miss that
one event, as it would miss an event created a moment before it; the catch-up API lists it.
"""

from __future__ import annotations

from collections.abc import Sequence

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
    """Several events of one tenant in one INSERT; each is dispatched after commit."""
    unknown = {t for t, _ in events if t not in EVENT_TYPES}
    if unknown:
        raise ValueError(f"unknown webhook event type(s): {sorted(unknown)}")
    if not events:
        return []
    now = timezone.now()
    rows = WebhookEvent.objects.bulk_create(
        WebhookEvent(tenant_id=tenant_id, type=t, data=data, created_at=now) for t, data in events
    )
    for event in rows:
        webhook_event_dispatch_enqueue(event.pk)
    return rows


def webhook_event_dispatch_enqueue(event_id) -> None:
    """Send the event's dispatch task after the current transaction commits (at once outside one)."""
    from webhooks.tasks import dispatch_webhook_event

    enqueue_on_commit(dispatch_webhook_event, str(event_id))


def webhook_event_dispatch(*, event_id) -> list[int]:
    """Create the event's deliveries (one per enabled, subscribed endpoint) and enqueue them after commit.

    Safe to run twice or concurrently: a delivery exists once per event and endpoint, and every run
    enqueues the pending ones (a second message for a delivery is harmless: one run claims it).
    """
    from webhooks.tasks import deliver_webhook

    event = (WebhookEvent.objects.filter(pk=event_id)
             .only("pk", "tenant_id", "type", "created_at", "dispatched_at").first())
    if event is None:
        return []
    now = timezone.now()
    with transaction.atomic():
        if event.dispatched_at is None:
            # Endpoints added after the event do not get it (a dispatch delayed by a broker outage
            # must not send them history); the catch-up API has it.
            endpoints = WebhookEndpoint.objects.filter(
                tenant_id=event.tenant_id, enabled=True, created_at__lte=event.created_at
            ).only("pk", "events")
            WebhookDelivery.objects.bulk_create(
                [WebhookDelivery(event_id=event.pk, endpoint_id=endpoint.pk, next_attempt_at=now,
                                 window_started_at=now, created_at=now)
                 for endpoint in endpoints if endpoint.subscribes_to(event.type)],
                ignore_conflicts=True,
            )
            WebhookEvent.objects.filter(pk=event.pk, dispatched_at__isnull=True).update(dispatched_at=now)
        pending = list(WebhookDelivery.objects.filter(
            event_id=event.pk, status=WebhookDelivery.Status.PENDING, lease_until__isnull=True
        ).values_list("pk", flat=True))
        for pk in pending:
            enqueue_on_commit(deliver_webhook, pk)
    return pending


def webhook_test_event_send(*, endpoint: WebhookEndpoint) -> WebhookDelivery:
    """Admin: a `webhook.test` event delivered to this endpoint only, whatever it subscribes to."""
    from webhooks.tasks import deliver_webhook

    if not endpoint.enabled:
        raise WebhookRefused("endpoint_disabled", "The endpoint is disabled; enable it first.")
    now = timezone.now()
    with transaction.atomic():
        event = WebhookEvent.objects.create(
            tenant_id=endpoint.tenant_id, type=TEST_EVENT_TYPE, created_at=now, dispatched_at=now,
            data={"endpoint_id": str(endpoint.pk), "message": "A test event sent from the service provider's console."},
        )
        delivery = WebhookDelivery.objects.create(event=event, endpoint=endpoint, next_attempt_at=now,
                                                  window_started_at=now, created_at=now)
        enqueue_on_commit(deliver_webhook, delivery.pk)
    return delivery
