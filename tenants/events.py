"""Authorization events applied to accounts: what a push to the events URL does to an authorizer.

`component_push_receive` runs in the view's request (tenants/views_wechat.py): the push is stored
(openplatform/component/events.py), then `authorized`/`updateauthorized` enqueue the code exchange
and `unauthorized` revokes the account in the same transaction. `component_event_process` is the
exchange (task `tenants.process_component_event`); `component_events_sweep` re-enqueues what was
stored but not processed (task `tenants.sweep_component_events`).
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from openplatform.component.config import component_config
from openplatform.component.events import AUTHORIZATION_GRANTED, REVOKED, component_push_store
from openplatform.component.models import ComponentEvent
from openplatform.core.queueing import enqueue_on_commit
from openplatform.wechat.errors import AuthCodeInvalid, WeChatError
from tenants.models import AuthorizationStateUse, Authorizer
from tenants.services.authorization import STATE_MAX_AGE, authorization_code_exchange, authorizer_revoke

logger = logging.getLogger(__name__)

#: An auth code lives an hour (AuthorizationCodeExpiredTime, docs/wechat-protocol.md §3); margin for
#: clock skew. Events stored with their code's expiry are closed at that expiry instead.
AUTH_CODE_LIFETIME = timedelta(hours=2)
#: An event younger than this may still be in the queue: the sweeper leaves it alone.
SWEEP_GRACE = timedelta(minutes=2)
SWEEP_BATCH = 500


def component_push_receive(*, fields: dict[str, str]) -> None:
    """Store a verified push and act on it. Raises `PushRefused` (nothing stored) for a malformed one."""
    from tenants.tasks import process_component_event  # the task module imports this one

    config = component_config()
    with transaction.atomic():
        event = component_push_store(config=config, fields=fields)
        if event is None:  # a ticket: stored, nothing else to do
            return
        if event.info_type in AUTHORIZATION_GRANTED:
            enqueue_on_commit(process_component_event, event.pk)
        elif event.info_type == REVOKED:
            _revoke_unless_superseded(event=event)
            event.processed_at = event.received_at
            event.save(update_fields=["processed_at", "error"])
        else:
            logger.info("unhandled InfoType acknowledged", extra={"info_type": fields.get("InfoType", "")[:64]})


def component_event_process(*, event_id: int, may_retry: bool = False) -> None:
    """Exchange the auth code of an authorized/updateauthorized event (idempotent).

    The event is final once the code is exchanged, WeChat calls the code dead (61009), or its lifetime
    is over (AuthorizationCodeExpiredTime: then WeChat is not asked). Any other failure (no ticket yet,
    WeChat unreachable, ...) keeps the code and records the error, so `component_events_sweep` tries
    again until the code itself expires: losing it would lose the authorization (docs/wechat-protocol.md
    §8: an account whose code was never exchanged may have no refresh token). With `may_retry`, a
    retryable error is raised instead (nothing recorded), for the task to retry soon.

    An event older (CreateTime) than one already applied to its account is closed unapplied: a replayed
    or delayed push never undoes a newer one. An account whose binding to a tenant is revoked is not
    revived by an event (there is no tenant to
    decide for): its code is left to the merchant's redirect, which knows which link was used
    (docs/architecture.md §3.3). No lock is held while WeChat is asked: the exchange claims the code
    itself, and the event row is written afterwards only if still unprocessed.
    """
    event = ComponentEvent.objects.filter(pk=event_id).first()
    if event is None or event.processed_at is not None:
        return
    code = event.get_auth_code()
    error = ""
    account = _event_account(event) if code else None
    try:
        if _superseded(event, account):  # closed below, its code wiped, never exchanged
            error = _superseded_message(event, account)
            logger.warning("authorization event older than one already applied: not applied",
                           extra={"event_id": event.pk, "authorizer_appid": event.authorizer_appid})
        elif _binding_revoked(account):
            error = (
                "not exchanged: the account's binding to its merchant is revoked, and an authorization event "
                "alone never revives it; the redirect of the link the merchant used decides"
            )
            logger.warning("authorization event for an account whose binding is revoked: left to the redirect",
                           extra={"authorizer_appid": event.authorizer_appid, "event_id": event.pk})
        elif code:
            authorizer = authorization_code_exchange(auth_code=code, code_expires_at=event.auth_code_expires_at)
            _event_applied(authorizer_id=authorizer.pk, event=event)
    except AuthCodeInvalid as exc:  # 61009 / 61010: final; the merchant must authorize again
        error = f"the authorization code is dead ({exc}): the merchant must authorize again from a new link"
    except WeChatError as exc:
        if exc.retryable and may_retry:
            raise
        ComponentEvent.objects.filter(pk=event.pk, processed_at__isnull=True).update(error=str(exc)[:2000])
        logger.warning("authorization event not processed yet: %s", exc, extra={"event_id": event.pk})
        return
    with transaction.atomic():
        event = ComponentEvent.objects.select_for_update().filter(pk=event_id, processed_at__isnull=True).first()
        if event is None:  # another delivery finished it meanwhile
            return
        event.error = error[:2000]
        event.processed_at = timezone.now()
        event.set_auth_code(None)
        event.save()


def _event_account(event: ComponentEvent) -> Authorizer | None:
    """The account the event is about, if we have it (one query for both checks below)."""
    return Authorizer.objects.filter(component_appid=event.component_appid, appid=event.authorizer_appid).first()


def _binding_revoked(authorizer: Authorizer | None) -> bool:
    """An account bound to a merchant, then revoked: an event alone never revives it."""
    return authorizer is not None and authorizer.tenant_id is not None and authorizer.status == Authorizer.Status.REVOKED


def _superseded(event: ComponentEvent, authorizer: Authorizer | None) -> bool:
    """Whether an authorization event newer than `event` was already applied to its account."""
    last = authorizer.last_event_created_at if authorizer is not None else None
    return last is not None and event.pushed_at is not None and event.pushed_at < last


def _superseded_message(event: ComponentEvent, authorizer: Authorizer) -> str:
    return (f"not applied: CreateTime {event.pushed_at:%Y-%m-%d %H:%M:%S} is older than the last authorization "
            f"event applied to this account ({authorizer.last_event_created_at:%Y-%m-%d %H:%M:%S})")


def _event_applied(*, authorizer_id: int, event: ComponentEvent) -> None:
    """Record the event's CreateTime on its account, unless a newer one is already there (a compare)."""
    if event.pushed_at is None:
        return
    Authorizer.objects.filter(pk=authorizer_id).filter(
        Q(last_event_created_at__isnull=True) | Q(last_event_created_at__lt=event.pushed_at)
    ).update(last_event_created_at=event.pushed_at)


def _revoke_unless_superseded(*, event: ComponentEvent) -> None:
    """`unauthorized`: revoke the account, unless a newer authorization event was applied to it."""
    authorizer = Authorizer.objects.select_for_update().filter(
        component_appid=event.component_appid, appid=event.authorizer_appid
    ).first()
    if authorizer is None:
        return  # an account we never stored: nothing to revoke
    if _superseded(event, authorizer):
        event.error = _superseded_message(event, authorizer)
        logger.warning("unauthorized event older than the account's last authorization event: not applied",
                       extra={"event_id": event.pk, "authorizer_appid": event.authorizer_appid})
        return
    authorizer_revoke(authorizer=authorizer)
    _event_applied(authorizer_id=authorizer.pk, event=event)


def component_events_sweep() -> int:
    """Re-enqueue authorization events stored but not processed yet (broker down, no ticket yet, WeChat
    unreachable); returns how many. Past the code's lifetime they are closed instead: the code is dead."""
    from tenants.tasks import process_component_event  # the task module imports this one

    now = timezone.now()
    expired = ComponentEvent.objects.awaiting_exchange(received_before=now).filter(
        Q(received_at__lt=now - AUTH_CODE_LIFETIME) | Q(auth_code_expires_at__lte=now)
    )
    closed = expired.update(
        processed_at=now,
        auth_code_ciphertext="",
        error="the authorization code expired before it could be exchanged; reconciliation will find the account",
    )
    if closed:
        logger.error("%d authorization event(s) expired unprocessed", closed)
    ids = list(
        ComponentEvent.objects.awaiting_exchange(received_before=now - SWEEP_GRACE)
        .values_list("pk", flat=True)[:SWEEP_BATCH]
    )
    for pk in ids:
        process_component_event.delay(pk)
    # Used-state markers outlive their state's signature by a margin, then go (single use is moot).
    AuthorizationStateUse.objects.filter(used_at__lt=now - STATE_MAX_AGE - SWEEP_GRACE).delete()
    return len(ids)
