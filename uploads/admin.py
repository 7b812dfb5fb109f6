"""Operator console for uploads: filters, attempts inline, image preview while bytes are kept, retry.

Also the Authorizer admin's upload action ("Retry its uploads that failed with 45009"): tenants cannot
import uploads (docs/architecture.md §2), so the tenants' AuthorizerAdmin is registered again here,
extended with it.
"""

from __future__ import annotations

import base64

from django.contrib import admin, messages
from django.utils.html import format_html

from tenants.admin import AuthorizerAdmin
from tenants.models import Authorizer
from uploads.errors import UploadNotRetryable
from uploads.models import Upload, UploadAttempt, UploadBlob
from uploads.services.process import BulkRetry, upload_retry, uploads_retry_failed_for_quota


class UploadAttemptInline(admin.TabularInline):
    model = UploadAttempt
    fk_name = "upload"
    fields = ("number", "started_at", "duration_ms", "http_status", "errcode", "errmsg", "outcome",
              "token_generation", "worker", "reused_upload")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


class ErrcodeFilter(admin.SimpleListFilter):
    title = "errcode"
    parameter_name = "errcode"

    def lookups(self, request, model_admin):
        codes = (
            Upload.objects.exclude(errcode__isnull=True).exclude(errcode=0)
            .values_list("errcode", flat=True).distinct().order_by("errcode")[:50]
        )
        return [(str(c), str(c)) for c in codes]

    def queryset(self, request, queryset):
        value = self.value()
        return queryset.filter(errcode=int(value)) if value and value.lstrip("-").isdigit() else queryset


@admin.register(Upload)
class UploadAdmin(admin.ModelAdmin):
    list_display = ("id", "tenant", "authorizer", "status", "errcode", "attempts", "size", "created_at", "finished_at")
    list_filter = ("status", "tenant", ErrcodeFilter, "requested_by", ("created_at", admin.DateFieldListFilter))
    search_fields = ("id", "authorizer__appid", "tenant__slug", "sha256", "url")
    list_select_related = ("tenant", "authorizer")
    date_hierarchy = "created_at"
    inlines = [UploadAttemptInline]
    actions = ["retry_failed", "retry_failed_for_quota"]
    readonly_fields = (
        "id", "tenant", "authorizer", "requested_by", "api_key", "admin_user", "idempotency_key", "status",
        "preview", "url", "errcode", "errmsg", "permission_required", "permission_granted", "permission_passed",
        "attempts", "sha256", "size", "original_size", "fitted", "content_type", "width", "height",
        "created_at", "started_at", "finished_at", "next_attempt_at", "lease_until", "bytes_purged_at",
        "dedupe", "reused_from",
    )
    exclude = ("request_fingerprint",)

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="image")
    def preview(self, obj: Upload):
        data = UploadBlob.objects.filter(upload_id=obj.pk).values_list("data", flat=True).first()
        if data is None:
            return "bytes purged" if obj.bytes_purged_at else "—"
        encoded = base64.b64encode(bytes(data)).decode()
        return format_html('<img src="data:{};base64,{}" style="max-width:320px;max-height:320px">',
                           obj.content_type, encoded)

    @admin.action(description="Retry failed uploads (a new attempt on the same record)")
    def retry_failed(self, request, queryset):
        retried = 0
        for upload in queryset:
            try:
                upload_retry(upload=upload)
            except UploadNotRetryable as exc:
                self.message_user(request, f"{upload.pk}: {exc}", messages.WARNING)
            else:
                retried += 1
        if retried:
            self.message_user(request, f"{retried} upload(s) queued again", messages.SUCCESS)

    @admin.action(description="Retry the selected uploads that failed with 45009 (once the quota is cleared)")
    def retry_failed_for_quota(self, request, queryset):
        report = uploads_retry_failed_for_quota(uploads=queryset)
        others = queryset.count() - len(report.retried) - len(report.refused)
        if others:
            self.message_user(request, f"{others} selected upload(s) did not fail with 45009: left alone",
                              messages.WARNING)
        _report_bulk_retry(self, request, report, what="upload(s) that failed with 45009")


def _report_bulk_retry(modeladmin, request, report: BulkRetry, *, what: str) -> None:
    for pk, why in report.refused:
        modeladmin.message_user(request, f"{pk}: {why}", messages.WARNING)
    if report.retried:
        modeladmin.message_user(request, f"{len(report.retried)} {what} queued again", messages.SUCCESS)
    elif not report.refused:
        modeladmin.message_user(request, f"no {what} to retry", messages.INFO)


admin.site.unregister(Authorizer)


@admin.register(Authorizer)
class AuthorizerWithUploadsAdmin(AuthorizerAdmin):
    actions = [*AuthorizerAdmin.actions, "retry_uploads_failed_for_quota"]

    @admin.action(description="Retry its uploads that failed with 45009 (after clearing its API quota)")
    def retry_uploads_failed_for_quota(self, request, queryset):
        for authorizer in queryset:
            report = uploads_retry_failed_for_quota(uploads=Upload.objects.filter(authorizer=authorizer))
            _report_bulk_retry(self, request, report, what=f"upload(s) of {authorizer.appid} that failed with 45009")
