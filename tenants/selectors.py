"""Reads scoped to a tenant: a view cannot forget the tenant because it is in the signature."""

from __future__ import annotations

from django.db.models import QuerySet

from tenants.models import Authorizer, Tenant


def authorizer_list(*, tenant: Tenant) -> QuerySet[Authorizer]:
    return Authorizer.objects.filter(tenant=tenant).order_by("appid")


def authorizer_get(*, tenant: Tenant, appid: str) -> Authorizer | None:
    return Authorizer.objects.filter(tenant=tenant, appid=appid).first()
