from __future__ import annotations

from django.db.models import QuerySet

from tenants.models import Tenant
from uploads.models import Upload


def upload_list(*, tenant: Tenant, status: str | None = None, authorizer_appid: str | None = None) -> QuerySet[Upload]:
    qs = Upload.objects.filter(tenant=tenant).select_related("authorizer").order_by("-created_at", "-pk")
    if status:
        qs = qs.filter(status=status)
    if authorizer_appid:
        qs = qs.filter(authorizer__appid=authorizer_appid)
    return qs


def upload_get(*, tenant: Tenant, upload_id) -> Upload | None:
    return Upload.objects.select_related("authorizer").filter(tenant=tenant, pk=upload_id).first()
