"""Upload records: one row per accepted image, its bytes in their own table, every WeChat call recorded."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from openplatform.wechat.errors import QuotaExceeded
from tenants.models import Authorizer, Tenant, TenantAPIKey


class UploadQuerySet(models.QuerySet):
    """The upload states the tasks, the sweeper, the dashboard and the metrics ask for, named once."""

    def final(self) -> UploadQuerySet:
        return self.filter(status__in=self.model.FINAL_STATUSES)

    def in_flight(self) -> UploadQuerySet:
        """Not final yet: queued or uploading."""
        return self.filter(status__in=self.model.IN_FLIGHT_STATUSES)

    def queued(self) -> UploadQuerySet:
        return self.filter(status=self.model.Status.QUEUED)

    def failed(self) -> UploadQuerySet:
        return self.filter(status=self.model.Status.FAILED)

    def failed_for_quota(self) -> UploadQuerySet:
        """Failed with 45009 (a daily quota, the account's for uploadimg or the component's for its token):
        worth sending again once the quota is cleared or has reset."""
        return self.failed().filter(errcode__in=QuotaExceeded.errcodes)

    def due(self, *, now: datetime) -> UploadQuerySet:
        """Queued and its backoff (if any) is over: a run may claim it now."""
        return self.filter(
            Q(status=self.model.Status.QUEUED) & (Q(next_attempt_at__lte=now) | Q(next_attempt_at__isnull=True))
        )

    def lease_expired(self, *, now: datetime) -> UploadQuerySet:
        """Uploading, but the run that claimed it has outlived its lease (its worker died or hung)."""
        return self.filter(self._lease_expired(now))

    def stuck(self, *, now: datetime, grace: timedelta) -> UploadQuerySet:
        """What the sweeper re-enqueues: queued uploads whose task should have run more than `grace` ago
        (the broker lost it, or it was never sent), and uploads with an expired lease."""
        return self.filter(self._queued_past_due(now - grace) | self._lease_expired(now))

    def _queued_past_due(self, cutoff: datetime) -> Q:
        queued = self.model.Status.QUEUED
        return Q(status=queued, next_attempt_at__lt=cutoff) | Q(
            status=queued, next_attempt_at__isnull=True, created_at__lt=cutoff
        )

    def _lease_expired(self, now: datetime) -> Q:
        return Q(status=self.model.Status.UPLOADING, lease_until__lt=now)


class Upload(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        UPLOADING = "uploading", "Uploading"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        #: Never sent to WeChat (permission-set check failed, authorizer revoked).
        REJECTED = "rejected", "Rejected"

    FINAL_STATUSES = (Status.SUCCEEDED, Status.FAILED, Status.REJECTED)
    IN_FLIGHT_STATUSES = (Status.QUEUED, Status.UPLOADING)

    class RequestedBy(models.TextChoices):
        API_KEY = "api_key", "Merchant API key"
        ADMIN = "admin", "Admin user"
        SCHEDULED = "scheduled", "Scheduled job"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # No single-column indexes where a composite one below leads with the column (docs/architecture.md §7,
    # "Cost": each index is written on every insert and every status change).
    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="uploads", db_index=False)
    authorizer = models.ForeignKey(Authorizer, on_delete=models.PROTECT, related_name="uploads", db_index=False)
    requested_by = models.CharField(max_length=16, choices=RequestedBy.choices, default=RequestedBy.API_KEY)
    api_key = models.ForeignKey(TenantAPIKey, null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
                                db_index=False)
    admin_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", db_index=False
    )
    idempotency_key = models.CharField(max_length=255, blank=True, default="")
    #: SHA-256 over what makes two requests "the same" (authorizer, original bytes, fit flag).
    request_fingerprint = models.CharField(max_length=64, blank=True, default="")

    sha256 = models.CharField(max_length=64)
    size = models.PositiveIntegerField()
    #: Size as received when `fit` recompressed or downscaled it; else equal to size.
    original_size = models.PositiveIntegerField()
    fitted = models.BooleanField(default=False)
    content_type = models.CharField(max_length=32)
    width = models.PositiveIntegerField(default=0)
    height = models.PositiveIntegerField(default=0)

    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    permission_required = models.JSONField(default=list, blank=True)
    permission_granted = models.JSONField(default=list, blank=True)
    permission_passed = models.BooleanField(null=True, blank=True)
    url = models.URLField(max_length=1000, blank=True, default="")
    errcode = models.IntegerField(null=True, blank=True)
    errmsg = models.TextField(blank=True, default="")
    attempts = models.PositiveIntegerField(default=0)
    #: `attempts` when an operator last retried it: each retry gets a fresh UPLOAD_MAX_ATTEMPTS budget.
    attempts_before_retry = models.PositiveIntegerField(default=0)

    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    #: When a queued upload may next be tried (backoff); the sweeper re-enqueues past-due ones.
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    #: While `uploading`, the worker owns it until then; past it, another worker may take over.
    lease_until = models.DateTimeField(null=True, blank=True)
    bytes_purged_at = models.DateTimeField(null=True, blank=True)
    #: False: the request said `dedupe=false`, always send it to WeChat.
    dedupe = models.BooleanField(default=True)
    #: Same bytes as this earlier succeeded upload to the same authorizer: its URL, no WeChat call.
    reused_from = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
                                    db_index=False)
    updated_at = models.DateTimeField(auto_now=True)

    objects = UploadQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "idempotency_key"],
                condition=~models.Q(idempotency_key=""),
                name="upload_idempotency_key_per_tenant",
            ),
        ]
        # Partial where most rows need no entry: an insert or update skips a partial index whose condition
        # the row does not meet, and these are written on every upload (docs/architecture.md §7, "Cost").
        indexes = [
            models.Index(fields=["-created_at"], name="upload_newest_idx"),
            models.Index(fields=["tenant", "-created_at"], name="upload_tenant_newest_idx"),
            # The sweeper and the due check: only uploads still in flight.
            models.Index(fields=["status", "next_attempt_at"], name="upload_in_flight_due_idx",
                         condition=Q(status__in=["queued", "uploading"])),
            models.Index(fields=["authorizer", "status"], name="upload_authorizer_status_idx"),
            models.Index(fields=["finished_at"], name="upload_finished_at_idx", condition=Q(finished_at__isnull=False)),
            # Dedupe looks for the newest succeeded upload of these bytes to this account: finished_at in
            # the index answers "newest within the window" from the index itself. Without it, a generic
            # plan walked upload_finished_at_idx backwards through every upload of the window
            # (docs/architecture.md §7, "Plans that stay cheap as the table grows").
            models.Index(fields=["authorizer", "sha256", "-finished_at"], name="upload_dedupe_newest_idx",
                         condition=Q(status="succeeded")),
            # The foreign keys' own (a deleted key, user or upload sets these to NULL by them).
            models.Index(fields=["api_key"], name="upload_api_key_idx", condition=Q(api_key__isnull=False)),
            models.Index(fields=["admin_user"], name="upload_admin_user_idx", condition=Q(admin_user__isnull=False)),
            models.Index(fields=["reused_from"], name="upload_reused_from_idx", condition=Q(reused_from__isnull=False)),
        ]

    def __str__(self) -> str:
        return f"upload {self.id} ({self.status})"

    @property
    def is_final(self) -> bool:
        return self.status in self.FINAL_STATUSES

    @property
    def permission_check(self) -> dict:
        return {
            "required_any_of": self.permission_required,
            "granted": self.permission_granted,
            "passed": self.permission_passed,
        }


class UploadBlob(models.Model):
    """The image bytes, apart from the record so lists never load them; purged after retention."""

    upload = models.OneToOneField(Upload, primary_key=True, on_delete=models.CASCADE, related_name="blob")
    data = models.BinaryField()

    def __str__(self) -> str:
        return f"bytes of {self.upload_id}"


class UploadAttempt(models.Model):
    """One call to media/uploadimg: when, how long, and what WeChat answered (never the token)."""

    class Outcome(models.TextChoices):
        SUCCEEDED = "succeeded", "Succeeded"
        TOKEN_INVALID = "token_invalid", "Token invalid (refreshed)"
        TRANSIENT = "transient", "Transient error (retried)"
        FAILED = "failed", "Failed"
        #: The worker died (or hung past its lease) during this attempt; WeChat may have received it.
        LOST = "lost", "Worker lost (result unknown)"
        #: Not sent: the same bytes already succeeded for this authorizer (`reused_upload`).
        REUSED = "reused", "Reused an earlier upload's URL"

    # Indexed by the (upload, number) constraint, which leads with it.
    upload = models.ForeignKey(Upload, on_delete=models.CASCADE, related_name="attempt_records", db_index=False)
    number = models.PositiveIntegerField()
    started_at = models.DateTimeField()
    duration_ms = models.FloatField()
    http_status = models.PositiveIntegerField(null=True, blank=True)
    errcode = models.IntegerField(null=True, blank=True)
    errmsg = models.TextField(blank=True, default="")
    outcome = models.CharField(max_length=16, choices=Outcome.choices)
    #: Which of the authorizer's tokens was used (its generation), never the token itself.
    token_generation = models.PositiveIntegerField(null=True, blank=True)
    worker = models.CharField(max_length=200, blank=True, default="")
    reused_upload = models.ForeignKey(Upload, null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
                                      db_index=False)

    class Meta:
        ordering = ["upload", "number"]
        constraints = [models.UniqueConstraint(fields=["upload", "number"], name="upload_attempt_number_unique")]
        indexes = [models.Index(fields=["reused_upload"], name="attempt_reused_upload_idx",
                                condition=Q(reused_upload__isnull=False))]

    def __str__(self) -> str:
        return f"attempt {self.number} of {self.upload_id}: {self.outcome}"
