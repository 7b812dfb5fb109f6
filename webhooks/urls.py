from django.urls import path

from webhooks.api import (
    WebhookEndpointDetailApi,
    WebhookEndpointListCreateApi,
    WebhookEndpointRotateSecretApi,
    WebhookEventListApi,
)

urlpatterns = [
    path("webhook-endpoints/", WebhookEndpointListCreateApi.as_view(), name="webhook-endpoint-list"),
    path("webhook-endpoints/<str:endpoint_id>/", WebhookEndpointDetailApi.as_view(), name="webhook-endpoint-detail"),
    path("webhook-endpoints/<str:endpoint_id>/rotate-secret/", WebhookEndpointRotateSecretApi.as_view(),
         name="webhook-endpoint-rotate-secret"),
    path("webhook-events/", WebhookEventListApi.as_view(), name="webhook-event-list"),
]
