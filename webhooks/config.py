"""Webhook settings, read once per use into one validated object (never `settings.WEBHOOK_*` elsewhere)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: After a rotation the previous signing secret stays valid this long (both are sent as `v1=`).
SECRET_OVERLAP = timedelta(hours=24)
#: What is kept of a receiver's answer per attempt.
RESPONSE_BODY_LIMIT = 1024


@dataclass(frozen=True)
class WebhookConfig:
    #: Networks a webhook URL may resolve to although they are loopback/private; plain http is fine there.
    allowed_networks: tuple[IPNetwork, ...]
    #: DEBUG: plain http:// is accepted for any host (the address checks still apply).
    allow_plain_http: bool
    #: A receiver must answer 2xx within this many seconds.
    timeout: float
    retry_base: float
    retry_max: float
    #: Retries go on this long after the first attempt; an endpoint failing this long is disabled.
    retry_window: timedelta
    event_retention: timedelta


def parse_networks(values) -> tuple[IPNetwork, ...]:
    networks = []
    for value in values:
        value = str(value).strip()
        if not value:
            continue
        try:
            networks.append(ipaddress.ip_network(value, strict=False))
        except ValueError as exc:
            raise ImproperlyConfigured(f"WEBHOOK_ALLOWED_NETWORKS: {value!r} is not a CIDR ({exc})") from exc
    return tuple(networks)


def webhook_config() -> WebhookConfig:
    return WebhookConfig(
        allowed_networks=parse_networks(settings.WEBHOOK_ALLOWED_NETWORKS),
        allow_plain_http=bool(settings.DEBUG),
        timeout=float(settings.WEBHOOK_TIMEOUT_SECONDS),
        retry_base=float(settings.WEBHOOK_RETRY_BASE_SECONDS),
        retry_max=float(settings.WEBHOOK_RETRY_MAX_SECONDS),
        retry_window=timedelta(seconds=float(settings.WEBHOOK_RETRY_WINDOW_SECONDS)),
        event_retention=timedelta(days=float(settings.WEBHOOK_EVENT_RETENTION_DAYS)),
    )
