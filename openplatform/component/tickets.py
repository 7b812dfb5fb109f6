"""component_verify_ticket: stored as WeChat pushes it (every 10 minutes), newest one used.

The ticket arrives at the events URL (tenants/views_wechat.py, via `component_push_store` in
openplatform/component/events.py); the component token (openplatform/component/token.py) is issued
against the newest one.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.utils import timezone

from openplatform.component.models import ComponentVerifyTicket

logger = logging.getLogger(__name__)

#: How long pushed tickets are kept (the newest is used; older ones are an audit trail).
TICKET_HISTORY = timedelta(days=2)


def component_ticket_store(*, component_appid: str, ticket: str, pushed_at: datetime) -> ComponentVerifyTicket:
    row = ComponentVerifyTicket(component_appid=component_appid, pushed_at=pushed_at)
    row.set_ticket(ticket)
    row.save()
    logger.info("component_verify_ticket stored", extra={"component_appid": component_appid})
    return row


def component_ticket_latest(*, component_appid: str) -> ComponentVerifyTicket | None:
    return ComponentVerifyTicket.objects.filter(component_appid=component_appid).order_by("-received_at").first()


def component_ticket_age(*, component_appid: str) -> timedelta | None:
    latest = component_ticket_latest(component_appid=component_appid)
    return None if latest is None else timezone.now() - latest.received_at


def component_tickets_purge(*, older_than: timedelta = TICKET_HISTORY) -> int:
    """Delete old tickets, always keeping the newest one per component."""
    cutoff = timezone.now() - older_than
    deleted = 0
    for appid in ComponentVerifyTicket.objects.values_list("component_appid", flat=True).distinct():
        newest = component_ticket_latest(component_appid=appid)
        qs = ComponentVerifyTicket.objects.filter(component_appid=appid, received_at__lt=cutoff)
        if newest is not None:
            qs = qs.exclude(pk=newest.pk)
        deleted += qs.delete()[0]
    return deleted
