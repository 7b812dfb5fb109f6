"""Authorizer access tokens: refreshed ahead of expiry, single flight, compare-and-expire.

The refresh itself (lease, call with no lock held, compare-and-store, failure recorded) is
`openplatform.core.tokens`; this module says what is particular to an authorizer (docs/architecture.md
§3.4):

- the lease is on the authorizer row, taken and stored under short `SELECT ... FOR NO KEY UPDATE` locks
  (which do not block inserts of uploads that reference it); only an `authorized` account can have a
  token (`AuthorizerUnavailable`);
- the token comes from api_authorizer_token with the refresh token, persisting whatever refresh
  token comes back; 61023 is recovered once through api_get_authorizer_info; in direct mode it comes
  from stable_token with the account's own secret;
- a refresh token WeChat no longer accepts makes the account `reauthorization_required`
  (`ReauthorizationRequired`, and `authorizer_status_changed` after commit);
- the caller's `Authorizer` instance is updated in place with what was persisted.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone

from openplatform.component.api import component_api
from openplatform.component.config import wechat_client
from openplatform.core.tokens import (
    ON_DEMAND_REFRESH_MARGIN,
    SCHEDULED_REFRESH_WINDOW,
    TokenLease,
    token_force_refresh,
    token_get,
    token_refresh_after_failure,
    token_refresh_ahead,
)
from openplatform.wechat.errors import NotAuthorized, RefreshTokenInvalid, WeChatError
from tenants.errors import AuthorizerUnavailable, ReauthorizationRequired
from tenants.models import Authorizer
from tenants.services.events import REAUTHORIZATION_REQUIRED, authorizer_event_record
from tenants.signals import authorizer_status_changed

logger = logging.getLogger(__name__)


def authorizer_access_token_get(
    *, authorizer: Authorizer, margin: timedelta = ON_DEMAND_REFRESH_MARGIN
) -> TokenLease:
    """The stored token while more than `margin` is left (no query: the caller holds the row), else a refresh."""
    return token_get(_AuthorizerToken(authorizer), margin=margin)


def authorizer_access_token_refresh_ahead(
    *, authorizer: Authorizer, margin: timedelta = SCHEDULED_REFRESH_WINDOW
) -> TokenLease:
    """The beat's refresh: a new token when less than `margin` is left, else the stored one."""
    return token_refresh_ahead(_AuthorizerToken(authorizer), margin=margin)


def authorizer_access_token_refresh_after_failure(*, authorizer: Authorizer, failed_generation: int) -> TokenLease:
    """WeChat refused the token of `failed_generation`: a new one, unless another caller already replaced it."""
    return token_refresh_after_failure(_AuthorizerToken(authorizer), failed_generation=failed_generation)


def authorizer_access_token_force_refresh(*, authorizer: Authorizer) -> TokenLease:
    """A new token now, whatever is left of the current one (the admin's "refresh now").

    In direct mode this is a normal `stable_token` call: WeChat hands back the current token unless it is
    in its last 5 minutes, and nobody else's copy is cut off.
    """
    return token_force_refresh(_AuthorizerToken(authorizer))


def authorizer_access_token_replace_leaked(*, authorizer: Authorizer) -> TokenLease:
    """The token leaked: a new one, and the old one cut off where WeChat allows it (the admin's action).

    Direct mode: `stable_token` with `force_refresh=true`, which invalidates the previous token at once
    for every holder of the AppID (the merchant's own servers too) and is limited to 20 a day, 30 s
    apart. Component mode: api_authorizer_token issues a new token; WeChat offers no way to cut the old
    one short (it lapses with its own expiry).
    """
    return token_force_refresh(_AuthorizerToken(authorizer), invalidate_previous=True)


def authorizer_access_token_refresh(
    *,
    authorizer: Authorizer,
    failed_generation: int | None = None,
    force: bool = False,
    margin: timedelta = ON_DEMAND_REFRESH_MARGIN,
) -> TokenLease:
    """The older form with flags, kept for existing callers: one of the three modes above."""
    if force:
        return authorizer_access_token_force_refresh(authorizer=authorizer)
    if failed_generation is not None:
        return authorizer_access_token_refresh_after_failure(authorizer=authorizer, failed_generation=failed_generation)
    return authorizer_access_token_refresh_ahead(authorizer=authorizer, margin=margin)


@dataclass(frozen=True)
class _Fetched:
    access_token: str
    expires_in: int
    asked_at: datetime  # the expiry counts from before the call: never later than WeChat's
    refresh_token: str | None = None  # whatever refresh token WeChat gave (api_authorizer_token, 61023 recovery)
    func_info: list[int] | None = None  # from api_get_authorizer_info, when the 61023 recovery read it


class _AuthorizerToken:
    """The `TokenSource` of one authorizer's token; `authorizer` is the caller's instance."""

    kind = "authorizer"

    def __init__(self, authorizer: Authorizer) -> None:
        self.authorizer = authorizer

    def current(self) -> Authorizer:
        if self.authorizer.status != Authorizer.Status.AUTHORIZED:
            raise _unavailable(self.authorizer)
        return self.authorizer

    def reload(self) -> Authorizer:
        return self._checked(Authorizer.objects.get(pk=self.authorizer.pk))

    def lock(self) -> Authorizer:
        return self._checked(Authorizer.objects.select_for_update(no_key=True).get(pk=self.authorizer.pk))

    def _checked(self, row: Authorizer) -> Authorizer:
        if row.status != Authorizer.Status.AUTHORIZED:
            _copy_token_state(row, self.authorizer)  # the caller's copy shows why
            raise _unavailable(row)
        return row

    def seconds_left(self, row: Authorizer) -> float:
        return row.token_seconds_left()

    def generation(self, row: Authorizer) -> int:
        return row.token_generation

    def serve(self, row: Authorizer) -> TokenLease:
        _copy_token_state(row, self.authorizer)
        return TokenLease(row.get_access_token() or "", row.token_generation)

    def fetch(self, row: Authorizer, *, invalidate_previous: bool) -> _Fetched:
        asked_at = timezone.now()
        if row.mode == Authorizer.Mode.DIRECT:
            token = wechat_client().stable_token(
                appid=row.appid, secret=row.get_app_secret() or "", force_refresh=invalidate_previous
            )
            return _Fetched(token.access_token, token.expires_in, asked_at)
        return _refresh_component_authorizer(row, asked_at)

    def apply(self, row: Authorizer, fetched: _Fetched) -> None:
        now = timezone.now()
        row.set_access_token(fetched.access_token)
        row.access_token_expires_at = fetched.asked_at + timedelta(seconds=fetched.expires_in)
        row.token_generation += 1
        row.token_refreshed_at = now
        row.refresh_count += 1
        row.last_error = ""
        if fetched.refresh_token and fetched.refresh_token != row.get_refresh_token():
            # docs/wechat-protocol.md §7: always persist whatever refresh token comes back (the old one
            # has a short grace).
            row.set_refresh_token(fetched.refresh_token)
        if fetched.func_info:
            row.func_info = sorted(set(fetched.func_info))

    def refused(self, row: Authorizer, error: WeChatError) -> Exception | None:
        if not isinstance(error, RefreshTokenInvalid | NotAuthorized):
            return None
        reason = f"WeChat refused the refresh token ({error}); the merchant must authorize again"
        row.status = Authorizer.Status.REAUTHORIZATION_REQUIRED
        row.wipe_tokens()
        row.last_error, row.last_error_at = reason, timezone.now()
        row.save()
        authorizer_event_record(authorizer=row, event_type=REAUTHORIZATION_REQUIRED)  # webhook outbox
        _copy_token_state(row, self.authorizer)
        logger.warning("authorizer needs re-authorization", extra={"authorizer_appid": row.appid})
        transaction.on_commit(
            lambda: authorizer_status_changed.send(sender=Authorizer, authorizer_id=row.pk, status=row.status)
        )
        return ReauthorizationRequired(reason)

    def record_failure(self, error: WeChatError) -> None:
        Authorizer.objects.filter(pk=self.authorizer.pk).update(last_error=str(error)[:2000], last_error_at=timezone.now())
        logger.warning("authorizer token refresh failed: %s", error, extra={"authorizer_appid": self.authorizer.appid})

    def log_refreshed(self, row: Authorizer) -> None:
        logger.info("authorizer token refreshed", extra={"authorizer_appid": row.appid, "generation": row.token_generation})

    def log_extra(self) -> dict[str, str]:
        return {"authorizer_appid": self.authorizer.appid}


def _unavailable(authorizer: Authorizer) -> AuthorizerUnavailable:
    return AuthorizerUnavailable(f"authorizer {authorizer.appid} is {authorizer.status}")


def _copy_token_state(source: Authorizer, target: Authorizer) -> None:
    for field in (
        "access_token_ciphertext",
        "access_token_expires_at",
        "token_generation",
        "refresh_token_ciphertext",
        "token_refreshed_at",
        "refresh_count",
        "refresh_lease_owner",
        "refresh_lease_until",
        "status",
        "func_info",
    ):
        setattr(target, field, getattr(source, field))


def _refresh_component_authorizer(row: Authorizer, asked_at: datetime) -> _Fetched:
    """A new token from api_authorizer_token, with whatever refresh token came back; 61023 recovered once."""
    component = component_api()

    def refresh(refresh_token: str, func_info: list[int] | None = None) -> _Fetched:
        token = component.authorizer_token(authorizer_appid=row.appid, refresh_token=refresh_token)
        return _Fetched(token.access_token, token.expires_in, asked_at, token.refresh_token or refresh_token, func_info)

    stored = row.get_refresh_token()
    if stored:
        try:
            return refresh(stored)
        except RefreshTokenInvalid:
            logger.warning("refresh token rejected (61023); recovering it once", extra={"authorizer_appid": row.appid})
    # docs/wechat-protocol.md §7: 61023 -> fetch the current refresh token from api_get_authorizer_info
    # once, retry once. (A worker killed after WeChat rotated the refresh token, before it was stored,
    # leaves a stale one here: this is how the next refresh recovers, docs/architecture.md §3.4.)
    info = component.get_authorizer_info(row.appid)
    if not info.refresh_token or info.refresh_token == stored:
        raise RefreshTokenInvalid(61023, "no newer refresh token available from api_get_authorizer_info")
    return refresh(info.refresh_token, list(info.func_info) if info.func_info else None)
