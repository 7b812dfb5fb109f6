"""Webhook endpoints: create (the secret is returned once), rotate the secret, delete, re-enable."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from webhooks.config import SECRET_OVERLAP, webhook_config
from webhooks.errors import WebhookRefused
from webhooks.guard import url_check
from webhooks.models import ALL_EVENTS, EVENT_TYPES, WebhookEndpoint
from webhooks.signing import secret_generate

#: Per tenant, as Stripe does: more is a configuration mistake, and each one multiplies deliveries.
MAX_ENDPOINTS_PER_TENANT = 16
MAX_URL_LENGTH = 2000


def webhook_events_validate(*, events) -> list[str]:
    """The subscribed types, de-duplicated in a stable order; WebhookRefused otherwise."""
    if not isinstance(events, list | tuple) or not events or not all(isinstance(e, str) for e in events):
        raise WebhookRefused("invalid_events", f"events must be a non-empty list of: {', '.join(EVENT_TYPES)} (or \"*\").")
    unknown = sorted({e for e in events if e not in EVENT_TYPES and e != ALL_EVENTS})
    if unknown:
        raise WebhookRefused("unknown_event_type", f"Unknown event type(s): {', '.join(unknown)[:300]}.")
    return list(dict.fromkeys(events))


def webhook_url_validate(*, url: str) -> str:
    """The URL as stored, after the same checks every delivery makes (they are made again each time)."""
    url = (url or "").strip()
    if not url or len(url) > MAX_URL_LENGTH:
        raise WebhookRefused("invalid_url", f"url must be an https:// URL of at most {MAX_URL_LENGTH} characters.")
    config = webhook_config()
    url_check(url, allowed=config.allowed_networks, allow_plain_http=config.allow_plain_http)
    return url


def webhook_endpoint_create(
    *, tenant_id: int, url: str, events, description: str = ""
) -> tuple[WebhookEndpoint, str]:
    """A new endpoint and its signing secret (returned here only; stored encrypted)."""
    url = webhook_url_validate(url=url)
    events = webhook_events_validate(events=events)
    if WebhookEndpoint.objects.filter(tenant_id=tenant_id).count() >= MAX_ENDPOINTS_PER_TENANT:
        raise WebhookRefused("too_many_endpoints", f"At most {MAX_ENDPOINTS_PER_TENANT} webhook endpoints per merchant.")
    secret = secret_generate()
    endpoint = WebhookEndpoint(tenant_id=tenant_id, url=url, events=events, description=(description or "")[:200])
    endpoint.set_secret(secret)
    endpoint.save(force_insert=True)
    return endpoint, secret


def webhook_endpoint_rotate_secret(*, endpoint: WebhookEndpoint) -> tuple[WebhookEndpoint, str]:
    """A new secret; the one it replaces keeps signing (a second `v1=`) for 24 hours.

    Rotating again within those 24 hours drops the oldest: two secrets at most are ever valid.
    """
    secret = secret_generate()
    with transaction.atomic():
        row = WebhookEndpoint.objects.select_for_update().get(pk=endpoint.pk)
        row.set_previous_secret(row._get_secret("secret_ciphertext"), expires_at=timezone.now() + SECRET_OVERLAP)
        row.set_secret(secret)
        row.save(update_fields=["secret_ciphertext", "previous_secret_ciphertext", "previous_secret_expires_at",
                                "updated_at"])
    return row, secret


def webhook_endpoint_delete(*, endpoint: WebhookEndpoint) -> None:
    """Gone with its deliveries; events stay (the catch-up API still lists them)."""
    endpoint.delete()


def webhook_endpoint_enable(*, endpoint: WebhookEndpoint) -> WebhookEndpoint:
    """Admin: turn a disabled endpoint back on. Deliveries failed while it was off are not resent
    (use "redeliver" on the ones wanted); new events are delivered from now on."""
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(
        enabled=True, failing_since=None, disabled_at=None, disabled_reason="", updated_at=timezone.now()
    )
    endpoint.refresh_from_db()
    return endpoint


def webhook_endpoint_disable(*, endpoint_id, reason: str) -> int:
    """Turn an endpoint off and fail its pending deliveries (they would only fail again). Caller's transaction."""
    from webhooks.models import WebhookDelivery

    now = timezone.now()
    changed = WebhookEndpoint.objects.filter(pk=endpoint_id, enabled=True).update(
        enabled=False, disabled_at=now, disabled_reason=reason[:2000], updated_at=now
    )
    if changed:
        WebhookDelivery.objects.filter(endpoint_id=endpoint_id, status=WebhookDelivery.Status.PENDING).update(
            status=WebhookDelivery.Status.FAILED, finished_at=now, next_attempt_at=None, lease_until=None,
            last_error=f"endpoint disabled: {reason}"[:2000],
        )
    return changed
