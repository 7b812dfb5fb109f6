"""Operator console for webhooks: endpoints, events and deliveries per tenant, with their attempts.

Signing secrets are never shown (nor editable): a merchant gets one when it creates an endpoint through
the API, and a fresh one with `POST /api/v1/webhook-endpoints/<id>/rotate-secret/`. An endpoint added
here gets a secret nobody has seen, so its merchant rotates it before verifying deliveries.
"""

from __future__ import annotations

import json

from django import forms
from django.contrib import admin, messages
from django.urls import reverse
from django.utils.html import format_html

from webhooks.errors import WebhookRefused
from webhooks.models import (
    EVENT_TYPES,
    WebhookDelivery,
    WebhookDeliveryAttempt,
    WebhookEndpoint,
    WebhookEvent,
)
from webhooks.services import (
    webhook_delivery_redeliver,
    webhook_endpoint_enable,
    webhook_test_event_send,
)
from webhooks.services.endpoints import (
    webhook_endpoint_disable,
    webhook_events_validate,
    webhook_url_validate,
)
from webhooks.signing import secret_generate

SECRET_FIELDS = ("secret_ciphertext", "previous_secret_ciphertext")


class WebhookEndpointForm(forms.ModelForm):
    events = forms.MultipleChoiceField(choices=[(t, t) for t in EVENT_TYPES], widget=forms.CheckboxSelectMultiple)

    class Meta:
        model = WebhookEndpoint
        fields = ("tenant", "url", "events", "description")

    def clean_url(self):
        try:
            return webhook_url_validate(url=self.cleaned_data["url"])
        except WebhookRefused as exc:
            raise forms.ValidationError(exc.detail, code=exc.code) from None

    def clean_events(self):
        try:
            return webhook_events_validate(events=list(self.cleaned_data["events"]))
        except WebhookRefused as exc:
            raise forms.ValidationError(exc.detail, code=exc.code) from None


class DeliveryInline(admin.TabularInline):
    model = WebhookDelivery
    fields = ("delivery_link", "event", "endpoint", "status", "attempts", "next_attempt_at", "last_error", "created_at")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = False
    ordering = ("-created_at",)

    def has_add_permission(self, request, obj=None):
        return False

    @admin.display(description="delivery")
    def delivery_link(self, obj: WebhookDelivery):
        return format_html('<a href="{}">{}</a>', reverse("admin:webhooks_webhookdelivery_change", args=[obj.pk]), obj.pk)


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(admin.ModelAdmin):
    form = WebhookEndpointForm
    list_display = ("url", "tenant", "enabled", "subscribed", "failing_since", "created_at")
    list_filter = ("enabled", "tenant")
    search_fields = ("url", "tenant__slug", "description")
    list_select_related = ("tenant",)
    actions = ["send_test_event", "enable", "disable"]
    readonly_fields = ("id", "deliveries", "enabled", "has_previous_secret", "failing_since", "disabled_at", "disabled_reason",
                       "created_at", "updated_at")
    exclude = SECRET_FIELDS

    def get_readonly_fields(self, request, obj=None):
        # The URL and events are the merchant's to change (through the API: delete and create); the
        # operator sets them only when adding one for a merchant.
        return (*self.readonly_fields, "tenant", "url", "events") if obj else self.readonly_fields

    def get_fields(self, request, obj=None):
        if obj is None:
            return ("tenant", "url", "events", "description")
        return ("id", "tenant", "url", "events", "description", "deliveries", "enabled", "has_previous_secret", "failing_since",
                "disabled_at", "disabled_reason", "created_at", "updated_at")

    @admin.display(description="deliveries")
    def deliveries(self, obj: WebhookEndpoint):
        url = reverse("admin:webhooks_webhookdelivery_changelist") + f"?endpoint__id__exact={obj.pk}"
        return format_html('<a href="{}">deliveries to this endpoint</a>', url)

    @admin.display(description="events")
    def subscribed(self, obj: WebhookEndpoint) -> str:
        return ", ".join(obj.events or [])

    @admin.display(boolean=True, description="previous secret still valid")
    def has_previous_secret(self, obj: WebhookEndpoint) -> bool:
        return len(obj.signing_secrets()) > 1 if obj.secret_ciphertext else False

    def save_model(self, request, obj: WebhookEndpoint, form, change):
        if not change:
            obj.set_secret(secret_generate())  # never shown: the merchant rotates it through the API
        super().save_model(request, obj, form, change)
        if not change:
            self.message_user(request, (
                f"Endpoint added with a signing secret that is not shown. The merchant gets its own with "
                f"POST /api/v1/webhook-endpoints/{obj.pk}/rotate-secret/."), messages.INFO)

    @admin.action(description="Send a test event")
    def send_test_event(self, request, queryset):
        for endpoint in queryset:
            try:
                delivery = webhook_test_event_send(endpoint=endpoint)
            except WebhookRefused as exc:
                self.message_user(request, f"{endpoint.url}: {exc.detail}", messages.WARNING)
            else:
                self.message_user(request, f"{endpoint.url}: test event {delivery.event_id} queued (delivery "
                                  f"{delivery.pk})", messages.SUCCESS)

    @admin.action(description="Enable (deliver new events again)")
    def enable(self, request, queryset):
        for endpoint in queryset:
            webhook_endpoint_enable(endpoint=endpoint)
        self.message_user(request, f"{queryset.count()} endpoint(s) enabled", messages.SUCCESS)

    @admin.action(description="Disable (stop delivering; events are still recorded)")
    def disable(self, request, queryset):
        for endpoint in queryset:
            webhook_endpoint_disable(endpoint_id=endpoint.pk, reason=f"disabled by {request.user}")
        self.message_user(request, f"{queryset.count()} endpoint(s) disabled", messages.WARNING)


class AttemptInline(admin.TabularInline):
    model = WebhookDeliveryAttempt
    fields = ("number", "started_at", "outcome", "response_status", "duration_ms", "address", "error",
              "response_body")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(WebhookEvent)
class WebhookEventAdmin(admin.ModelAdmin):
    list_display = ("id", "type", "tenant", "created_at")
    list_filter = ("type", "tenant", ("created_at", admin.DateFieldListFilter))
    search_fields = ("id", "tenant__slug")
    list_select_related = ("tenant",)
    date_hierarchy = "created_at"
    fields = ("id", "tenant", "type", "created_at", "payload_json")
    readonly_fields = fields
    inlines = [DeliveryInline]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description="payload")
    def payload_json(self, obj: WebhookEvent):
        return format_html("<pre>{}</pre>", json.dumps(obj.payload(), indent=2, ensure_ascii=False))


class DeliveryTenantFilter(admin.SimpleListFilter):
    title = "tenant"
    parameter_name = "tenant"

    def lookups(self, request, model_admin):
        rows = WebhookEndpoint.objects.values_list("tenant_id", "tenant__slug").distinct().order_by("tenant__slug")
        return [(str(pk), slug) for pk, slug in rows]

    def queryset(self, request, queryset):
        return queryset.filter(endpoint__tenant_id=self.value()) if self.value() else queryset


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    list_display = ("id", "event_type", "endpoint", "tenant", "status", "attempts", "next_attempt_at", "created_at")
    list_filter = ("status", DeliveryTenantFilter, ("endpoint", admin.RelatedOnlyFieldListFilter), "event__type",
                   ("created_at", admin.DateFieldListFilter))
    search_fields = ("event__id", "endpoint__url", "endpoint__tenant__slug")
    list_select_related = ("event", "endpoint", "endpoint__tenant")
    fields = ("id", "event", "endpoint", "status", "attempts", "window_started_at", "next_attempt_at", "lease_until",
              "last_error", "created_at", "finished_at")
    readonly_fields = fields
    inlines = [AttemptInline]
    actions = ["redeliver"]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="type", ordering="event__type")
    def event_type(self, obj: WebhookDelivery) -> str:
        return obj.event.type

    @admin.display(description="tenant")
    def tenant(self, obj: WebhookDelivery) -> str:
        return str(obj.endpoint.tenant)

    @admin.action(description="Redeliver (send again now, with a fresh 3-day retry window)")
    def redeliver(self, request, queryset):
        done = 0
        for delivery in queryset:
            try:
                webhook_delivery_redeliver(delivery=delivery)
            except WebhookRefused as exc:
                self.message_user(request, f"delivery {delivery.pk}: {exc.detail}", messages.WARNING)
            else:
                done += 1
        if done:
            self.message_user(request, f"{done} deliver{'y' if done == 1 else 'ies'} queued again", messages.SUCCESS)
