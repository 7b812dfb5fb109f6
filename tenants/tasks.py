"""Celery tasks of the tenants app: thin wrappers over services, stable names, ids as arguments."""

from __future__ import annotations

import logging
import random

from celery import shared_task
from django.conf import settings

from openplatform.component.config import component_config
from openplatform.component.models import TICKET_STALE_AFTER
from openplatform.component.tickets import component_ticket_age, component_tickets_purge
from openplatform.component.token import component_access_token_refresh_ahead
from openplatform.core.tokens import SCHEDULED_REFRESH_WINDOW
from openplatform.wechat.errors import WeChatError
from tenants.events import component_event_process, component_events_sweep
from tenants.messages import release_check_api_answer
from tenants.services.reconcile import (
    authorizer_ids_due_for_refresh,
    authorizers_reconcile,
    authorizers_refresh,
)

logger = logging.getLogger(__name__)


@shared_task(name="tenants.process_component_event", acks_late=True, max_retries=5)
def process_component_event(event_id: int) -> None:
    """Exchange the auth code of an authorized/updateauthorized event (`component_event_process`)."""
    request = process_component_event.request
    try:
        component_event_process(event_id=event_id, may_retry=not request.called_directly and request.retries < 5)
    except WeChatError as exc:  # retryable, with retries left: soon, with backoff
        raise process_component_event.retry(countdown=2**request.retries) from exc


@shared_task(name="tenants.answer_release_check", acks_late=True, max_retries=3)
def answer_release_check(appid: str, openid: str, code_ciphertext: str, content: str) -> None:
    """WeChat's release check, API step: exchange the test account's code and send the answer."""
    release_check_api_answer(appid=appid, openid=openid, code_ciphertext=code_ciphertext, content=content)


@shared_task(name="tenants.sweep_component_events")
def sweep_component_events() -> int:
    """Re-enqueue authorization events stored but not processed yet; close those whose code expired."""
    return component_events_sweep()


@shared_task(name="tenants.refresh_component_token")
def refresh_component_token() -> int:
    """Beat: refresh the component token ahead of expiry (no-op while enough time is left)."""
    return component_access_token_refresh_ahead(margin=SCHEDULED_REFRESH_WINDOW).generation


@shared_task(name="tenants.refresh_due_authorizer_tokens")
def refresh_due_authorizer_tokens() -> int:
    """Beat: split authorizers expiring within the window into batches (AUTHORIZER_REFRESH_BATCH_SIZE),
    their starts spread at random over AUTHORIZER_REFRESH_SPREAD_SECONDS (a minute by default)."""
    ids = authorizer_ids_due_for_refresh(window=SCHEDULED_REFRESH_WINDOW)
    size, spread = max(1, settings.AUTHORIZER_REFRESH_BATCH_SIZE), settings.AUTHORIZER_REFRESH_SPREAD_SECONDS
    for start in range(0, len(ids), size):
        refresh_authorizer_tokens_batch.apply_async(
            args=[ids[start : start + size]], countdown=random.uniform(0, spread)
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
