"""The component access token (api_component_token), issued against the newest verify ticket.

One `ComponentAccessToken` row per component appid; its refresh lease makes the refresh single flight
(`openplatform.core.tokens`), so N concurrent callers cause one `api_component_token` call. Calls that
use the token go through `openplatform.component.api`, which also handles a token WeChat refuses.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import IntegrityError, transaction
from django.utils import timezone

from openplatform.component.config import ComponentConfig, component_config, wechat_client
from openplatform.component.models import ComponentAccessToken
from openplatform.component.tickets import component_ticket_latest
from openplatform.core.tokens import (
    ON_DEMAND_REFRESH_MARGIN,
    SCHEDULED_REFRESH_WINDOW,
    TokenLease,
    token_force_refresh,
    token_get,
    token_refresh_after_failure,
    token_refresh_ahead,
)
from openplatform.wechat.errors import MissingTicket, TicketInvalid, WeChatError

logger = logging.getLogger(__name__)


def component_access_token_get(*, config: ComponentConfig | None = None) -> TokenLease:
    """The component token, refreshed (single flight) when less than the on-demand margin is left."""
    return token_get(_ComponentToken(config or component_config()))


def component_access_token_refresh_ahead(
    *, config: ComponentConfig | None = None, margin: timedelta = SCHEDULED_REFRESH_WINDOW
) -> TokenLease:
    """The beat's refresh: a new token when less than `margin` is left, else the stored one."""
    return token_refresh_ahead(_ComponentToken(config or component_config()), margin=margin)


def component_access_token_refresh_after_failure(
    *, config: ComponentConfig | None = None, failed_generation: int
) -> TokenLease:
    """WeChat refused the token of `failed_generation`: a new one, unless another caller already replaced it."""
    return token_refresh_after_failure(_ComponentToken(config or component_config()), failed_generation=failed_generation)


def component_access_token_force_refresh(*, config: ComponentConfig | None = None) -> TokenLease:
    return token_force_refresh(_ComponentToken(config or component_config()))


def component_access_token_refresh(
    *,
    config: ComponentConfig | None = None,
    failed_generation: int | None = None,
    force: bool = False,
    margin: timedelta = ON_DEMAND_REFRESH_MARGIN,
) -> TokenLease:
    """The older form with flags, kept for existing callers: one of the three modes above."""
    if force:
        return component_access_token_force_refresh(config=config)
    if failed_generation is not None:
        return component_access_token_refresh_after_failure(config=config, failed_generation=failed_generation)
    return component_access_token_refresh_ahead(config=config, margin=margin)


def _token_row(appid: str) -> ComponentAccessToken:
    row = ComponentAccessToken.objects.filter(component_appid=appid).first()
    if row is not None:
        return row
    try:
        with transaction.atomic():
            return ComponentAccessToken.objects.create(component_appid=appid)
    except IntegrityError:  # another process created it first
        return ComponentAccessToken.objects.get(component_appid=appid)


@dataclass(frozen=True)
class _Fetched:
    access_token: str
    expires_in: int
    asked_at: datetime  # the expiry counts from before the call: never later than WeChat's


class _ComponentToken:
    """The `TokenSource` of the component token."""

    kind = "component"

    def __init__(self, config: ComponentConfig) -> None:
        self.config = config

    def current(self) -> ComponentAccessToken:
        return _token_row(self.config.appid)

    def reload(self) -> ComponentAccessToken:
        return _token_row(self.config.appid)

    def lock(self) -> ComponentAccessToken:
        _token_row(self.config.appid)  # the first refresh ever needs a row to lock
        return ComponentAccessToken.objects.select_for_update(no_key=True).get(component_appid=self.config.appid)

    def seconds_left(self, row: ComponentAccessToken) -> float:
        return row.seconds_left()

    def generation(self, row: ComponentAccessToken) -> int:
        return row.generation

    def serve(self, row: ComponentAccessToken) -> TokenLease:
        return TokenLease(row.get_access_token() or "", row.generation)

    def fetch(self, row: ComponentAccessToken, *, invalidate_previous: bool) -> _Fetched:
        # Nothing to invalidate with: api_component_token always issues a new token.
        ticket_row = component_ticket_latest(component_appid=self.config.appid)
        if ticket_row is None or not ticket_row.is_valid:
            raise MissingTicket(
                "no component_verify_ticket received in the last 12 hours: check the events URL "
                "on the Open Platform page, or call api_start_push_ticket"
            )
        asked_at = timezone.now()
        token = wechat_client().component_token(
            component_appid=self.config.appid,
            component_appsecret=self.config.appsecret,
            verify_ticket=ticket_row.get_ticket() or "",
        )
        return _Fetched(token.access_token, token.expires_in, asked_at)

    def apply(self, row: ComponentAccessToken, fetched: _Fetched) -> None:
        row.set_access_token(fetched.access_token)
        row.expires_at = fetched.asked_at + timedelta(seconds=fetched.expires_in)
        row.generation += 1
        row.refreshed_at = timezone.now()
        row.refresh_count += 1
        row.last_error = ""

    def refused(self, row: ComponentAccessToken, error: WeChatError) -> Exception | None:
        return None  # every failure of the component token is retried later; none changes its row

    def record_failure(self, error: WeChatError) -> None:
        # Remembered for the admin and /readyz.
        message = _describe_component_error(error)
        ComponentAccessToken.objects.filter(component_appid=self.config.appid).update(
            last_error=message, last_error_at=timezone.now()
        )
        logger.error("component token refresh failed: %s", message, extra={"component_appid": self.config.appid})

    def log_refreshed(self, row: ComponentAccessToken) -> None:
        logger.info("component token refreshed", extra={"component_appid": self.config.appid, "generation": row.generation})

    def log_extra(self) -> dict[str, str]:
        return {"component_appid": self.config.appid}


def _describe_component_error(error: WeChatError) -> str:
    if isinstance(error, TicketInvalid) and error.errcode is not None:
        return (
            f"WeChat rejected the component_verify_ticket ({error.errcode} {error.errmsg}): wait for the "
            "next push (every 10 minutes) or call api_start_push_ticket"
        )
    return str(error)
