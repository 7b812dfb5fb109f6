"""Celery tasks of the tenants app: thin wrappers over services, stable names, ids as arguments."""

from __future__ import annotations

import logging
import random
from datetime import timedelta

from celery import shared_task
from django.db import transaction
from django.utils import timezone

from openplatform.component.config import component_config
from openplatform.component.models import TICKET_STALE_AFTER, ComponentEvent
from openplatform.component.services import (
    component_access_token_refresh,
    component_ticket_age,
    component_tickets_purge,
)
from openplatform.core.tokens import SCHEDULED_REFRESH_WINDOW
from openplatform.wechat.errors import AuthCodeInvalid, WeChatError
from tenants.services.authorization import authorization_code_exchange
from tenants.services.reconcile import (
    authorizer_ids_due_for_refresh,
    authorizers_reconcile,
    authorizers_refresh,
)

logger = logging.getLogger(__name__)

REFRESH_BATCH_SIZE = 100
#: An auth code lives an hour (AuthorizationCodeExpiredTime, docs/wechat-protocol.md §3); plus skew margin.
AUTH_CODE_LIFETIME = timedelta(hours=2)
REFRESH_JITTER_SECONDS = 60
#: An event's own task normally runs within seconds; the sweeper leaves younger events to it.
EVENT_TASK_GRACE = timedelta(minutes=2)


@shared_task(name="tenants.process_component_event", acks_late=True, max_retries=5)
def process_component_event(event_id: int) -> None:
    """Exchange the auth code of an authorized/updateauthorized event (idempotent).

    The event is final once the code is exchanged or WeChat calls the code dead (61009). Any other
    failure (no ticket yet, WeChat unreachable, ...) keeps the code and records the error, so
    `sweep_component_events` tries again until the code itself expires: losing it would lose the
    authorization (docs/wechat-protocol.md §8: an account whose code was never exchanged may have no refresh token).
    """
    with transaction.atomic():
        event = ComponentEvent.objects.select_for_update().filter(pk=event_id).first()
        if event is None or event.processed_at is not None:
            return
        code = event.get_auth_code()
        try:
            if code:
                authorization_code_exchange(auth_code=code)
        except AuthCodeInvalid as exc:
            event.error = str(exc)[:2000]
        except WeChatError as exc:
            request = process_component_event.request
            if exc.retryable and not request.called_directly and request.retries < 5:
                raise process_component_event.retry(countdown=2**request.retries) from exc
            event.error = str(exc)[:2000]
            event.save(update_fields=["error"])
            logger.warning("authorization event not processed yet: %s", exc, extra={"event_id": event.pk})
            return
        else:
            event.error = ""
        event.processed_at = timezone.now()
        event.set_auth_code(None)
        event.save()


@shared_task(name="tenants.sweep_component_events")
def sweep_component_events() -> int:
    """Re-enqueue authorization events that were stored but not processed yet (broker down, no ticket
    yet, WeChat unreachable). Past the code's lifetime they are closed instead: the code is dead."""
    now = timezone.now()
    expired = ComponentEvent.objects.awaiting_exchange(received_before=now - AUTH_CODE_LIFETIME)
    closed = expired.update(
        processed_at=now,
        auth_code_ciphertext="",
        error="the authorization code expired before it could be exchanged; reconciliation will find the account",
    )
    if closed:
        logger.error("%d authorization event(s) expired unprocessed", closed)
    ids = list(
        ComponentEvent.objects.awaiting_exchange(received_before=now - EVENT_TASK_GRACE).values_list("pk", flat=True)[:500]
    )
    for pk in ids:
        process_component_event.delay(pk)
    return len(ids)


@shared_task(name="tenants.refresh_component_token")
def refresh_component_token() -> int:
    """Beat: refresh the component token ahead of expiry (no-op while enough time is left)."""
    return component_access_token_refresh(config=component_config(), margin=SCHEDULED_REFRESH_WINDOW).generation


@shared_task(name="tenants.refresh_due_authorizer_tokens")
def refresh_due_authorizer_tokens() -> int:
    """Beat: split authorizers expiring within the window into batches, spread over a minute."""
    ids = authorizer_ids_due_for_refresh(window=SCHEDULED_REFRESH_WINDOW)
    for start in range(0, len(ids), REFRESH_BATCH_SIZE):
        refresh_authorizer_tokens_batch.apply_async(
            args=[ids[start : start + REFRESH_BATCH_SIZE]], countdown=random.uniform(0, REFRESH_JITTER_SECONDS)
        )
    return len(ids)


@shared_task(name="tenants.refresh_authorizer_tokens_batch", acks_late=True)
def refresh_authorizer_tokens_batch(authorizer_ids: list[int]) -> dict:
    report = authorizers_refresh(authorizer_ids=authorizer_ids)
    return {"refreshed": report.refreshed, "skipped": report.skipped, "failed": report.failed}


@shared_task(name="tenants.ticket_watchdog")
def ticket_watchdog() -> float | None:
    """Beat: log an error when the newest component_verify_ticket is older than TICKET_STALE_AFTER."""
    age = component_ticket_age(component_appid=component_config().appid)
    if age is None:
        logger.error("no component_verify_ticket has ever been received: check the events URL configuration")
        return None
    if age > TICKET_STALE_AFTER:
        logger.error(
            "newest component_verify_ticket is %d minutes old (pushes come every 10 minutes): check the "
            "events URL, or call api_start_push_ticket", age.total_seconds() // 60,
        )
    return age.total_seconds()


@shared_task(name="tenants.reconcile_authorizers")
def reconcile_authorizers() -> dict:
    return vars(authorizers_reconcile())


@shared_task(name="tenants.purge_old_tickets")
def purge_old_tickets() -> int:
    return component_tickets_purge()
