"""Authorizer access tokens: refreshed ahead of expiry, single flight, compare-and-expire.

DESIGN.md §3.4. `authorizer_access_token_get` returns the stored token while more than the margin is
left (no query: the caller already holds the row). Otherwise the refresh runs under a lock on the
authorizer row (`SELECT ... FOR NO KEY UPDATE`, which does not block inserts of uploads that reference
the row); the holder re-reads, calls WeChat, and persists the access token and whatever refresh token
came back in the same transaction. Waiters then find the fresh token and never call WeChat.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from openplatform.component.config import component_config, wechat_client
from openplatform.component.services import with_component_token
from openplatform.core.tokens import ON_DEMAND_REFRESH_MARGIN, TokenLease
from openplatform.wechat.errors import NotAuthorized, RefreshTokenInvalid, WeChatError
from tenants.errors import AuthorizerUnavailable, ReauthorizationRequired
from tenants.models import Authorizer
from tenants.services.events import REAUTHORIZATION_REQUIRED, authorizer_event_record
from tenants.signals import authorizer_status_changed

logger = logging.getLogger(__name__)


def _lease(authorizer: Authorizer) -> TokenLease:
    return TokenLease(authorizer.get_access_token() or "", authorizer.token_generation)


def _usable(authorizer: Authorizer, margin: timedelta) -> bool:
    return authorizer.token_seconds_left() > margin.total_seconds()


def authorizer_access_token_get(
    *, authorizer: Authorizer, margin: timedelta = ON_DEMAND_REFRESH_MARGIN
) -> TokenLease:
    if authorizer.status != Authorizer.Status.AUTHORIZED:
        raise AuthorizerUnavailable(f"authorizer {authorizer.appid} is {authorizer.status}")
    if _usable(authorizer, margin):
        return _lease(authorizer)
    return authorizer_access_token_refresh(authorizer=authorizer, margin=margin)


def authorizer_access_token_refresh(
    *,
    authorizer: Authorizer,
    failed_generation: int | None = None,
    force: bool = False,
    margin: timedelta = ON_DEMAND_REFRESH_MARGIN,
) -> TokenLease:
    """Refresh under the row lock; with `failed_generation` only if the failed token is still current.

    Updates `authorizer` in place with what was persisted.
    """
    reauthorize_reason = ""
    error: WeChatError | None = None
    with transaction.atomic():
        row = Authorizer.objects.select_for_update(no_key=True).get(pk=authorizer.pk)
        if row.status != Authorizer.Status.AUTHORIZED:
            _copy_token_state(row, authorizer)
            raise AuthorizerUnavailable(f"authorizer {row.appid} is {row.status}")
        someone_refreshed = failed_generation is not None and row.token_generation != failed_generation
        if _usable(row, margin) and not force and (failed_generation is None or someone_refreshed):
            _copy_token_state(row, authorizer)
            return _lease(row)
        try:
            _refresh_from_wechat(row, force=force or failed_generation is not None)
        except (RefreshTokenInvalid, NotAuthorized) as exc:
            reauthorize_reason = f"WeChat refused the refresh token ({exc}); the merchant must authorize again"
            row.status = Authorizer.Status.REAUTHORIZATION_REQUIRED
            row.wipe_tokens()
            row.last_error, row.last_error_at = reauthorize_reason, timezone.now()
            row.save()
            authorizer_event_record(authorizer=row, event_type=REAUTHORIZATION_REQUIRED)
        except WeChatError as exc:
            error = exc
        else:
            row.save()
            _copy_token_state(row, authorizer)
            logger.info(
                "authorizer token refreshed",
                extra={"authorizer_appid": row.appid, "generation": row.token_generation},
            )
            return _lease(row)
    if reauthorize_reason:
        _copy_token_state(row, authorizer)
        authorizer.status = row.status
        logger.warning("authorizer needs re-authorization", extra={"authorizer_appid": row.appid})
        transaction.on_commit(
            lambda: authorizer_status_changed.send(sender=Authorizer, authorizer_id=row.pk, status=row.status)
        )
        raise ReauthorizationRequired(reauthorize_reason)
    Authorizer.objects.filter(pk=authorizer.pk).update(last_error=str(error)[:2000], last_error_at=timezone.now())
    logger.warning("authorizer token refresh failed: %s", error, extra={"authorizer_appid": authorizer.appid})
    raise error


def _copy_token_state(source: Authorizer, target: Authorizer) -> None:
    for field in (
        "access_token_ciphertext",
        "access_token_expires_at",
        "token_generation",
        "refresh_token_ciphertext",
        "token_refreshed_at",
        "refresh_count",
        "status",
    ):
        setattr(target, field, getattr(source, field))


def _refresh_from_wechat(row: Authorizer, *, force: bool) -> None:
    """Call WeChat for a new token and set it on `row` (not saved). Runs under the row lock."""
    client = wechat_client()
    if row.mode == Authorizer.Mode.DIRECT:
        token = client.stable_token(appid=row.appid, secret=row.get_app_secret() or "", force_refresh=force)
        access_token, expires_in, new_refresh = token.access_token, token.expires_in, None
    else:
        access_token, expires_in, new_refresh = _refresh_component_authorizer(row)
    now = timezone.now()
    row.set_access_token(access_token)
    row.access_token_expires_at = now + timedelta(seconds=expires_in)
    row.token_generation += 1
    row.token_refreshed_at = now
    row.refresh_count += 1
    row.last_error = ""
    if new_refresh and new_refresh != row.get_refresh_token():
        # WECHAT.md §7: always persist whatever refresh token comes back (old one has a short grace).
        row.set_refresh_token(new_refresh)


def _refresh_component_authorizer(row: Authorizer) -> tuple[str, int, str | None]:
    config = component_config()
    client = wechat_client()

    def refresh(refresh_token: str) -> tuple[str, int, str | None]:
        token = with_component_token(
            lambda ctoken: client.authorizer_token(
                component_access_token=ctoken,
                component_appid=config.appid,
                authorizer_appid=row.appid,
                authorizer_refresh_token=refresh_token,
            ),
            config=config,
        )
        return token.access_token, token.expires_in, token.refresh_token or refresh_token

    stored = row.get_refresh_token()
    if stored:
        try:
            return refresh(stored)
        except RefreshTokenInvalid:
            logger.warning("refresh token rejected (61023); recovering it once", extra={"authorizer_appid": row.appid})
    # WECHAT.md §7: 61023 -> fetch the current refresh token from api_get_authorizer_info once, retry once.
    info = with_component_token(
        lambda ctoken: client.get_authorizer_info(
            component_access_token=ctoken, component_appid=config.appid, authorizer_appid=row.appid
        ),
        config=config,
    )
    if not info.refresh_token or info.refresh_token == stored:
        raise RefreshTokenInvalid(61023, "no newer refresh token available from api_get_authorizer_info")
    row.set_refresh_token(info.refresh_token)
    if info.func_info:
        row.func_info = sorted(set(info.func_info))
    return refresh(info.refresh_token)
