"""Merchant REST API for webhook endpoints and the event log: thin views over services and selectors.

Authentication is the project's default (an API key); `request.user.tenant` is the key's tenant.
"""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
)
from rest_framework import serializers, status
from rest_framework.generics import ListAPIView
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from webhooks.errors import WebhookEndpointNotFound, WebhookRefused
from webhooks.models import ALL_EVENTS, EVENT_TYPES, TEST_EVENT_TYPE, WebhookEndpoint
from webhooks.selectors import webhook_endpoint_get, webhook_endpoint_list, webhook_event_list
from webhooks.services import webhook_endpoint_create, webhook_endpoint_delete, webhook_endpoint_rotate_secret


class WebhookErrorSerializer(serializers.Serializer):
    code = serializers.CharField()
    detail = serializers.CharField()


class WebhookEndpointSerializer(serializers.ModelSerializer):
    events = serializers.ListField(child=serializers.ChoiceField(choices=[*EVENT_TYPES, ALL_EVENTS]))
    enabled = serializers.BooleanField(
        help_text="False once every delivery has failed for 3 days (see `disabled_reason`); the service "
        "provider re-enables it.")

    class Meta:
        model = WebhookEndpoint
        fields = ["id", "url", "events", "description", "enabled", "disabled_reason", "created_at"]
        read_only_fields = fields


class WebhookEndpointSecretSerializer(WebhookEndpointSerializer):
    secret = serializers.CharField(help_text="The signing secret (`whsec_…`). Shown in this answer only.")
    previous_secret_expires_at = serializers.DateTimeField(
        allow_null=True, help_text="After a rotation: until then the previous secret signs too (a second `v1=`).")

    class Meta(WebhookEndpointSerializer.Meta):
        fields = [*WebhookEndpointSerializer.Meta.fields, "secret", "previous_secret_expires_at"]
        read_only_fields = fields


class WebhookEndpointCreateSerializer(serializers.Serializer):
    url = serializers.CharField(max_length=2000, help_text="An https:// URL on your server.")
    events = serializers.ListField(
        child=serializers.CharField(max_length=64), min_length=1, max_length=len(EVENT_TYPES) + 1,
        help_text=f"Event types to receive: {', '.join(EVENT_TYPES)}; or [\"*\"] for all, present and future.")
    description = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")


_EVENT_DATA_SCHEMA = {
    "description": "The object as the API shows it: an Upload for `upload.*`, an Authorizer for "
    f"`authorizer.*`; for `{TEST_EVENT_TYPE}`, `endpoint_id` and `message`.",
    "oneOf": [
        {"$ref": "#/components/schemas/Upload"},
        {"$ref": "#/components/schemas/Authorizer"},
        {"type": "object", "title": "WebhookTestData",
         "properties": {"endpoint_id": {"type": "string", "format": "uuid"}, "message": {"type": "string"}},
         "required": ["endpoint_id", "message"]},
    ],
}


@extend_schema_field(_EVENT_DATA_SCHEMA)
class EventDataField(serializers.JSONField):
    pass


class WebhookEventSerializer(serializers.Serializer):
    """An event: the body of every webhook POST, and one item of `GET /api/v1/webhook-events/`."""

    id = serializers.UUIDField(help_text="Unique per event, the same on every delivery of it: dedupe by it.")
    type = serializers.ChoiceField(choices=[*EVENT_TYPES, TEST_EVENT_TYPE])
    created = serializers.DateTimeField(source="created_at")
    data = EventDataField()


_ENDPOINT_ERRORS = """
Refusals are `{"code": "...", "detail": "..."}` (400):

| code | when |
|---|---|
| `invalid_url` | not an absolute http(s) URL, or it has credentials or a fragment |
| `insecure_url` | `http://` (only `https://` is accepted, except for networks the provider allow-lists) |
| `url_not_allowed` | the host resolves to a loopback, private, link-local, multicast, reserved or metadata address |
| `url_unresolvable` | the host does not resolve |
| `invalid_events`, `unknown_event_type` | `events` is empty, not a list of strings, or names an unknown type |
| `too_many_endpoints` | 16 endpoints already |
| `invalid` | other malformed fields (see `errors`) |
"""

_DELIVERY_DOC = """
Each event is POSTed as JSON (the `WebhookEvent` schema) to every enabled endpoint that subscribes to
its type, with `Webhook-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>" keyed with
the secret>` (two `v1=` for 24 hours after a rotation) and `Webhook-Id: <event id>`. Answer 2xx within
10 seconds; anything else is retried with exponential backoff for 3 days. Delivery is at-least-once and
unordered: dedupe by the event `id`. Redirects are not followed.
"""


def _endpoint_or_404(request: Request, endpoint_id: str) -> WebhookEndpoint:
    endpoint = webhook_endpoint_get(tenant_id=request.user.tenant.pk, endpoint_id=endpoint_id)
    if endpoint is None:  # another tenant's endpoint is indistinguishable from a missing one
        raise WebhookEndpointNotFound()
    return endpoint


def _with_secret(endpoint: WebhookEndpoint, secret: str) -> dict:
    data = WebhookEndpointSerializer(endpoint).data
    data["secret"] = secret
    data["previous_secret_expires_at"] = (
        serializers.DateTimeField().to_representation(endpoint.previous_secret_expires_at)
        if endpoint.previous_secret_ciphertext else None
    )
    return data


class WebhookEndpointListCreateApi(ListAPIView):
    serializer_class = WebhookEndpointSerializer

    def get_queryset(self):
        return webhook_endpoint_list(tenant_id=self.request.user.tenant.pk)

    @extend_schema(summary="List your webhook endpoints", tags=["webhooks"])
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    @extend_schema(
        summary="Add a webhook endpoint",
        description="The answer carries the signing `secret`: store it, it is never shown again.\n"
        + _DELIVERY_DOC + _ENDPOINT_ERRORS,
        tags=["webhooks"],
        request=WebhookEndpointCreateSerializer,
        responses={201: WebhookEndpointSecretSerializer,
                   400: OpenApiResponse(WebhookErrorSerializer, description="See the table.")},
        examples=[OpenApiExample("Endpoint", request_only=True, value={
            "url": "https://merchant.example.com/hooks/wechat", "events": ["upload.succeeded", "upload.failed"]})],
    )
    def post(self, request: Request) -> Response:
        form = WebhookEndpointCreateSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        endpoint, secret = webhook_endpoint_create(
            tenant_id=request.user.tenant.pk, url=form.validated_data["url"],
            events=form.validated_data["events"], description=form.validated_data["description"],
        )
        return Response(_with_secret(endpoint, secret), status=status.HTTP_201_CREATED,
                        headers={"Location": f"/api/v1/webhook-endpoints/{endpoint.pk}/"})


_ENDPOINT_ID = OpenApiParameter("endpoint_id", OpenApiTypes.UUID, OpenApiParameter.PATH)


class WebhookEndpointDetailApi(APIView):
    @extend_schema(summary="One webhook endpoint", tags=["webhooks"], parameters=[_ENDPOINT_ID],
                   responses={200: WebhookEndpointSerializer, 404: WebhookErrorSerializer})
    def get(self, request: Request, endpoint_id: str) -> Response:
        return Response(WebhookEndpointSerializer(_endpoint_or_404(request, endpoint_id)).data)

    @extend_schema(summary="Delete a webhook endpoint", description="Its pending deliveries are dropped; events stay.",
                   tags=["webhooks"], parameters=[_ENDPOINT_ID], responses={204: None, 404: WebhookErrorSerializer})
    def delete(self, request: Request, endpoint_id: str) -> Response:
        webhook_endpoint_delete(endpoint=_endpoint_or_404(request, endpoint_id))
        return Response(status=status.HTTP_204_NO_CONTENT)


class WebhookEndpointRotateSecretApi(APIView):
    @extend_schema(
        summary="Rotate a webhook endpoint's signing secret",
        description="A new secret, shown in this answer only. The previous one keeps signing deliveries "
        "(a second `v1=` in `Webhook-Signature`) for 24 hours, so receivers can switch without losing any.",
        tags=["webhooks"], request=None, parameters=[_ENDPOINT_ID],
        responses={200: WebhookEndpointSecretSerializer, 404: WebhookErrorSerializer},
    )
    def post(self, request: Request, endpoint_id: str) -> Response:
        endpoint, secret = webhook_endpoint_rotate_secret(endpoint=_endpoint_or_404(request, endpoint_id))
        return Response(_with_secret(endpoint, secret))


class WebhookEventListApi(ListAPIView):
    serializer_class = WebhookEventSerializer

    def get_queryset(self):
        event_type = self.request.query_params.get("type") or None
        if event_type and event_type not in (*EVENT_TYPES, TEST_EVENT_TYPE):
            raise WebhookRefused("unknown_event_type", f"type must be one of {', '.join(EVENT_TYPES)}")
        return webhook_event_list(tenant_id=self.request.user.tenant.pk, type=event_type)

    @extend_schema(
        summary="List your events, newest first",
        description="Every event of the last 30 days, whether or not an endpoint received it: catch up "
        "after an outage by paging until you reach an `id` you have seen.\n" + _DELIVERY_DOC,
        tags=["webhooks"],
        parameters=[OpenApiParameter("type", OpenApiTypes.STR, enum=[*EVENT_TYPES, TEST_EVENT_TYPE])],
        responses={200: WebhookEventSerializer(many=True), 400: WebhookErrorSerializer},
    )
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)
