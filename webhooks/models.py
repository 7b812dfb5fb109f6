"""Webhook endpoints, the event outbox, and one delivery (with its attempts) per event and endpoint.

The tenant is referenced by name ("tenants.Tenant"): this app sits below tenants and uploads, which
write events here in the same transaction as their own state changes (an outbox).
"""

from __future__ import annotations

import uuid
from datetime import datetime

from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.utils import timezone

from openplatform.core.secrets import EncryptedSecretsMixin

EVENT_TYPES = (
    "upload.succeeded",
    "upload.failed",
    "upload.rejected",
    "authorizer.authorized",
    "authorizer.revoked",
    "authorizer.reauthorization_required",
)
#: Sent only by the admin's "send a test event" action, to one endpoint, whatever it subscribes to.
TEST_EVENT_TYPE = "webhook.test"
#: An endpoint subscribing to this receives every type above, including ones added later.
ALL_EVENTS = "*"


class WebhookEndpoint(EncryptedSecretsMixin, models.Model):
    """A merchant's URL for events. The signing secret is stored encrypted and shown once."""

    ENCRYPTED_FIELDS = ("secret_ciphertext", "previous_secret_ciphertext")

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE, related_name="webhook_endpoints")
    url = models.CharField(max_length=2000)
    #: Subscribed event types (or ["*"]).
    events = models.JSONField(default=list)
    description = models.CharField(max_length=200, blank=True, default="")
    enabled = models.BooleanField(default=True)
    secret_ciphertext = models.TextField(blank=True, default="")
    #: The secret before the last rotation, still signing (a second `v1=`) until it expires.
    previous_secret_ciphertext = models.TextField(blank=True, default="")
    previous_secret_expires_at = models.DateTimeField(null=True, blank=True)
    #: The first failed attempt since the last success; failing for the retry window disables it.
    failing_since = models.DateTimeField(null=True, blank=True)
    disabled_at = models.DateTimeField(null=True, blank=True)
    disabled_reason = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["tenant", "enabled"], name="webhook_endpoint_tenant_idx")]

    def __str__(self) -> str:
        return self.url

    def set_secret(self, raw: str) -> None:
        self._set_secret("secret_ciphertext", raw)

    def set_previous_secret(self, raw: str | None, *, expires_at: datetime | None) -> None:
        self._set_secret("previous_secret_ciphertext", raw)
        self.previous_secret_expires_at = expires_at if raw else None

    def signing_secrets(self, *, now: datetime | None = None) -> list[str]:
        """The current secret, then the previous one while it is still valid."""
        now = now or timezone.now()
        found = [self._get_secret("secret_ciphertext")]
        if self.previous_secret_ciphertext and self.previous_secret_expires_at and self.previous_secret_expires_at > now:
            found.append(self._get_secret("previous_secret_ciphertext"))
        return [s for s in found if s]

    def subscribes_to(self, event_type: str) -> bool:
        return event_type in (self.events or []) or ALL_EVENTS in (self.events or [])


class WebhookEvent(models.Model):
    """Something a merchant's server should learn about; written with the change that caused it."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # Indexed by webhook_event_tenant_newest, which leads with it.
    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE, related_name="webhook_events",
                               db_index=False)
    type = models.CharField(max_length=64)
    #: The object as the merchant API shows it (an upload, an authorizer).
    data = models.JSONField(default=dict, encoder=DjangoJSONEncoder)
    created_at = models.DateTimeField(default=timezone.now)
    #: When its deliveries (one per subscribed endpoint) were created; null: not yet (the sweeper's cue).
    dispatched_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["tenant", "-created_at"], name="webhook_event_tenant_newest"),
            models.Index(fields=["created_at"], name="webhook_event_created_idx"),
            models.Index(fields=["created_at"], condition=models.Q(dispatched_at__isnull=True),
                         name="webhook_event_undispatched"),
        ]

    def __str__(self) -> str:
        return f"{self.type} {self.id}"

    def payload(self) -> dict:
        """The event as delivered and as `GET /api/v1/webhook-events/` shows it."""
        return {
            "id": str(self.id),
            "type": self.type,
            "created": self.created_at.isoformat().replace("+00:00", "Z"),
            "data": self.data,
        }


class WebhookDelivery(models.Model):
    """One event to one endpoint: retried with backoff until a 2xx or the retry window ends."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"

    event = models.ForeignKey(WebhookEvent, on_delete=models.CASCADE, related_name="deliveries")
    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    #: Retries end this long after this (reset by "redeliver").
    window_started_at = models.DateTimeField(default=timezone.now)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    #: While a run sends it, the run owns it until then (two runs never send it at once).
    lease_until = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "webhook deliveries"
        constraints = [
            models.UniqueConstraint(fields=["event", "endpoint"], name="webhook_delivery_once_per_endpoint"),
        ]
        indexes = [
            models.Index(fields=["status", "next_attempt_at"], name="webhook_delivery_due_idx"),
            models.Index(fields=["endpoint", "status"], name="webhook_delivery_endpoint_idx"),
            models.Index(fields=["status", "finished_at"], name="webhook_delivery_finished_idx"),
        ]

    def __str__(self) -> str:
        return f"delivery {self.pk} of {self.event_id} ({self.status})"


class WebhookDeliveryAttempt(models.Model):
    """One POST (or one refusal to send it): what happened and what the receiver answered."""

    class Outcome(models.TextChoices):
        SUCCEEDED = "succeeded", "2xx"
        HTTP_ERROR = "http_error", "Not 2xx"
        TIMEOUT = "timeout", "No answer in time"
        NETWORK_ERROR = "network_error", "Connection failed"
        #: The URL resolved to an address webhooks may not reach; nothing was sent.
        REFUSED = "refused", "Refused (address not allowed)"

    delivery = models.ForeignKey(WebhookDelivery, on_delete=models.CASCADE, related_name="attempt_records")
    number = models.PositiveIntegerField()
    started_at = models.DateTimeField()
    duration_ms = models.FloatField()
    outcome = models.CharField(max_length=16, choices=Outcome.choices)
    response_status = models.PositiveIntegerField(null=True, blank=True)
    #: The first 1 KB of the answer, decoded leniently.
    response_body = models.TextField(blank=True, default="")
    error = models.TextField(blank=True, default="")
    #: The address connected to (after the checks), or refused.
    address = models.GenericIPAddressField(null=True, blank=True)

    class Meta:
        ordering = ["delivery", "number"]
        constraints = [
            models.UniqueConstraint(fields=["delivery", "number"], name="webhook_attempt_number_unique"),
        ]

    def __str__(self) -> str:
        return f"attempt {self.number} of delivery {self.delivery_id}: {self.outcome}"
