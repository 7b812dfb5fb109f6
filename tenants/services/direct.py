"""Direct mode: a merchant gives us its own AppID/AppSecret; tokens come from `stable_token`.

The same token service (single flight, compare-and-expire) serves these accounts.
"""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from openplatform.component.config import component_config
from tenants.models import Authorizer, Tenant
from tenants.services.events import AUTHORIZED, authorizer_event_record


def authorizer_create_direct(
    *, tenant: Tenant, appid: str, app_secret: str, func_info: list[int] | None = None,
    account_type: str = Authorizer.AccountType.OFFICIAL_ACCOUNT, nick_name: str = "",
) -> Authorizer:
    """Register (or update) a direct-mode account. `func_info` is what the account can call itself;
    an account's own token has every API its type allows, so by default we record set 11."""
    with transaction.atomic():
        authorizer, _ = Authorizer.objects.select_for_update().get_or_create(
            component_appid=component_config().appid or "direct", appid=appid,
            defaults={"tenant": tenant, "mode": Authorizer.Mode.DIRECT},
        )
        if authorizer.tenant_id not in (None, tenant.pk):
            from tenants.errors import AuthorizerBoundElsewhere

            raise AuthorizerBoundElsewhere(f"{appid} already belongs to another merchant")
        authorizer.tenant = tenant
        authorizer.mode = Authorizer.Mode.DIRECT
        authorizer.account_type = account_type
        authorizer.nick_name = nick_name or authorizer.nick_name
        authorizer.func_info = sorted(set(func_info if func_info is not None else [11]))
        authorizer.status = Authorizer.Status.AUTHORIZED
        authorizer.set_app_secret(app_secret)
        authorizer.set_access_token(None)
        authorizer.access_token_expires_at = None
        authorizer.authorized_at = authorizer.authorized_at or timezone.now()
        authorizer.revoked_at = None
        authorizer.save()
        authorizer_event_record(authorizer=authorizer, event_type=AUTHORIZED)
    return authorizer
