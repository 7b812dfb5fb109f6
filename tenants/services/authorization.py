"""Onboarding: authorization links, the exactly-once auth-code exchange, and authorizer sync.

docs/architecture.md §3.3, docs/wechat-protocol.md §3, §5, §6, §8.
"""

from __future__ import annotations

import enum
import hashlib
import logging
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlencode

from django.conf import settings
from django.core import signing
from django.db import IntegrityError, transaction
from django.utils import timezone

from openplatform.component.api import component_api
from openplatform.component.config import component_config
from openplatform.wechat.client import AuthorizationInfo
from openplatform.wechat.errors import AuthCodeExpired, AuthCodeInvalid, WeChatError, error_for
from openplatform.wechat.links import mobile_authorization_url, pc_authorization_url
from openplatform.wechat.permissions import PERMISSION_SET_NAMES
from tenants.errors import AuthorizerBoundElsewhere, AuthorizerUnavailable, InvalidState, UnknownPermissionSet
from tenants.models import (
    AuthCodeExchange,
    AuthorizationStateUse,
    Authorizer,
    AuthorizerTransferRequest,
    Tenant,
)
from tenants.services.events import AUTHORIZED, REVOKED, authorizer_event_record
from tenants.signals import authorizer_status_changed

logger = logging.getLogger(__name__)

_STATE_SALT = "tenants.authorization-state"
#: The merchant has this long to finish authorizing (pre_auth_code itself lives 600-1800 s).
STATE_MAX_AGE = timedelta(hours=1)
#: An authorization code lives at most this long, whatever WeChat's `expires_in` says (docs/wechat-protocol.md §5).
CODE_MAX_LIFETIME = timedelta(hours=1)
#: How often a caller waiting for another caller's api_query_auth looks for its result.
CLAIM_POLL_SECONDS = 0.05


@dataclass(frozen=True)
class AuthorizationLink:
    url: str
    mobile_url: str
    expires_at: datetime


def authorization_state_make(*, tenant: Tenant) -> str:
    return signing.dumps({"tenant": tenant.pk}, salt=_STATE_SALT, compress=True)


def authorization_state_verify(*, state: str, auth_code: str | None = None) -> Tenant:
    """The active tenant a link's `state` names; InvalidState if forged, expired, or (with `auth_code`)
    already used to bind an account with another code: a link is single use, a reload of its redirect
    is not refused. Checked before WeChat is asked, so a used link costs no api_query_auth call."""
    try:
        payload = signing.loads(state, salt=_STATE_SALT, max_age=STATE_MAX_AGE)
    except signing.BadSignature as exc:  # includes SignatureExpired
        raise InvalidState("the authorization link is invalid or has expired; ask for a new one") from exc
    tenant = Tenant.objects.filter(pk=payload.get("tenant"), is_active=True).first()
    if tenant is None:
        raise InvalidState("the authorization link names no active merchant")
    if auth_code is not None:
        used = AuthorizationStateUse.objects.filter(state_sha256=_state_hash(state)).first()
        if used is not None and used.code_sha256 != _code_hash(auth_code):
            raise InvalidState("this authorization link has already been used; ask for a new one")
    return tenant


def authorization_link_create(
    *, tenant: Tenant, auth_type: int = 3, biz_appid: str = "", category_id_list: Sequence[int] = ()
) -> AuthorizationLink:
    """A fresh pre_auth_code and the PC and mobile authorization URLs for it (docs/wechat-protocol.md §5).

    `category_id_list`: the permission sets to ask for (e.g. [11] for uploads to an Official Account);
    empty asks for every set the platform has. Unknown ids are refused before WeChat is called.
    """
    category_id_list = authorization_categories_check(category_id_list)
    config = component_config()
    pre = component_api(config=config).pre_auth_code()
    redirect_uri = config.authorized_redirect_url + "?" + urlencode({"state": authorization_state_make(tenant=tenant)})
    common = {
        "component_appid": config.appid,
        "pre_auth_code": pre.pre_auth_code,
        "redirect_uri": redirect_uri,
        "auth_type": auth_type,
        "biz_appid": biz_appid or None,
        "category_id_list": category_id_list,
    }
    expires_in = min(pre.expires_in, int(STATE_MAX_AGE.total_seconds()))
    return AuthorizationLink(
        url=pc_authorization_url(mp_base=config.mp_base.rstrip("/"), **common),
        mobile_url=mobile_authorization_url(open_base=config.open_base.rstrip("/"), **common),
        expires_at=timezone.now() + timedelta(seconds=expires_in),
    )


def authorization_categories_check(category_id_list: Sequence[int]) -> list[int]:
    """The permission-set ids, deduplicated, each a set WeChat publishes; UnknownPermissionSet otherwise."""
    ids = list(dict.fromkeys(category_id_list))
    unknown = [i for i in ids if isinstance(i, bool) or not isinstance(i, int) or i not in PERMISSION_SET_NAMES]
    if unknown:
        raise UnknownPermissionSet(f"unknown permission-set ids: {unknown!r} (see GET /api/v1/authorizers/ "
                                   "for the sets accounts hold)")
    return ids


def _code_hash(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()


def _state_hash(state: str) -> str:
    return hashlib.sha256(state.encode()).hexdigest()


def auth_code_expiry(*, expires_in: object = None, start: datetime | None = None) -> datetime:
    """When a code WeChat says lives `expires_in` seconds (the redirect's parameter, or the event's
    AuthorizationCodeExpiredTime made relative) dies: at most CODE_MAX_LIFETIME after `start` (now)."""
    start = start or timezone.now()
    try:
        seconds = int(str(expires_in))
    except (TypeError, ValueError):
        seconds = int(CODE_MAX_LIFETIME.total_seconds())
    seconds = max(0, min(seconds, int(CODE_MAX_LIFETIME.total_seconds())))
    return start + timedelta(seconds=seconds)


class Outcome(enum.Enum):
    """What applying WeChat's answer to an authorization did (docs/architecture.md §3.3)."""

    #: Tokens stored; the account is (now) the caller's tenant's, or unbound when there is no tenant.
    STORED = "stored"
    #: Tokens stored for the tenant that owns the live binding; the caller's tenant gets a 409.
    BOUND_ELSEWHERE = "bound_elsewhere"
    #: The binding to another tenant is revoked: nothing stored for it, a transfer request for the
    #: operator instead; the caller's tenant gets a 409.
    TRANSFER_REQUESTED = "transfer_requested"
    #: No tenant asked (the event path) and the binding is revoked: nothing stored, nothing revived.
    HELD_BACK = "held_back"


@dataclass
class _StateUse:
    """The redirect's `state`, to be marked used (single use) once it binds an account."""

    state_digest: str
    code_digest: str
    #: A marker this caller inserted in the current transaction (deleted again if nothing was bound).
    created: AuthorizationStateUse | None = None


def _claim_seconds() -> float:
    """How long a claim on an exchange lasts: longer than any api_query_auth call, retries included (and
    a component token fetched first), so a live claimant is never overtaken."""
    per_call = float(settings.WECHAT_HTTP_TIMEOUT) * (int(settings.WECHAT_HTTP_MAX_RETRIES) + 1)
    return 2 * per_call + 5


def authorization_code_exchange(
    *,
    auth_code: str,
    tenant: Tenant | None = None,
    code_expires_at: datetime | None = None,
    state: str | None = None,
) -> Authorizer:
    """Exchange an auth_code exactly once, whichever of the redirect and the event comes first.

    Claim, commit, call, compare (docs/architecture.md §3.3): the first caller claims the exchange row
    and commits before calling api_query_auth, so no row lock is held while WeChat answers; a concurrent
    caller waits for the claimant's result (polling, no lock held) and reuses it. The result is written
    under the exchange row's lock, only if nobody completed it meanwhile.

    With `tenant` (the redirect) the account is bound to that tenant, unless it is bound to another:
    then `AuthorizerBoundElsewhere` (409) after the outcome is committed. A live binding keeps the
    fresh tokens (WeChat replaced the old refresh token); a revoked one stays revoked, nothing is stored
    for it, and a transfer request waits for an operator. Without `tenant` (the event) a revoked
    binding is never revived. `state` (the redirect's) becomes used once it binds an account.
    `code_expires_at`: when the code dies (at most an hour from now); past it WeChat is not asked.
    """
    digest = _code_hash(auth_code)
    now = timezone.now()
    expires_at = min(code_expires_at or auth_code_expiry(start=now), auth_code_expiry(start=now))
    state_use = _StateUse(_state_hash(state), digest) if (state and tenant is not None) else None
    exchange, claim = _exchange_claim(digest=digest, expires_at=expires_at, binding=tenant is not None)
    if claim is None:  # completed earlier (a reload, the other path)
        authorizer = exchange.authorizer
        if authorizer is None:  # exchanged long ago, and that authorizer has since been deleted
            raise AuthCodeInvalid(61009, "this authorization code was already used")
        if tenant is not None:
            authorizer = _bind_completed(authorizer=authorizer, tenant=tenant, state_use=state_use)
        return authorizer

    config = component_config()
    try:
        info = component_api(config=config).query_auth(auth_code)
    except AuthCodeInvalid as exc:  # 61009 / 61010: dead for good, remembered (one call, ever)
        _exchange_dead(digest=digest, error=exc)
        raise
    except BaseException:
        _exchange_release(digest=digest, claim=claim)  # another caller (a reload, the sweeper) may try
        raise
    authorizer, outcome, refused_state = _exchange_complete(
        digest=digest, info=info, component_appid=config.appid, tenant=tenant, state_use=state_use
    )
    if outcome is Outcome.STORED or outcome is Outcome.BOUND_ELSEWHERE:
        authorizer_sync_info_quietly(authorizer)
    if refused_state:
        raise InvalidState("this authorization link has already been used; ask for a new one")
    if outcome in (Outcome.BOUND_ELSEWHERE, Outcome.TRANSFER_REQUESTED):
        raise _bound_elsewhere(authorizer, transfer_requested=outcome is Outcome.TRANSFER_REQUESTED)
    return authorizer


def _bound_elsewhere(authorizer: Authorizer, *, transfer_requested: bool) -> AuthorizerBoundElsewhere:
    if transfer_requested:
        return AuthorizerBoundElsewhere(
            f"the WeChat account {authorizer.appid} is already connected to another merchant; the service "
            "provider has been asked to move it to you and will tell you when it is done"
        )
    return AuthorizerBoundElsewhere(
        f"the WeChat account {authorizer.appid} is already connected to another merchant; "
        "contact the service provider to move it"
    )


def _exchange_claim(*, digest: str, expires_at: datetime, binding: bool) -> tuple[AuthCodeExchange, str | None]:
    """The exchange row and this caller's claim on it (None: completed already, nothing to ask WeChat).

    Raises the remembered error of a dead code, or AuthCodeExpired past the code's lifetime (WeChat is
    not asked: an expired code costs no call). While another caller holds a live claim, waits for its
    result without holding any lock; a lapsed claim (its caller died) is taken over.
    """
    try:
        with transaction.atomic():
            AuthCodeExchange.objects.get_or_create(code_sha256=digest, defaults={"expires_at": expires_at})
    except IntegrityError:
        pass  # created concurrently; fine
    while True:
        now = timezone.now()
        failure: WeChatError | None = None
        with transaction.atomic():
            exchange = AuthCodeExchange.objects.select_for_update().get(code_sha256=digest)
            if exchange.expires_at is None or expires_at < exchange.expires_at:
                exchange.expires_at = expires_at  # the earliest word on the code's lifetime wins
                exchange.save(update_fields=["expires_at"])
            expired = exchange.expires_at <= now
            if exchange.dead_errcode is not None:
                # A dead code costs one api_query_auth call, ever (a reload, the event, the sweeper).
                failure = error_for(exchange.dead_errcode, exchange.error)
            elif exchange.completed_at is not None:
                if not (expired and binding):
                    return exchange, None
                # A replayed redirect past the code's lifetime binds nothing.
                failure = AuthCodeExpired(61010, "the authorization code has expired")
            elif expired:
                failure = AuthCodeExpired(61010, "the authorization code expired before it was exchanged "
                                                 "(not sent to WeChat)")
            elif exchange.claimed_until is None or exchange.claimed_until <= now:
                claim = secrets.token_hex(16)
                exchange.claimed_until = now + timedelta(seconds=_claim_seconds())
                exchange.claim_token = claim
                exchange.save(update_fields=["claimed_until", "claim_token"])
                return exchange, claim
        if failure is not None:
            raise failure
        time.sleep(CLAIM_POLL_SECONDS)  # another caller is asking WeChat: its answer is ours too


def _exchange_dead(*, digest: str, error: AuthCodeInvalid) -> None:
    with transaction.atomic():
        exchange = AuthCodeExchange.objects.select_for_update().get(code_sha256=digest)
        if exchange.completed_at is None:  # a success (by a caller that took over) always wins
            exchange.dead_errcode, exchange.error = error.errcode, (error.errmsg or "")[:500]
            exchange.claimed_until, exchange.claim_token = None, ""
            exchange.save(update_fields=["dead_errcode", "error", "claimed_until", "claim_token"])


def _exchange_release(*, digest: str, claim: str) -> None:
    AuthCodeExchange.objects.filter(code_sha256=digest, claim_token=claim, completed_at__isnull=True).update(
        claimed_until=None, claim_token=""
    )


def _exchange_complete(
    *, digest: str, info: AuthorizationInfo, component_appid: str, tenant: Tenant | None, state_use: _StateUse | None
) -> tuple[Authorizer, Outcome, bool]:
    """WeChat's answer written under the exchange row's lock: (authorizer, outcome, state refused)."""
    with transaction.atomic():
        exchange = AuthCodeExchange.objects.select_for_update().get(code_sha256=digest)
        if exchange.completed_at is not None and exchange.authorizer_id is not None:
            # A caller that took over a lapsed claim finished first; its outcome stands.
            authorizer = exchange.authorizer
        else:
            authorizer, outcome, refused = _grant_apply(
                info=info, component_appid=component_appid, tenant=tenant, state_use=state_use
            )
            exchange.authorizer = authorizer
            exchange.completed_at = timezone.now()
            exchange.dead_errcode, exchange.error = None, ""
            exchange.claimed_until, exchange.claim_token = None, ""
            exchange.save()
            return authorizer, outcome, refused
    # Outside the transaction: the completed exchange, as a reload would see it.
    if tenant is not None:
        authorizer = _bind_completed(authorizer=authorizer, tenant=tenant, state_use=state_use)
    return authorizer, Outcome.STORED, False


def _grant_apply(
    *, info: AuthorizationInfo, component_appid: str, tenant: Tenant | None, state_use: _StateUse | None
) -> tuple[Authorizer, Outcome, bool]:
    """Apply an authorization to the account's row (locked), by the rules of docs/architecture.md §3.3."""
    row, _ = Authorizer.objects.select_for_update().get_or_create(
        component_appid=component_appid, appid=info.authorizer_appid
    )
    refused = False
    if state_use is not None and tenant is not None and not _state_claim(state_use, tenant=tenant):
        refused, tenant = True, None  # the link bound another code already: store as the event would
    owner = row.tenant_id
    if owner is None or (tenant is not None and owner == tenant.pk):
        _grant_store(row, info)
        if tenant is not None:
            row.tenant = tenant
            authorizer_transfers_supersede(row, note=f"{tenant.slug} authorized the account again itself")
        row.save()
        outcome = Outcome.STORED
    elif tenant is None:
        if row.status == Authorizer.Status.REVOKED:
            logger.warning("authorization of an account whose binding is revoked: not revived",
                           extra={"authorizer_appid": row.appid})
            outcome = Outcome.HELD_BACK
        else:
            _grant_store(row, info)
            row.save()
            outcome = Outcome.STORED
    elif row.status != Authorizer.Status.REVOKED:
        # The live binding keeps working with the fresh tokens: WeChat replaced the refresh token.
        _grant_store(row, info)
        row.save()
        outcome = Outcome.BOUND_ELSEWHERE
    else:
        _transfer_request(row, to_tenant=tenant, info=info)
        outcome = Outcome.TRANSFER_REQUESTED
    if outcome is Outcome.STORED or outcome is Outcome.BOUND_ELSEWHERE:
        # The owning merchant's webhook (outbox, this transaction); nothing while no merchant has it.
        authorizer_event_record(authorizer=row, event_type=AUTHORIZED)
    if state_use is not None:
        _state_settle(state_use, bound=outcome is Outcome.STORED and tenant is not None, authorizer=row)
    logger.info("authorization exchanged", extra={"authorizer_appid": row.appid, "outcome": outcome.value})
    return row, outcome, refused


def _grant_store(row: Authorizer, info: AuthorizationInfo) -> None:
    now = timezone.now()
    row.mode = Authorizer.Mode.COMPONENT
    row.status = Authorizer.Status.AUTHORIZED
    row.func_info = sorted(set(info.func_info))
    row.set_refresh_token(info.authorizer_refresh_token)
    if info.authorizer_access_token:
        row.set_access_token(info.authorizer_access_token)
        row.access_token_expires_at = now + timedelta(seconds=info.expires_in)
        row.token_refreshed_at = now
    else:
        row.set_access_token(None)
        row.access_token_expires_at = None
    row.token_generation += 1
    row.authorized_at = now
    row.revoked_at = None
    row.last_error = ""


def _transfer_request(row: Authorizer, *, to_tenant: Tenant, info: AuthorizationInfo) -> AuthorizerTransferRequest:
    """Record (or renew) `to_tenant`'s request for an account whose binding to another tenant is revoked.

    The newest authorization's refresh token is the only one that works (docs/wechat-protocol.md §7):
    pending requests of other tenants, holding older ones, are superseded.
    """
    request = (
        AuthorizerTransferRequest.objects.select_for_update()
        .filter(authorizer=row, to_tenant=to_tenant, state=AuthorizerTransferRequest.State.PENDING)
        .first()
    ) or AuthorizerTransferRequest(authorizer=row, appid=row.appid, from_tenant_id=row.tenant_id, to_tenant=to_tenant)
    request.requested_at = timezone.now()
    request.func_info = sorted(set(info.func_info))
    request.set_refresh_token(info.authorizer_refresh_token)
    request.save()
    authorizer_transfers_supersede(row, note=f"{to_tenant.slug} authorized the account later", keep=request.pk)
    logger.warning("transfer requested for an account whose binding is revoked",
                   extra={"authorizer_appid": row.appid, "transfer_request_id": request.pk})
    return request


def authorizer_transfers_supersede(row: Authorizer, *, note: str, keep: int | None = None) -> int:
    pending = AuthorizerTransferRequest.objects.filter(authorizer=row, state=AuthorizerTransferRequest.State.PENDING)
    if keep is not None:
        pending = pending.exclude(pk=keep)
    return pending.update(
        state=AuthorizerTransferRequest.State.SUPERSEDED, refresh_token_ciphertext="", decided_at=timezone.now(),
        note=note[:2000],
    )


def _state_claim(state_use: _StateUse, *, tenant: Tenant) -> bool:
    """Take the state for this code (True), or find it bound another code already (False).

    The marker is inserted in the caller's transaction: a concurrent redirect with the same state waits
    on the unique index until this one commits (or deletes it again, `_state_settle`).
    """
    try:
        with transaction.atomic():
            state_use.created = AuthorizationStateUse.objects.create(
                state_sha256=state_use.state_digest, code_sha256=state_use.code_digest, tenant=tenant
            )
        return True
    except IntegrityError:
        used = AuthorizationStateUse.objects.filter(state_sha256=state_use.state_digest).first()
        return used is not None and used.code_sha256 == state_use.code_digest


def _state_settle(state_use: _StateUse, *, bound: bool, authorizer: Authorizer) -> None:
    """Keep the marker when the state bound an account; otherwise the link stays usable."""
    if state_use.created is None:
        return
    if bound:
        AuthorizationStateUse.objects.filter(pk=state_use.created.pk).update(authorizer=authorizer)
    else:
        state_use.created.delete()
    state_use.created = None


def _bind_completed(*, authorizer: Authorizer, tenant: Tenant, state_use: _StateUse | None) -> Authorizer:
    """A completed exchange seen by the redirect (a reload, or the event exchanged first): bind an
    unbound account to `tenant`; never move one bound to another tenant."""
    with transaction.atomic():
        row = Authorizer.objects.select_for_update().get(pk=authorizer.pk)
        if row.tenant_id is not None and row.tenant_id != tenant.pk:
            error = _bound_elsewhere(row, transfer_requested=AuthorizerTransferRequest.objects.filter(
                authorizer=row, to_tenant=tenant, state=AuthorizerTransferRequest.State.PENDING).exists())
        elif row.tenant_id is not None and row.status == Authorizer.Status.REVOKED:
            # Held back on the event path: that authorization was not applied.
            error = AuthorizerUnavailable(
                f"the WeChat account {row.appid} is disconnected; authorize it again from a new link"
            )
        elif state_use is not None and not _state_claim(state_use, tenant=tenant):
            error = InvalidState("this authorization link has already been used; ask for a new one")
        else:
            error = None
            if row.tenant_id is None:
                row.tenant = tenant
                row.save(update_fields=["tenant", "updated_at"])
                if row.status == Authorizer.Status.AUTHORIZED:  # the merchant's first news of it
                    authorizer_event_record(authorizer=row, event_type=AUTHORIZED)
            if state_use is not None:
                _state_settle(state_use, bound=True, authorizer=row)
    if error is not None:
        raise error
    return row


def authorizer_bind(*, authorizer: Authorizer, tenant: Tenant) -> Authorizer:
    """Bind an unbound account to `tenant` (AuthorizerBoundElsewhere if another tenant has it)."""
    return _bind_completed(authorizer=authorizer, tenant=tenant, state_use=None)


def authorizer_sync_info_quietly(authorizer: Authorizer) -> None:
    try:
        authorizer_sync_info(authorizer=authorizer)
    except Exception as exc:  # names are cosmetic; the authorization itself is stored
        logger.warning("api_get_authorizer_info failed after authorization: %s", exc,
                       extra={"authorizer_appid": authorizer.appid})


_SYNCED_FIELDS = ("nick_name", "user_name", "principal_name", "account_type", "func_info", "refresh_token_ciphertext",
                  "synced_at")


def authorizer_sync_info(*, authorizer: Authorizer) -> Authorizer:
    """Names, account type, permission sets and the current refresh token from api_get_authorizer_info.

    Written under the row lock, columns of its own only. The refresh token is a compare-and-swap
    (docs/wechat-protocol.md §7): it is replaced only if the stored one is still the one we had when we asked, so a
    refresh that rotated it meanwhile is not undone. `authorizer` is updated in place.
    """
    asked_with = authorizer.refresh_token_ciphertext
    info = component_api().get_authorizer_info(authorizer.appid)
    with transaction.atomic():
        row = Authorizer.objects.select_for_update(no_key=True).get(pk=authorizer.pk)
        row.nick_name = info.nick_name[:200]
        row.user_name = info.user_name[:64]
        row.principal_name = info.principal_name[:200]
        row.account_type = (
            Authorizer.AccountType.MINI_PROGRAM if info.account_type == "mini_program" else Authorizer.AccountType.OFFICIAL_ACCOUNT
        )
        if info.func_info:
            row.func_info = sorted(set(info.func_info))
        unchanged = row.refresh_token_ciphertext == asked_with
        if info.refresh_token and unchanged and info.refresh_token != row.get_refresh_token():
            row.set_refresh_token(info.refresh_token)
        row.synced_at = timezone.now()
        row.save(update_fields=[*_SYNCED_FIELDS, "updated_at"])
    for name in (*_SYNCED_FIELDS, "updated_at"):
        setattr(authorizer, name, getattr(row, name))
    return authorizer


def authorizer_revoke(*, authorizer: Authorizer, reason: str = "unauthorized") -> Authorizer:
    """Status `revoked`, tokens wiped; listeners (uploads) reject its queued work after commit."""
    with transaction.atomic():
        row = Authorizer.objects.select_for_update().get(pk=authorizer.pk)
        already_revoked = row.status == Authorizer.Status.REVOKED
        row.status = Authorizer.Status.REVOKED
        row.wipe_tokens()
        row.revoked_at = timezone.now()
        row.last_error = reason
        row.last_error_at = row.revoked_at
        row.save()
        if not already_revoked:
            authorizer_event_record(authorizer=row, event_type=REVOKED)
        transaction.on_commit(
            lambda: authorizer_status_changed.send(sender=Authorizer, authorizer_id=row.pk, status=row.status)
        )
    logger.info("authorizer revoked", extra={"authorizer_appid": row.appid})
    return row
