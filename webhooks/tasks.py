"""Celery tasks of the webhooks app: one delivery attempt per run, the sweeper, the retention job."""

from __future__ import annotations

import logging
from datetime import timedelta

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django.db.models import Q
from django.utils import timezone

from webhooks.config import webhook_config
from webhooks.models import WebhookDelivery, WebhookEvent
from webhooks.services.delivery import LEASE, webhook_delivery_attempt
from webhooks.services.events import webhook_event_dispatch

logger = logging.getLogger(__name__)

#: Retries due within this many seconds ride on a countdown message; later ones are left to the
#: sweeper: an ETA message is held unacknowledged by a worker, and one held past the broker's
#: visibility timeout (600 s) is delivered a second time.
COUNTDOWN_MAX_SECONDS = 300
#: A pending delivery this far past due has lost its message (broker down at the change, or a retry
#: left to the sweeper): enqueue it again. Duplicates are harmless, the claim lets one run send it.
STUCK_AFTER = timedelta(minutes=1)
SWEEP_BATCH = 1000


@shared_task(
    name="webhooks.deliver",
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    max_retries=None,
    # Inside the lease (60 s): a run is over before another may take the delivery over. Enforced on a
    # prefork pool; on the I/O pool deliveries run on (settings.CELERY_TASK_ROUTES) no limit applies and
    # the delivery's own timeout (WEBHOOK_TIMEOUT_SECONDS, 10 s) keeps a run well inside the lease.
    soft_time_limit=LEASE.total_seconds() * 0.7,
    time_limit=LEASE.total_seconds() * 0.8,
)
def deliver_webhook(self, delivery_id: int) -> str:
    try:
        outcome = webhook_delivery_attempt(delivery_id=delivery_id)
    except SoftTimeLimitExceeded:
        logger.warning("webhook delivery hit its time limit", extra={"delivery_id": delivery_id})
        raise self.retry(countdown=LEASE.total_seconds() + 1) from None
    if outcome.retry_in is not None and outcome.retry_in <= COUNTDOWN_MAX_SECONDS:
        raise self.retry(countdown=outcome.retry_in)
    return outcome.status


@shared_task(name="webhooks.dispatch_event", acks_late=True, reject_on_worker_lost=True)
def dispatch_webhook_event(event_id: str) -> int:
    return len(webhook_event_dispatch(event_id=event_id))


@shared_task(name="webhooks.sweep_deliveries")
def sweep_webhook_deliveries() -> int:
    """Beat: dispatch events whose message was lost, enqueue pending deliveries past due (lost
    messages, long backoffs) and those whose run's lease ran out."""
    now = timezone.now()
    undispatched = WebhookEvent.objects.filter(
        dispatched_at__isnull=True, created_at__lt=now - STUCK_AFTER
    ).order_by("created_at").values_list("pk", flat=True)[:SWEEP_BATCH]
    events = 0
    for pk in undispatched:
        dispatch_webhook_event.delay(str(pk))
        events += 1
    due = WebhookDelivery.objects.filter(
        Q(status=WebhookDelivery.Status.PENDING, next_attempt_at__lt=now - STUCK_AFTER, lease_until__isnull=True)
        | Q(status=WebhookDelivery.Status.PENDING, lease_until__lt=now)
    ).order_by("next_attempt_at").values_list("pk", flat=True)[:SWEEP_BATCH]
    count = 0
    for pk in due:
        deliver_webhook.delay(pk)
        count += 1
    if count or events:
        logger.info("enqueued %d webhook deliveries past due and %d undispatched events", count, events)
    return count + events


@shared_task(name="webhooks.purge_old_events")
def purge_old_webhook_events() -> int:
    """Beat: delete events (with their deliveries and attempts) past WEBHOOK_EVENT_RETENTION_DAYS,
    keeping any with a delivery still pending."""
    cutoff = timezone.now() - webhook_config().event_retention
    ids = list(
        WebhookEvent.objects.filter(created_at__lt=cutoff)
        .exclude(deliveries__status=WebhookDelivery.Status.PENDING)
        .values_list("pk", flat=True)[:5000]
    )
    if not ids:
        return 0
    WebhookEvent.objects.filter(pk__in=ids).delete()
    return len(ids)
