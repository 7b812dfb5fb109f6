"""The component's own services: verify tickets and the component access token.

Single flight: the refresh runs under a row lock (`SELECT ... FOR NO KEY UPDATE` on PostgreSQL,
an IMMEDIATE transaction on SQLite). The lock holder re-reads, refreshes and persists; waiters wake
up, re-read and find the fresh token, so N concurrent callers cause one `api_component_token` call.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.db import IntegrityError, transaction
from django.utils import timezone

from openplatform.component.config import ComponentConfig, component_config, wechat_client
from openplatform.component.models import ComponentAccessToken, ComponentVerifyTicket
from openplatform.core.tokens import ON_DEMAND_REFRESH_MARGIN, TokenLease
from openplatform.wechat.errors import MissingTicket, TicketInvalid, TokenInvalid, WeChatError

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


def _token_row(appid: str) -> ComponentAccessToken:
    row = ComponentAccessToken.objects.filter(component_appid=appid).first()
    if row is not None:
        return row
    try:
        with transaction.atomic():
            return ComponentAccessToken.objects.create(component_appid=appid)
    except IntegrityError:  # another process created it first
        return ComponentAccessToken.objects.get(component_appid=appid)


def component_access_token_get(*, config: ComponentConfig | None = None) -> TokenLease:
    """The component token, refreshed (single flight) when less than the margin is left."""
    config = config or component_config()
    row = _token_row(config.appid)
    if row.seconds_left() > ON_DEMAND_REFRESH_MARGIN.total_seconds():
        return TokenLease(row.get_access_token() or "", row.generation)
    return component_access_token_refresh(config=config)


def component_access_token_refresh(
    *,
    config: ComponentConfig | None = None,
    failed_generation: int | None = None,
    force: bool = False,
    margin: timedelta = ON_DEMAND_REFRESH_MARGIN,
) -> TokenLease:
    """Refresh under the row lock. With `failed_generation`, refresh only if that token is still current.

    `margin`: refresh when less than this is left (the beat passes its wider window, so that callers
    find the token refreshed ahead of time rather than refreshing it on demand).
    """
    config = config or component_config()
    _token_row(config.appid)
    error: WeChatError | None = None
    with transaction.atomic():
        row = ComponentAccessToken.objects.select_for_update(no_key=True).get(component_appid=config.appid)
        fresh_enough = row.seconds_left() > margin.total_seconds()
        if fresh_enough and not force and (failed_generation is None or row.generation != failed_generation):
            return TokenLease(row.get_access_token() or "", row.generation)
        try:
            ticket_row = component_ticket_latest(component_appid=config.appid)
            if ticket_row is None or not ticket_row.is_valid:
                raise MissingTicket(
                    "no component_verify_ticket received in the last 12 hours: check the events URL "
                    "on the Open Platform page, or call api_start_push_ticket"
                )
            token = wechat_client().component_token(
                component_appid=config.appid,
                component_appsecret=config.appsecret,
                verify_ticket=ticket_row.get_ticket() or "",
            )
        except WeChatError as exc:
            error = exc
        else:
            now = timezone.now()
            row.set_access_token(token.access_token)
            row.expires_at = now + timedelta(seconds=token.expires_in)
            row.generation += 1
            row.refreshed_at = now
            row.refresh_count += 1
            row.last_error = ""
            row.save()
            logger.info(
                "component token refreshed",
                extra={"component_appid": config.appid, "generation": row.generation},
            )
            return TokenLease(token.access_token, row.generation)
    # Outside the (rolled-back-free) transaction: remember why it failed, for the admin and /readyz.
    message = _describe_component_error(error)
    ComponentAccessToken.objects.filter(component_appid=config.appid).update(
        last_error=message, last_error_at=timezone.now()
    )
    logger.error("component token refresh failed: %s", message, extra={"component_appid": config.appid})
    raise error


def _describe_component_error(error: WeChatError) -> str:
    if isinstance(error, TicketInvalid) and error.errcode is not None:
        return (
            f"WeChat rejected the component_verify_ticket ({error.errcode} {error.errmsg}): wait for the "
            "next push (every 10 minutes) or call api_start_push_ticket"
        )
    return str(error)


def with_component_token(call, *, config: ComponentConfig | None = None):
    """Run `call(token)`; on a token error, expire that token only if still current, refresh once, retry once."""
    config = config or component_config()
    lease = component_access_token_get(config=config)
    try:
        return call(lease.token)
    except TokenInvalid:
        lease = component_access_token_refresh(config=config, failed_generation=lease.generation)
        return call(lease.token)
