"""Operator console for merchants, keys and authorizers. Secrets are never shown."""

from __future__ import annotations

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.db.models import OuterRef
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from rest_framework_api_key.admin import APIKeyModelAdmin
from rest_framework_api_key.models import APIKey

from openplatform.component.quota import (
    quota_reset_annotations,
    quota_reset_exhausted_message,
    quota_reset_usage_of,
)
from openplatform.wechat.client import CLEAR_QUOTA_MONTHLY_LIMIT
from openplatform.wechat.errors import ClearQuotaExhausted, QuotaExceeded, WeChatError
from openplatform.wechat.permissions import PERMISSION_SET_NAMES, permission_set_name
from tenants.errors import TenantsError
from tenants.models import Authorizer, AuthorizerTransferRequest, Tenant, TenantAPIKey
from tenants.services.authorization import authorization_link_create, authorizer_revoke, authorizer_sync_info
from tenants.services.quota import authorizer_quota_clear
from tenants.services.tokens import (
    authorizer_access_token_force_refresh,
    authorizer_access_token_replace_leaked,
)
from tenants.services.transfers import (
    authorizer_moved_by_hand,
    authorizer_transfer_approve,
    authorizer_transfer_decline,
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
        "access_token_expires_at", "quota_resets", "short_last_error",
    )
    list_filter = ("status", "account_type", "mode", "tenant")
    search_fields = ("appid", "nick_name", "principal_name", "tenant__slug")
    exclude = SECRET_FIELDS
    readonly_fields = (
        "component_appid", "appid", "mode", "account_type", "nick_name", "user_name", "principal_name",
        "permission_sets", "can_upload", "status", "has_refresh_token", "access_token_expires_at",
        "token_generation", "token_refreshed_at", "refresh_count", "refresh_lease_owner", "refresh_lease_until",
        "last_error", "last_error_at",
        "authorized_at", "revoked_at", "synced_at", "created_at", "updated_at", "func_info", "quota_resets",
    )
    actions = ["refresh_token_now", "replace_leaked_token", "resync_from_wechat", "clear_api_quota", "revoke"]

    def has_add_permission(self, request):
        return False  # authorizers come from WeChat (onboarding or reconciliation), never from a form

    def save_model(self, request, obj, form, change):
        moved_from = form.initial.get("tenant") if change and "tenant" in form.changed_data else None
        super().save_model(request, obj, form, change)
        if moved_from is not None:  # the old tenant's queued uploads are rejected, as after a transfer
            authorizer_moved_by_hand(authorizer=obj, from_tenant_id=moved_from)

    def get_queryset(self, request):
        # Each row's resets this month in the list's own query (one subquery, no query per row).
        return super().get_queryset(request).annotate(**quota_reset_annotations(OuterRef("appid")))

    def has_clear_quota_permission(self, request) -> bool:
        """Quota resets are scarce (10 a month per account): only who may record one (`add_quotareset`)."""
        return request.user.has_perm("openplatform.add_quotareset")

    @admin.display(description=f"API quota resets (of {CLEAR_QUOTA_MONTHLY_LIMIT} a month)")
    def quota_resets(self, obj: Authorizer) -> str:
        return str(quota_reset_usage_of(obj, obj.appid))

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

    @admin.action(
        description=f"Clear this account's API quota (45009; {CLEAR_QUOTA_MONTHLY_LIMIT} resets a month per account)",
        permissions=["clear_quota"],
    )
    def clear_api_quota(self, request, queryset):
        """First a page showing each account's resets this month, then `clear_quota` with its token."""
        if "apply" not in request.POST:
            return TemplateResponse(request, "admin/tenants/authorizer/clear_quota.html", {
                **self.admin_site.each_context(request),
                "title": "Clear these accounts' API quota?",
                "rows": [(a, quota_reset_usage_of(a, a.appid)) for a in queryset],
                "limit": CLEAR_QUOTA_MONTHLY_LIMIT,
                "action": "clear_api_quota",
                "selected": request.POST.getlist(helpers.ACTION_CHECKBOX_NAME),
                "opts": self.model._meta,
            })
        for authorizer in queryset:
            try:
                usage = authorizer_quota_clear(authorizer=authorizer, requested_by=request.user.get_username())
            except ClearQuotaExhausted:
                self.message_user(request, quota_reset_exhausted_message(authorizer.appid), messages.ERROR)
            except QuotaExceeded as exc:  # api_authorizer_token: the component's own quota is spent
                self.message_user(request, (
                    f"{authorizer.appid}: no access token to reset its quota with ({exc}): the component's "
                    "quota is used up; clear the component's API quota first (admin home page)"
                ), messages.ERROR)
            except (WeChatError, TenantsError) as exc:
                self.message_user(request, f"{authorizer.appid}: quota not reset: {exc}", messages.ERROR)
            else:
                self.message_user(request, (
                    f"{authorizer.appid}: API quota cleared; resets used: {usage}. Its uploads that failed with "
                    "45009 can now be retried (action \"Retry its uploads that failed with 45009\")."
                ), messages.SUCCESS)
        return None

    @admin.action(description="Revoke (stop using its tokens, reject its queued uploads)")
    def revoke(self, request, queryset):
        for authorizer in queryset:
            authorizer_revoke(authorizer=authorizer, reason=f"revoked by {request.user}")
        self.message_user(request, f"{queryset.count()} authorizer(s) revoked", messages.WARNING)


@admin.register(AuthorizerTransferRequest)
class AuthorizerTransferRequestAdmin(admin.ModelAdmin):
    """Accounts authorized through another merchant's link while their binding was revoked
    (docs/architecture.md §3.3). The kept refresh token is never shown."""

    list_display = ("appid", "from_tenant", "to_tenant", "state", "requested_at", "decided_at", "decided_by")
    list_filter = ("state", "to_tenant", "from_tenant")
    search_fields = ("appid", "from_tenant__slug", "to_tenant__slug")
    exclude = ("refresh_token_ciphertext",)
    readonly_fields = ("authorizer", "appid", "from_tenant", "to_tenant", "state", "requested_at", "func_info",
                       "decided_at", "decided_by", "note")
    actions = ["move_to_requesting_tenant", "decline"]

    def has_add_permission(self, request):
        return False  # made by the redirect when a revoked account is authorized through another link

    @admin.action(description=(
        "Move the account to the requesting merchant (the old merchant's queued uploads are rejected; "
        "its upload history stays its own)"
    ), permissions=["change"])
    def move_to_requesting_tenant(self, request, queryset):
        for transfer in queryset.select_related("to_tenant"):
            try:
                authorizer_transfer_approve(request=transfer, decided_by=str(request.user))
            except TenantsError as exc:
                self.message_user(request, f"{transfer.appid}: {exc.detail}", messages.ERROR)
            else:
                self.message_user(request, f"{transfer.appid}: moved to {transfer.to_tenant.slug}", messages.SUCCESS)

    @admin.action(description="Decline (the account stays revoked where it is)", permissions=["change"])
    def decline(self, request, queryset):
        for transfer in queryset:
            try:
                authorizer_transfer_decline(request=transfer, decided_by=str(request.user))
            except TenantsError as exc:
                self.message_user(request, f"{transfer.appid}: {exc.detail}", messages.ERROR)
            else:
                self.message_user(request, f"{transfer.appid}: declined", messages.WARNING)
