"""Onboarding: authorization links, the exactly-once auth-code exchange, and authorizer sync.

docs/architecture.md §3.3, docs/wechat-protocol.md §3, §5, §6, §8.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlencode

from django.core import signing
from django.db import IntegrityError, transaction
from django.utils import timezone

from openplatform.component.api import component_api
from openplatform.component.config import component_config
from openplatform.wechat.client import AuthorizationInfo
from openplatform.wechat.errors import AuthCodeInvalid, error_for
from openplatform.wechat.links import mobile_authorization_url, pc_authorization_url
from openplatform.wechat.permissions import PERMISSION_SET_NAMES
from tenants.errors import AuthorizerBoundElsewhere, InvalidState, UnknownPermissionSet
from tenants.models import AuthCodeExchange, Authorizer, Tenant
from tenants.services.events import AUTHORIZED, REVOKED, authorizer_event_record
from tenants.signals import authorizer_status_changed

logger = logging.getLogger(__name__)

_STATE_SALT = "tenants.authorization-state"
#: The merchant has this long to finish authorizing (pre_auth_code itself lives 600-1800 s).
STATE_MAX_AGE = timedelta(hours=1)


@dataclass(frozen=True)
class AuthorizationLink:
    url: str
    mobile_url: str
    expires_at: datetime


def authorization_state_make(*, tenant: Tenant) -> str:
    return signing.dumps({"tenant": tenant.pk}, salt=_STATE_SALT, compress=True)


def authorization_state_verify(*, state: str) -> Tenant:
    try:
        payload = signing.loads(state, salt=_STATE_SALT, max_age=STATE_MAX_AGE)
    except signing.BadSignature as exc:  # includes SignatureExpired
        raise InvalidState("the authorization link is invalid or has expired; ask for a new one") from exc
    tenant = Tenant.objects.filter(pk=payload.get("tenant"), is_active=True).first()
    if tenant is None:
        raise InvalidState("the authorization link names no active merchant")
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


def authorization_code_exchange(*, auth_code: str, tenant: Tenant | None = None) -> Authorizer:
    """Exchange an auth_code exactly once, whichever of the redirect and the event comes first.

    The first caller creates the exchange row and holds its lock while calling api_query_auth; a
    concurrent caller waits on the lock, then finds the exchange completed and reuses its result.
    With `tenant` (the redirect), the authorizer is bound to that tenant unless bound to another.
    """
    digest = _code_hash(auth_code)
    try:
        with transaction.atomic():
            AuthCodeExchange.objects.get_or_create(code_sha256=digest)
    except IntegrityError:
        pass  # created concurrently; fine
    dead: AuthCodeInvalid | None = None
    with transaction.atomic():
        exchange = AuthCodeExchange.objects.select_for_update().get(code_sha256=digest)
        if exchange.dead_errcode is not None:
            # A dead code costs one api_query_auth call, ever (a reload, the event, the sweeper).
            raise error_for(exchange.dead_errcode, exchange.error)
        if exchange.completed_at is None:
            config = component_config()
            try:
                info = component_api(config=config).query_auth(auth_code)
            except AuthCodeInvalid as exc:  # 61009 / 61010: committed below, then raised
                exchange.dead_errcode, exchange.error = exc.errcode, (exc.errmsg or "")[:500]
                exchange.save(update_fields=["dead_errcode", "error"])
                dead, authorizer = exc, None
            else:
                authorizer = _authorizer_upsert_from_authorization(info=info, component_appid=config.appid)
                exchange.authorizer = authorizer
                exchange.completed_at = timezone.now()
                exchange.save()
        else:
            authorizer = exchange.authorizer
    if dead is not None:
        raise dead
    if authorizer is None:  # exchanged long ago, and that authorizer has since been deleted
        raise AuthCodeInvalid(61009, "this authorization code was already used")
    if tenant is not None:
        authorizer = authorizer_bind(authorizer=authorizer, tenant=tenant)
    return authorizer


def _authorizer_upsert_from_authorization(*, info: AuthorizationInfo, component_appid: str) -> Authorizer:
    authorizer, _ = Authorizer.objects.select_for_update().get_or_create(
        component_appid=component_appid, appid=info.authorizer_appid
    )
    now = timezone.now()
    authorizer.mode = Authorizer.Mode.COMPONENT
    authorizer.status = Authorizer.Status.AUTHORIZED
    authorizer.func_info = sorted(set(info.func_info))
    authorizer.set_refresh_token(info.authorizer_refresh_token)
    if info.authorizer_access_token:
        authorizer.set_access_token(info.authorizer_access_token)
        authorizer.access_token_expires_at = now + timedelta(seconds=info.expires_in)
        authorizer.token_refreshed_at = now
    else:
        authorizer.set_access_token(None)
        authorizer.access_token_expires_at = None
    authorizer.token_generation += 1
    authorizer.authorized_at = now
    authorizer.revoked_at = None
    authorizer.last_error = ""
    authorizer.save()
    authorizer_event_record(authorizer=authorizer, event_type=AUTHORIZED)  # only once bound to a merchant
    logger.info("authorization exchanged", extra={"authorizer_appid": authorizer.appid})
    try:
        authorizer_sync_info(authorizer=authorizer)
    except Exception as exc:  # names are cosmetic; the authorization itself is stored
        logger.warning("api_get_authorizer_info failed after authorization: %s", exc,
                       extra={"authorizer_appid": authorizer.appid})
    return authorizer


def authorizer_bind(*, authorizer: Authorizer, tenant: Tenant) -> Authorizer:
    with transaction.atomic():
        row = Authorizer.objects.select_for_update().get(pk=authorizer.pk)
        if row.tenant_id is not None and row.tenant_id != tenant.pk:
            raise AuthorizerBoundElsewhere(
                f"the WeChat account {row.appid} is already connected to another merchant; "
                "contact the service provider to move it"
            )
        if row.tenant_id is None:
            row.tenant = tenant
            row.save(update_fields=["tenant", "updated_at"])
            if row.status == Authorizer.Status.AUTHORIZED:  # the merchant's first news of it
                authorizer_event_record(authorizer=row, event_type=AUTHORIZED)
    return row


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


def authorizer_revoke_by_appid(*, component_appid: str, appid: str, reason: str = "unauthorized") -> Authorizer | None:
    authorizer = Authorizer.objects.filter(component_appid=component_appid, appid=appid).first()
    if authorizer is None:
        return None
    return authorizer_revoke(authorizer=authorizer, reason=reason)
