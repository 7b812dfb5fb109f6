"""Operator console for merchants, keys and authorizers. Secrets are never shown."""

from __future__ import annotations

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from rest_framework_api_key.admin import APIKeyModelAdmin
from rest_framework_api_key.models import APIKey

from openplatform.wechat.errors import WeChatError
from openplatform.wechat.permissions import PERMISSION_SET_NAMES, permission_set_name
from tenants.errors import TenantsError
from tenants.models import Authorizer, Tenant, TenantAPIKey
from tenants.services.authorization import authorization_link_create, authorizer_revoke, authorizer_sync_info
from tenants.services.tokens import (
    authorizer_access_token_force_refresh,
    authorizer_access_token_replace_leaked,
)

#: Ticked by default when an operator picks sets: what uploadimg needs (Official Account, Mini Program).
UPLOAD_SETS = (11, 18)

SECRET_FIELDS = ("access_token_ciphertext", "refresh_token_ciphertext", "app_secret_ciphertext")


class AuthorizerInline(admin.TabularInline):
    model = Authorizer
    fields = ("appid", "nick_name", "account_type", "status", "access_token_expires_at")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None):
        return False  # authorizers come from WeChat (onboarding), never from a form


class APIKeyInline(admin.TabularInline):
    """Existing keys (rename, expire, revoke). New keys are made in the API key admin or with
    `create_api_key`, which generate the key and show it once; a row added here would have none."""

    model = TenantAPIKey
    fields = ("name", "prefix", "created", "expiry_date", "revoked")
    readonly_fields = ("prefix", "created")
    extra = 0

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin):
    list_display = ("slug", "name", "is_active", "created_at")
    search_fields = ("slug", "name")
    list_filter = ("is_active",)
    inlines = [APIKeyInline, AuthorizerInline]
    actions = ["make_authorization_link", "make_authorization_link_for_sets"]

    @admin.action(description="Make an authorization link")
    def make_authorization_link(self, request, queryset):
        self._make_links(request, queryset, category_id_list=[])

    @admin.action(description="Make an authorization link asking for chosen permission sets")
    def make_authorization_link_for_sets(self, request, queryset):
        """First a page to tick the sets (the upload sets ticked), then the links (category_id_list)."""
        if "apply" not in request.POST:
            return TemplateResponse(request, "admin/tenants/tenant/authorization_link_sets.html", {
                **self.admin_site.each_context(request),
                "title": "Which permission sets should the link ask for?",
                "tenants": queryset,
                "sets": [(i, name, i in UPLOAD_SETS) for i, name in sorted(PERMISSION_SET_NAMES.items())],
                "action": "make_authorization_link_for_sets",
                "selected": request.POST.getlist(helpers.ACTION_CHECKBOX_NAME),
                "opts": self.model._meta,
            })
        try:
            ids = [int(v) for v in request.POST.getlist("category_id")]
        except ValueError:
            ids = [0]
        self._make_links(request, queryset, category_id_list=ids)
        return None

    def _make_links(self, request, queryset, *, category_id_list: list[int]) -> None:
        for tenant in queryset:
            try:
                link = authorization_link_create(tenant=tenant, category_id_list=category_id_list)
            except WeChatError as exc:
                self.message_user(request, f"{tenant.slug}: WeChat refused ({exc})", messages.ERROR)
                continue
            except TenantsError as exc:
                self.message_user(request, f"{tenant.slug}: {exc.detail}", messages.ERROR)
                continue
            self.message_user(
                request,
                format_html('{}: <a href="{}">PC link</a> · <a href="{}">mobile link</a> (valid until {})',
                            tenant.slug, link.url, link.mobile_url, link.expires_at),
                messages.SUCCESS,
            )


# The library registers an admin for its own concrete APIKey, which nothing here uses (a merchant's key
# is a TenantAPIKey): without this the index listed "API keys" twice, one of them always empty.
if admin.site.is_registered(APIKey):
    admin.site.unregister(APIKey)


@admin.register(TenantAPIKey)
class TenantAPIKeyAdmin(APIKeyModelAdmin):
    list_display = (*APIKeyModelAdmin.list_display, "tenant")
    list_filter = (*APIKeyModelAdmin.list_filter, "tenant")


@admin.register(Authorizer)
class AuthorizerAdmin(admin.ModelAdmin):
    list_display = (
        "appid", "nick_name", "tenant", "account_type", "mode", "status", "can_upload",
        "access_token_expires_at", "short_last_error",
    )
    list_filter = ("status", "account_type", "mode", "tenant")
    search_fields = ("appid", "nick_name", "principal_name", "tenant__slug")
    exclude = SECRET_FIELDS
    readonly_fields = (
        "component_appid", "appid", "mode", "account_type", "nick_name", "user_name", "principal_name",
        "permission_sets", "can_upload", "status", "has_refresh_token", "access_token_expires_at",
        "token_generation", "token_refreshed_at", "refresh_count", "refresh_lease_owner", "refresh_lease_until",
        "last_error", "last_error_at",
        "authorized_at", "revoked_at", "synced_at", "created_at", "updated_at", "func_info",
    )
    actions = ["refresh_token_now", "replace_leaked_token", "resync_from_wechat", "revoke"]

    def has_add_permission(self, request):
        return False  # authorizers come from WeChat (onboarding or reconciliation), never from a form

    @admin.display(boolean=True, description="can upload images")
    def can_upload(self, obj: Authorizer) -> bool:
        return obj.can_upload_images

    @admin.display(boolean=True, description="refresh token stored")
    def has_refresh_token(self, obj: Authorizer) -> bool:
        return bool(obj.refresh_token_ciphertext)

    @admin.display(description="permission sets")
    def permission_sets(self, obj: Authorizer):
        ids = obj.func_info or []
        if not ids:
            return "—"
        return format_html("<ul>{}</ul>", format_html_join("", "<li>{}: {}</li>", ((i, permission_set_name(i)) for i in ids)))

    @admin.display(description="last error")
    def short_last_error(self, obj: Authorizer) -> str:
        return (obj.last_error[:60] + "…") if len(obj.last_error) > 60 else obj.last_error

    @admin.action(description="Refresh access token now")
    def refresh_token_now(self, request, queryset):
        for authorizer in queryset:
            try:
                lease = authorizer_access_token_force_refresh(authorizer=authorizer)
            except (WeChatError, TenantsError) as exc:
                self.message_user(request, f"{authorizer.appid}: {exc}", messages.ERROR)
            else:
                self.message_user(request, f"{authorizer.appid}: token generation {lease.generation}", messages.SUCCESS)

    @admin.action(description=(
        "Token leaked: force a new one (direct mode: cuts the old token off for everyone using this "
        "AppID, the merchant's own servers too; at most 20 a day, 30 s apart)"
    ))
    def replace_leaked_token(self, request, queryset):
        for authorizer in queryset:
            try:
                lease = authorizer_access_token_replace_leaked(authorizer=authorizer)
            except (WeChatError, TenantsError) as exc:
                self.message_user(request, f"{authorizer.appid}: {exc}", messages.ERROR)
                continue
            if authorizer.mode == Authorizer.Mode.DIRECT:
                note = "the previous token no longer works anywhere"
            else:
                note = "WeChat cannot cut the previous token off: it lapses at its own expiry (at most 2 h)"
            self.message_user(request, f"{authorizer.appid}: token generation {lease.generation}; {note}",
                              messages.WARNING)

    @admin.action(description="Re-sync names and permission sets from WeChat")
    def resync_from_wechat(self, request, queryset):
        for authorizer in queryset.exclude(mode=Authorizer.Mode.DIRECT):
            try:
                authorizer_sync_info(authorizer=authorizer)
            except WeChatError as exc:
                self.message_user(request, f"{authorizer.appid}: {exc}", messages.ERROR)
            else:
                self.message_user(request, f"{authorizer.appid}: synced at {timezone.now():%H:%M:%S}", messages.SUCCESS)

    @admin.action(description="Revoke (stop using its tokens, reject its queued uploads)")
    def revoke(self, request, queryset):
        for authorizer in queryset:
            authorizer_revoke(authorizer=authorizer, reason=f"revoked by {request.user}")
        self.message_user(request, f"{queryset.count()} authorizer(s) revoked", messages.WARNING)
