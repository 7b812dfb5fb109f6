"""Sending one delivery (the task body): claim, check the address, POST, record, schedule or finish.

A delivery is `pending` until a 2xx (`succeeded`) or until its retry window (3 days) has passed since
the first attempt (`failed`). Between attempts: capped exponential backoff with jitter. A run claims
the delivery with a lease (a conditional UPDATE), so a redelivered or re-enqueued message never sends
it twice at once, and writes its result only while it still holds the lease. Delivery is
at-least-once: a run that dies after the receiver answered is sent again; receivers dedupe by the
event `id`.

An endpoint whose attempts have all failed for the retry window is disabled (and its pending
deliveries failed): it shows on the operator's dashboard, the API shows `enabled: false` with the
reason, and events keep being recorded for `GET /api/v1/webhook-events/`. When a failing endpoint
answers again, its deliveries waiting in backoff are sent at once instead of hours later.
"""

from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from openplatform.core.queueing import enqueue_on_commit
from webhooks import transport
from webhooks.config import RESPONSE_BODY_LIMIT, WebhookConfig, webhook_config
from webhooks.errors import WebhookRefused
from webhooks.guard import url_check
from webhooks.models import WebhookDelivery, WebhookDeliveryAttempt, WebhookEndpoint
from webhooks.services.endpoints import webhook_endpoint_disable
from webhooks.signing import HEADER, signature_header

logger = logging.getLogger(__name__)

USER_AGENT = "openplatform-webhooks/1"
#: A run owns a delivery this long: above the DNS lookup, the 10 s timeout and the writes, and above
#: the task's hard time limit (tasks.py), so no second run starts while the first is alive.
LEASE = timedelta(seconds=60)
#: At most this many deliveries of a recovered endpoint are pulled forward at once (the rest: sweeper).
RECOVERY_BATCH = 100


@dataclass(frozen=True)
class DeliveryOutcome:
    status: str
    #: Seconds until the next attempt is due (None: final, or someone else owns it).
    retry_in: float | None = None


def retry_delay(attempt: int, *, config: WebhookConfig) -> float:
    """Seconds before attempt `attempt + 1`: exponential, capped, with jitter in [delay/2, delay].

    Half of it fixed, so retries stay spread out; half random, so the deliveries of an endpoint that
    was down do not all come back in the same second (equal jitter).
    """
    delay = min(config.retry_max, config.retry_base * 2 ** max(0, attempt - 1))
    return delay / 2 + random.uniform(0, delay / 2)


def webhook_body(*, payload: dict) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def _claim(delivery_id: int, now: datetime) -> datetime | None:
    lease_until = now + LEASE
    claimed = WebhookDelivery.objects.filter(
        Q(pk=delivery_id, status=WebhookDelivery.Status.PENDING, next_attempt_at__lte=now)
        & (Q(lease_until__isnull=True) | Q(lease_until__lt=now))
    ).update(lease_until=lease_until)
    return lease_until if claimed else None


def _current(delivery_id: int) -> DeliveryOutcome:
    row = WebhookDelivery.objects.filter(pk=delivery_id).values("status", "next_attempt_at", "lease_until").first()
    if row is None:
        return DeliveryOutcome("missing")
    if row["status"] != WebhookDelivery.Status.PENDING:
        return DeliveryOutcome(row["status"])
    now = timezone.now()
    if row["lease_until"] and row["lease_until"] > now:
        return DeliveryOutcome(row["status"])  # another run is sending it
    due = row["next_attempt_at"]
    return DeliveryOutcome(row["status"], retry_in=max(0.0, (due - now).total_seconds()) if due else None)


def webhook_delivery_attempt(*, delivery_id: int) -> DeliveryOutcome:
    now = timezone.now()
    lease_until = _claim(delivery_id, now)
    if lease_until is None:
        return _current(delivery_id)
    delivery = WebhookDelivery.objects.select_related("event", "endpoint").get(pk=delivery_id)
    endpoint, config = delivery.endpoint, webhook_config()
    if not endpoint.enabled:
        return _finish_disabled(delivery, lease_until)

    number, started = delivery.attempts + 1, timezone.now()
    attempt = WebhookDeliveryAttempt(delivery=delivery, number=number, started_at=started, duration_ms=0)
    try:
        target = url_check(endpoint.url, allowed=config.allowed_networks, allow_plain_http=config.allow_plain_http)
    except WebhookRefused as exc:
        attempt.outcome, attempt.error = WebhookDeliveryAttempt.Outcome.REFUSED, exc.detail
        return _record(delivery, attempt, lease_until, config)
    body = webhook_body(payload=delivery.event.payload())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "Webhook-Id": str(delivery.event_id),
        HEADER: signature_header(secrets=endpoint.signing_secrets(), timestamp=int(time.time()), body=body),
    }
    answer = transport.post(target, body=body, headers=headers, timeout=config.timeout,
                            read_limit=RESPONSE_BODY_LIMIT)
    attempt.address = str(target.address)
    attempt.duration_ms = round(answer.duration_ms, 2)
    attempt.response_status = answer.status
    attempt.response_body = answer.body[:RESPONSE_BODY_LIMIT].decode("utf-8", "replace")
    attempt.error = answer.error
    if answer.failure == "timeout":
        attempt.outcome = WebhookDeliveryAttempt.Outcome.TIMEOUT
    elif answer.failure:
        attempt.outcome = WebhookDeliveryAttempt.Outcome.NETWORK_ERROR
    elif 200 <= answer.status < 300:
        attempt.outcome = WebhookDeliveryAttempt.Outcome.SUCCEEDED
    else:
        attempt.outcome = WebhookDeliveryAttempt.Outcome.HTTP_ERROR
        attempt.error = f"HTTP {answer.status}" + (" (redirects are not followed)" if 300 <= answer.status < 400 else "")
    return _record(delivery, attempt, lease_until, config)


def _record(delivery: WebhookDelivery, attempt: WebhookDeliveryAttempt, lease_until: datetime,
            config: WebhookConfig) -> DeliveryOutcome:
    """The attempt and the delivery's new state in one transaction, only while the lease is ours."""
    now = timezone.now()
    endpoint = delivery.endpoint
    succeeded = attempt.outcome == WebhookDeliveryAttempt.Outcome.SUCCEEDED
    retry_in = None
    if succeeded:
        values = {"status": WebhookDelivery.Status.SUCCEEDED, "finished_at": now, "next_attempt_at": None,
                  "last_error": ""}
    elif now >= delivery.window_started_at + config.retry_window:
        values = {"status": WebhookDelivery.Status.FAILED, "finished_at": now, "next_attempt_at": None,
                  "last_error": f"gave up after {attempt.number} attempts: {attempt.error}"[:2000]}
    else:
        deadline = delivery.window_started_at + config.retry_window
        next_at = min(now + timedelta(seconds=retry_delay(attempt.number, config=config)), deadline)
        retry_in = max(0.0, (next_at - now).total_seconds())
        values = {"next_attempt_at": next_at, "last_error": attempt.error[:2000]}
    with transaction.atomic():
        written = WebhookDelivery.objects.filter(
            pk=delivery.pk, status=WebhookDelivery.Status.PENDING, lease_until=lease_until
        ).update(attempts=attempt.number, lease_until=None, **values)
        if not written:
            logger.warning("webhook delivery lease lost before its result was saved",
                           extra={"delivery_id": delivery.pk})
            return _current(delivery.pk)
        attempt.save(force_insert=True)
        if succeeded:
            if endpoint.failing_since is not None:
                _recovered(endpoint)
        else:
            _failing(endpoint, now=now, config=config)
    status = values.get("status", WebhookDelivery.Status.PENDING)
    logger.info("webhook attempt %s", attempt.outcome, extra={
        "delivery_id": delivery.pk, "event_id": str(delivery.event_id), "endpoint_id": str(endpoint.pk),
        "attempt": attempt.number, "response_status": attempt.response_status,
        "latency_ms": attempt.duration_ms, "delivery_status": status,
    })
    return DeliveryOutcome(status, retry_in=retry_in)


def _failing(endpoint: WebhookEndpoint, *, now: datetime, config: WebhookConfig) -> None:
    if endpoint.failing_since is None:
        WebhookEndpoint.objects.filter(pk=endpoint.pk, failing_since__isnull=True).update(failing_since=now)
        return
    if now - endpoint.failing_since >= config.retry_window:
        days = config.retry_window.total_seconds() / 86400
        reason = (f"every delivery failed since {endpoint.failing_since:%Y-%m-%d %H:%M} UTC "
                  f"({days:g} days); re-enable it once the receiver works")
        if webhook_endpoint_disable(endpoint_id=endpoint.pk, reason=reason):
            logger.error("webhook endpoint disabled: %s", reason,
                         extra={"endpoint_id": str(endpoint.pk), "tenant_id": endpoint.tenant_id})


def _recovered(endpoint: WebhookEndpoint) -> None:
    """The endpoint answers again: clear its failing mark, send what waits in backoff now."""
    from webhooks.tasks import deliver_webhook

    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(failing_since=None)
    now = timezone.now()
    waiting = list(
        WebhookDelivery.objects.filter(endpoint_id=endpoint.pk, status=WebhookDelivery.Status.PENDING,
                                       next_attempt_at__gt=now)
        .order_by("next_attempt_at").values_list("pk", flat=True)[:RECOVERY_BATCH]
    )
    if waiting:
        WebhookDelivery.objects.filter(pk__in=waiting, status=WebhookDelivery.Status.PENDING).update(next_attempt_at=now)
        for pk in waiting:
            enqueue_on_commit(deliver_webhook, pk)


def _finish_disabled(delivery: WebhookDelivery, lease_until: datetime) -> DeliveryOutcome:
    WebhookDelivery.objects.filter(pk=delivery.pk, status=WebhookDelivery.Status.PENDING,
                                   lease_until=lease_until).update(
        status=WebhookDelivery.Status.FAILED, finished_at=timezone.now(), next_attempt_at=None, lease_until=None,
        last_error="endpoint disabled",
    )
    return DeliveryOutcome(WebhookDelivery.Status.FAILED)


def webhook_delivery_redeliver(*, delivery: WebhookDelivery) -> WebhookDelivery:
    """Admin: send a delivery again (any state) with a fresh retry window."""
    from webhooks.tasks import deliver_webhook

    endpoint = WebhookEndpoint.objects.filter(pk=delivery.endpoint_id).values("enabled").first()
    if not endpoint or not endpoint["enabled"]:
        raise WebhookRefused("endpoint_disabled", "The endpoint is disabled; enable it first.")
    now = timezone.now()
    with transaction.atomic():
        WebhookDelivery.objects.filter(pk=delivery.pk).filter(
            ~Q(status=WebhookDelivery.Status.PENDING) | Q(lease_until__isnull=True) | Q(lease_until__lt=now)
        ).update(status=WebhookDelivery.Status.PENDING, next_attempt_at=now, window_started_at=now,
                 finished_at=None, lease_until=None)
        enqueue_on_commit(deliver_webhook, delivery.pk)
    delivery.refresh_from_db()
    return delivery
