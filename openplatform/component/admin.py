from django.contrib import admin

from openplatform.component.models import ComponentAccessToken, ComponentEvent, ComponentVerifyTicket


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
    list_display = ("component_appid", "expires_at", "generation", "refreshed_at", "refresh_count", "last_error")
    exclude = ("access_token_ciphertext",)


@admin.register(ComponentEvent)
class ComponentEventAdmin(ReadOnlyAdmin):
    list_display = ("info_type", "authorizer_appid", "pushed_at", "received_at", "processed_at", "error")
    list_filter = ("info_type",)
    search_fields = ("authorizer_appid",)
    exclude = ("auth_code_ciphertext",)
