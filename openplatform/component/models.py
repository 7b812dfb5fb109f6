"""The component's own state: verify tickets and the component access token."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db import models
from django.utils import timezone

from openplatform.core.secrets import EncryptedSecretsMixin

#: WeChat: the ticket stays valid for 12 hours; a new one is pushed every 10 minutes.
TICKET_LIFETIME = timedelta(hours=12)
#: A newest ticket older than this means pushes have stopped (three missed in a row): the watchdog
#: logs an error, /readyz reports "degraded", the dashboard and the metrics' help text flag it.
TICKET_STALE_AFTER = timedelta(minutes=30)


class ComponentVerifyTicket(EncryptedSecretsMixin, models.Model):
    """Every ticket pushed to us (history kept for a while; the newest is used)."""

    ENCRYPTED_FIELDS = ("ticket_ciphertext",)

    component_appid = models.CharField(max_length=64, db_index=True)
    ticket_ciphertext = models.TextField()
    #: CreateTime of the push (WeChat's clock).
    pushed_at = models.DateTimeField()
    received_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [models.Index(fields=["component_appid", "-received_at"], name="ticket_newest_idx")]
        ordering = ["-received_at"]

    def __str__(self) -> str:
        return f"ticket for {self.component_appid} received {self.received_at:%Y-%m-%d %H:%M:%S}"

    def set_ticket(self, raw: str) -> None:
        self._set_secret("ticket_ciphertext", raw)

    def get_ticket(self) -> str | None:
        return self._get_secret("ticket_ciphertext")

    @property
    def is_valid(self) -> bool:
        return self.received_at > timezone.now() - TICKET_LIFETIME


class ComponentAccessToken(EncryptedSecretsMixin, models.Model):
    """One row per component appid; the row lock serializes refreshes across processes."""

    ENCRYPTED_FIELDS = ("access_token_ciphertext",)

    component_appid = models.CharField(max_length=64, unique=True)
    access_token_ciphertext = models.TextField(blank=True, default="")
    expires_at = models.DateTimeField(null=True, blank=True)
    #: Incremented on every refresh; lets a caller expire only the token that failed.
    generation = models.PositiveIntegerField(default=0)
    refreshed_at = models.DateTimeField(null=True, blank=True)
    refresh_count = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True, default="")
    last_error_at = models.DateTimeField(null=True, blank=True)
    #: The refresh lease (openplatform/core/tokens.py): who is asking WeChat for a new token, and until
    #: when others leave it to them. Empty/None: nobody.
    refresh_lease_owner = models.CharField(max_length=80, blank=True, default="")
    refresh_lease_until = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"component token for {self.component_appid}"

    def set_access_token(self, raw: str | None) -> None:
        self._set_secret("access_token_ciphertext", raw)

    def get_access_token(self) -> str | None:
        return self._get_secret("access_token_ciphertext")

    def seconds_left(self) -> float:
        if not self.access_token_ciphertext or self.expires_at is None:
            return 0.0
        return (self.expires_at - timezone.now()).total_seconds()


class ComponentEventQuerySet(models.QuerySet):
    def awaiting_exchange(self, *, received_before: datetime) -> ComponentEventQuerySet:
        """Authorization events received before then whose code is still to be exchanged."""
        return self.filter(processed_at__isnull=True, received_at__lt=received_before).exclude(auth_code_ciphertext="")


class ComponentEvent(EncryptedSecretsMixin, models.Model):
    """Every authorization event pushed to the events URL (tickets are kept in their own table)."""

    ENCRYPTED_FIELDS = ("auth_code_ciphertext",)

    component_appid = models.CharField(max_length=64)
    info_type = models.CharField(max_length=64, db_index=True)
    authorizer_appid = models.CharField(max_length=64, blank=True, default="", db_index=True)
    #: The authorization code, encrypted, wiped once exchanged.
    auth_code_ciphertext = models.TextField(blank=True, default="")
    pushed_at = models.DateTimeField(null=True, blank=True)
    received_at = models.DateTimeField(default=timezone.now, db_index=True)
    processed_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True, default="")

    objects = ComponentEventQuerySet.as_manager()

    class Meta:
        ordering = ["-received_at"]

    def __str__(self) -> str:
        return f"{self.info_type} {self.authorizer_appid}".strip()

    def set_auth_code(self, raw: str | None) -> None:
        self._set_secret("auth_code_ciphertext", raw)

    def get_auth_code(self) -> str | None:
        return self._get_secret("auth_code_ciphertext")
