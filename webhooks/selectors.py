"""Reads, scoped to a tenant by id (this app does not import tenants: callers pass `tenant.pk`)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from django.db.models import Count, Q, QuerySet

from webhooks.models import WebhookDelivery, WebhookEndpoint, WebhookEvent


def webhook_endpoint_list(*, tenant_id: int) -> QuerySet[WebhookEndpoint]:
    return WebhookEndpoint.objects.filter(tenant_id=tenant_id).order_by("-created_at", "pk")


def webhook_endpoint_get(*, tenant_id: int, endpoint_id: str | uuid.UUID) -> WebhookEndpoint | None:
    try:
        pk = uuid.UUID(str(endpoint_id))
    except ValueError:
        return None
    return WebhookEndpoint.objects.filter(tenant_id=tenant_id, pk=pk).first()


def webhook_event_list(*, tenant_id: int, type: str | None = None) -> QuerySet[WebhookEvent]:
    events = WebhookEvent.objects.filter(tenant_id=tenant_id)
    if type:
        events = events.filter(type=type)
    return events.order_by("-created_at", "-pk")


@dataclass(frozen=True)
class EndpointAttention:
    endpoint_id: str
    url: str
    tenant: str
    enabled: bool
    failed_deliveries: int
    detail: str


def webhook_endpoints_needing_attention(*, since: datetime, limit: int) -> tuple[list[EndpointAttention], bool]:
    """Disabled endpoints and endpoints with deliveries that failed since `since`, in one query.

    Returns (up to `limit` rows, whether there were more).
    """
    failed = Count("deliveries", filter=Q(deliveries__status=WebhookDelivery.Status.FAILED,
                                          deliveries__finished_at__gte=since))
    rows = list(
        WebhookEndpoint.objects.annotate(failed=failed)
        .filter(Q(enabled=False) | Q(failed__gt=0))
        .order_by("enabled", "-failed", "url")
        .values("pk", "url", "tenant__slug", "enabled", "disabled_reason", "failed")[: limit + 1]
    )
    items = [
        EndpointAttention(
            endpoint_id=str(row["pk"]), url=row["url"], tenant=row["tenant__slug"] or "", enabled=row["enabled"],
            failed_deliveries=row["failed"],
            detail=(f"disabled: {row['disabled_reason']}" if not row["enabled"] else "")
            + ("; " if not row["enabled"] and row["failed"] else "")
            + (f"{row['failed']} failed deliveries" if row["failed"] else ""),
        )
        for row in rows[:limit]
    ]
    return items, len(rows) > limit
