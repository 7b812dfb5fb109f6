from __future__ import annotations

from tenants.models import Tenant, TenantAPIKey


def api_key_create(*, tenant: Tenant, name: str = "default") -> tuple[TenantAPIKey, str]:
    """A new API key for `tenant`; the raw key is returned once and only its hash is stored."""
    return TenantAPIKey.objects.create_key(name=name[:50], tenant=tenant)


def api_key_revoke(*, api_key: TenantAPIKey) -> TenantAPIKey:
    api_key.revoked = True
    api_key.save(update_fields=["revoked"])
    return api_key
