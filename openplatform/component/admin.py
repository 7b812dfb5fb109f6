from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import OuterRef
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from openplatform.component.config import component_config
from openplatform.component.models import (
    ComponentAccessToken,
    ComponentEvent,
    ComponentVerifyTicket,
    QuotaReset,
)
from openplatform.component.quota import (
    component_quota_clear,
    quota_reset_annotations,
    quota_reset_exhausted_message,
    quota_reset_usage,
    quota_reset_usage_of,
)
from openplatform.wechat.client import CLEAR_QUOTA_MONTHLY_LIMIT
from openplatform.wechat.errors import ClearQuotaExhausted, WeChatError

#: Who may reset an API quota (the component's here, an authorizer's in tenants/admin.py): scarce, 10 a month.
CLEAR_QUOTA_PERMISSION = "openplatform.add_quotareset"


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(ComponentVerifyTicket)
class ComponentVerifyTicketAdmin(ReadOnlyAdmin):
    list_display = ("component_appid", "pushed_at", "received_at", "is_valid")
    exclude = ("ticket_ciphertext",)
    list_filter = ("component_appid",)


@admin.register(ComponentAccessToken)
class ComponentAccessTokenAdmin(ReadOnlyAdmin):
    list_display = (
        "component_appid", "expires_at", "generation", "refreshed_at", "refresh_count", "quota_resets", "last_error",
    )
    exclude = ("access_token_ciphertext",)

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(**quota_reset_annotations(OuterRef("component_appid")))

    def get_urls(self):
        clear_quota = path(
            "clear-quota/", self.admin_site.admin_view(self.clear_quota_view),
            name="openplatform_componentaccesstoken_clear_quota",
        )
        return [clear_quota, *super().get_urls()]

    @admin.display(description=f"API quota resets (of {CLEAR_QUOTA_MONTHLY_LIMIT} a month)")
    def quota_resets(self, obj: ComponentAccessToken):
        url = reverse("admin:openplatform_componentaccesstoken_clear_quota")
        return format_html('{} · <a href="{}">clear the quota…</a>', quota_reset_usage_of(obj, obj.component_appid), url)

    def clear_quota_view(self, request):
        """GET: the component's resets this month and what a reset does; POST: component/clear_quota/v2."""
        if not request.user.has_perm(CLEAR_QUOTA_PERMISSION):
            raise PermissionDenied
        appid = component_config().appid
        if request.method == "POST":
            try:
                usage = component_quota_clear(requested_by=request.user.get_username())
            except ClearQuotaExhausted:
                self.message_user(request, quota_reset_exhausted_message(appid), messages.ERROR)
            except WeChatError as exc:
                self.message_user(request, f"{appid}: quota not reset: {exc}", messages.ERROR)
            else:
                self.message_user(request, f"{appid}: the component's API quota is cleared; resets used: {usage}",
                                  messages.SUCCESS)
            return redirect("admin:openplatform_componentaccesstoken_clear_quota")
        return TemplateResponse(request, "admin/openplatform/componentaccesstoken/clear_quota.html", {
            **self.admin_site.each_context(request),
            "title": "Clear the component's API quota",
            "appid": appid,
            "usage": quota_reset_usage(appid=appid),
            "limit": CLEAR_QUOTA_MONTHLY_LIMIT,
            "opts": self.model._meta,
        })


@admin.register(ComponentEvent)
class ComponentEventAdmin(ReadOnlyAdmin):
    list_display = ("info_type", "authorizer_appid", "pushed_at", "received_at", "processed_at", "error")
    list_filter = ("info_type",)
    search_fields = ("authorizer_appid",)
    exclude = ("auth_code_ciphertext",)


@admin.register(QuotaReset)
class QuotaResetAdmin(ReadOnlyAdmin):
    """Every quota reset asked for from the admin, with WeChat's answer (made by the actions, never here)."""

    list_display = ("requested_at", "appid", "kind", "requested_by", "succeeded", "errcode", "errmsg")
    list_filter = ("kind", "succeeded")
    search_fields = ("appid", "requested_by")

    def has_delete_permission(self, request, obj=None):
        return False  # the record is the count WeChat's monthly limit is checked against
