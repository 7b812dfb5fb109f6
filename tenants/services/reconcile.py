"""Scheduled work on authorizers: ahead-of-expiry refresh and reconciliation with WeChat's list."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta

from django.db.models import Q
from django.utils import timezone

from openplatform.component import component_config, wechat_client
from openplatform.services import component_access_token_get, with_component_token
from openplatform.tokens import SCHEDULED_REFRESH_WINDOW
from openplatform.wechat.errors import WeChatError
from tenants.errors import AuthorizerUnavailable
from tenants.models import Authorizer
from tenants.services.authorization import authorizer_revoke, authorizer_sync_info
from tenants.services.tokens import authorizer_access_token_refresh

logger = logging.getLogger(__name__)


def authorizer_ids_due_for_refresh(*, window: timedelta = SCHEDULED_REFRESH_WINDOW) -> list[int]:
    """Authorized accounts whose token expires within `window` (or that have none yet)."""
    deadline = timezone.now() + window
    return list(
        Authorizer.objects.filter(status=Authorizer.Status.AUTHORIZED)
        .filter(Q(access_token_expires_at__lt=deadline) | Q(access_token_expires_at__isnull=True))
        .order_by("access_token_expires_at")
        .values_list("pk", flat=True)
    )


@dataclass
class RefreshReport:
    refreshed: int = 0
    skipped: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)


def authorizers_refresh(*, authorizer_ids: Iterable[int], window: timedelta = SCHEDULED_REFRESH_WINDOW) -> RefreshReport:
    """Refresh each listed authorizer at most once (the lock holder re-checks, so a repeat is a no-op)."""
    report = RefreshReport()
    for authorizer in Authorizer.objects.filter(pk__in=list(authorizer_ids)):
        before = authorizer.token_generation
        try:
            lease = authorizer_access_token_refresh(authorizer=authorizer, margin=window)
        except (WeChatError, AuthorizerUnavailable) as exc:
            report.failed += 1
            report.errors.append(f"{authorizer.appid}: {exc}")
            continue
        if lease.generation != before:
            report.refreshed += 1
        else:
            report.skipped += 1
    return report


@dataclass
class ReconcileReport:
    seen: int = 0
    refresh_tokens_recovered: int = 0
    revoked: int = 0
    restored: int = 0
    discovered: int = 0


def authorizers_reconcile() -> ReconcileReport:
    """Compare our authorizers with api_get_authorizer_list (WECHAT.md §8).

    Recovers lost or changed refresh tokens, restores `reauthorization_required` accounts WeChat
    still lists, records accounts authorized while we missed the exchange (unbound), and revokes
    accounts WeChat no longer lists (their `unauthorized` event was missed).
    """
    config = component_config()
    client = wechat_client()
    component_access_token_get(config=config)
    items = with_component_token(
        lambda ctoken: list(client.iter_authorizer_list(component_access_token=ctoken, component_appid=config.appid))
    )
    report = ReconcileReport(seen=len(items))
    listed = {item.appid: item for item in items}
    ours = {a.appid: a for a in Authorizer.objects.filter(component_appid=config.appid, mode=Authorizer.Mode.COMPONENT)}
    for appid, item in listed.items():
        authorizer = ours.get(appid)
        if authorizer is None:
            authorizer = Authorizer(component_appid=config.appid, appid=appid, authorized_at=timezone.now())
            authorizer.set_refresh_token(item.refresh_token)
            authorizer.save()
            report.discovered += 1
            _sync_quietly(authorizer)
            continue
        changed = False
        if item.refresh_token and item.refresh_token != authorizer.get_refresh_token():
            authorizer.set_refresh_token(item.refresh_token)
            report.refresh_tokens_recovered += 1
            changed = True
        if authorizer.status == Authorizer.Status.REAUTHORIZATION_REQUIRED and item.refresh_token:
            authorizer.status = Authorizer.Status.AUTHORIZED
            authorizer.last_error = ""
            report.restored += 1
            changed = True
        if changed:
            authorizer.synced_at = timezone.now()
            authorizer.save()
    for appid, authorizer in ours.items():
        if appid not in listed and authorizer.status != Authorizer.Status.REVOKED:
            authorizer_revoke(authorizer=authorizer, reason="no longer in api_get_authorizer_list (revoked)")
            report.revoked += 1
    logger.info("authorizers reconciled", extra=vars(report))
    return report


def _sync_quietly(authorizer: Authorizer) -> None:
    try:
        authorizer_sync_info(authorizer=authorizer)
    except WeChatError as exc:
        logger.warning("api_get_authorizer_info failed: %s", exc, extra={"authorizer_appid": authorizer.appid})
