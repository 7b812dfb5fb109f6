"""Operator console for uploads: filters, attempts inline, image preview while bytes are kept, retry."""

from __future__ import annotations

import base64

from django.contrib import admin, messages
from django.utils.html import format_html

from uploads.errors import UploadNotRetryable
from uploads.models import Upload, UploadAttempt, UploadBlob
from uploads.services.process import upload_retry


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
    actions = ["retry_failed"]
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
