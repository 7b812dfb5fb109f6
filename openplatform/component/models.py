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
    #: When the code dies (AuthorizationCodeExpiredTime, at most an hour after the push; docs/wechat-protocol.md §3).
    auth_code_expires_at = models.DateTimeField(null=True, blank=True)
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


class QuotaReset(models.Model):
    """One reset of an account's API quota asked for by an operator, with WeChat's answer.

    `clear_quota` (with the account's own token) and `component/clear_quota/v2` (with the component's
    AppSecret) share one budget per account: CLEAR_QUOTA_MONTHLY_LIMIT resets per calendar month,
    Beijing time, then 48006 (docs/wechat-protocol.md §11). These rows are how the admin shows how much
    of it is used; resets made elsewhere (the account's own console) count at WeChat but not here,
    which is why a 48006 answer is recorded too.
    """

    class Kind(models.TextChoices):
        COMPONENT = "component", "Component (our platform)"
        AUTHORIZER = "authorizer", "Authorizer (a merchant's account)"

    #: The account whose quota was reset: the component's appid or an authorizer's.
    appid = models.CharField(max_length=64)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    #: The WeChat path called.
    endpoint = models.CharField(max_length=64)
    #: The admin user who asked for it (a username: the row stays if the user is deleted).
    requested_by = models.CharField(max_length=150, blank=True, default="")
    requested_at = models.DateTimeField(default=timezone.now)
    succeeded = models.BooleanField(default=False)
    #: WeChat's errcode when it refused; None when it answered 0 or did not answer at all.
    errcode = models.IntegerField(null=True, blank=True)
    errmsg = models.TextField(blank=True, default="")

    class Meta:
        indexes = [models.Index(fields=["appid", "requested_at"], name="quota_reset_appid_time_idx")]
        ordering = ["-requested_at"]

    def __str__(self) -> str:
        outcome = "reset" if self.succeeded else f"refused ({self.errcode})" if self.errcode else "no answer"
        return f"{self.appid} quota {outcome} {self.requested_at:%Y-%m-%d %H:%M}"
