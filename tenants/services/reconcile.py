"""Scheduled work on authorizers: ahead-of-expiry refresh and reconciliation with WeChat's list."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta

from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from openplatform.component.api import component_api
from openplatform.component.config import component_config
from openplatform.core.tokens import SCHEDULED_REFRESH_WINDOW
from openplatform.wechat.errors import NotAuthorized, WeChatError
from tenants.errors import AuthorizerUnavailable
from tenants.models import Authorizer
from tenants.services.authorization import authorizer_revoke, authorizer_sync_info
from tenants.services.events import AUTHORIZED, authorizer_event_record
from tenants.services.tokens import authorizer_access_token_refresh_ahead

logger = logging.getLogger(__name__)


def authorizer_ids_due_for_refresh(*, window: timedelta = SCHEDULED_REFRESH_WINDOW) -> list[int]:
    """Authorized accounts whose token expires within `window` (or that have none yet)."""
    deadline = timezone.now() + window
    return list(
        Authorizer.objects.authorized()
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
            lease = authorizer_access_token_refresh_ahead(authorizer=authorizer, margin=window)
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
    #: Not in the list, but api_get_authorizer_info says still authorized (list paging raced a change).
    kept: int = 0


def authorizers_reconcile() -> ReconcileReport:
    """Compare our authorizers with api_get_authorizer_list (docs/wechat-protocol.md §8).

    Recovers lost or changed refresh tokens, restores `reauthorization_required` accounts WeChat
    still lists, records accounts authorized while we missed the exchange (unbound), and revokes
    accounts WeChat no longer lists (their `unauthorized` event was missed) once
    api_get_authorizer_info confirms it (61003): the list is paged by offset, so a revocation
    elsewhere while we page shifts an account out of our view, and an account authorized after the
    list was read is not in it either.

    Every change is written under the row lock and touches only its own columns, so a token a worker
    refreshes meanwhile is never overwritten with the copy read here.
    """
    config = component_config()
    items = component_api(config=config).all_authorizers()
    report = ReconcileReport(seen=len(items))
    listed = {item.appid: item for item in items}
    ours = {
        a.appid: a
        for a in Authorizer.objects.filter(component_appid=config.appid, mode=Authorizer.Mode.COMPONENT).only(
            "pk", "appid", "status", "refresh_token_ciphertext"
        )
    }
    for appid, item in listed.items():
        authorizer = ours.get(appid)
        if authorizer is None:
            if _discover(component_appid=config.appid, item=item):
                report.discovered += 1
            continue
        if not _needs_update(authorizer, item):  # the common case: no lock, no write
            continue
        recovered, restored = _apply_listed(pk=authorizer.pk, item=item)
        report.refresh_tokens_recovered += recovered
        report.restored += restored
    for appid, authorizer in ours.items():
        if appid in listed:
            continue
        outcome = _confirm_unlisted(pk=authorizer.pk)
        if outcome == "revoked":
            report.revoked += 1
        elif outcome == "kept":
            report.kept += 1
    logger.info("authorizers reconciled", extra=vars(report))
    return report


def _discover(*, component_appid: str, item) -> bool:
    """Record an account WeChat lists and we do not know (its code was never exchanged); unbound."""
    authorizer = Authorizer(component_appid=component_appid, appid=item.appid, authorized_at=timezone.now())
    authorizer.set_refresh_token(item.refresh_token)
    try:
        with transaction.atomic():
            authorizer.save()
    except IntegrityError:  # exchanged meanwhile (redirect or event): that path has the full record
        return False
    _sync_quietly(authorizer)
    return True


def _needs_update(authorizer: Authorizer, item) -> bool:
    # A revoked binding listed again was authorized again: the redirect of the link used decides who
    # gets it (a transfer request, docs/architecture.md §3.3); nothing is stored for the old tenant here.
    if not item.refresh_token or authorizer.status == Authorizer.Status.REVOKED:
        return False
    return (
        authorizer.status == Authorizer.Status.REAUTHORIZATION_REQUIRED
        or item.refresh_token != authorizer.get_refresh_token()
    )


def _apply_listed(*, pk: int, item) -> tuple[int, int]:
    """Re-checked under the row lock: only what is still different is written."""
    with transaction.atomic():
        row = Authorizer.objects.select_for_update(no_key=True).get(pk=pk)
        fields: list[str] = []
        recovered = restored = 0
        if item.refresh_token and item.refresh_token != row.get_refresh_token():
            row.set_refresh_token(item.refresh_token)
            fields.append("refresh_token_ciphertext")
            recovered = 1
        if row.status == Authorizer.Status.REAUTHORIZATION_REQUIRED and item.refresh_token:
            row.status = Authorizer.Status.AUTHORIZED
            row.last_error = ""
            fields += ["status", "last_error"]
            restored = 1
        if fields:
            row.synced_at = timezone.now()
            row.save(update_fields=[*fields, "synced_at", "updated_at"])
        if restored:
            authorizer_event_record(authorizer=row, event_type=AUTHORIZED)
    return recovered, restored


def _confirm_unlisted(*, pk: int) -> str:
    """"revoked", "kept" or "skipped" for an account missing from the list."""
    authorizer = Authorizer.objects.filter(pk=pk).first()
    if authorizer is None or authorizer.status == Authorizer.Status.REVOKED:
        return "skipped"
    try:
        authorizer_sync_info(authorizer=authorizer)
    except NotAuthorized:
        authorizer_revoke(authorizer=authorizer, reason="no longer authorized (missing from api_get_authorizer_list, 61003)")
        return "revoked"
    except WeChatError as exc:  # cannot tell now; the next run decides
        logger.warning("could not confirm an unlisted authorizer: %s", exc, extra={"authorizer_appid": authorizer.appid})
        return "skipped"
    return "kept"


def _sync_quietly(authorizer: Authorizer) -> None:
    try:
        authorizer_sync_info(authorizer=authorizer)
    except WeChatError as exc:
        logger.warning("api_get_authorizer_info failed: %s", exc, extra={"authorizer_appid": authorizer.appid})
