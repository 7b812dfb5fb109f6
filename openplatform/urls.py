from django.conf import settings
from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from openplatform.ops import health, metrics
from tenants import views_wechat
from tenants.api import AuthorizationLinkApi, AuthorizerListApi

api_v1 = [
    path("authorizers/", AuthorizerListApi.as_view(), name="authorizer-list"),
    path("authorization-links/", AuthorizationLinkApi.as_view(), name="authorization-link-create"),
    path("", include("uploads.urls")),
    path("", include("webhooks.urls")),
]

urlpatterns = [
    path("wechat/component/events/", views_wechat.component_events, name="wechat-component-events"),
    path("wechat/component/authorized/", views_wechat.authorized_redirect, name="wechat-component-authorized"),
    path("wechat/authorizers/<str:appid>/events/", views_wechat.authorizer_events, name="wechat-authorizer-events"),
    path("healthz", health.healthz, name="healthz"),
    path("favicon.ico", health.favicon, name="favicon"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", metrics.metrics_view, name="metrics"),
    path("api/v1/", include(api_v1)),
    path("api/schema/", SpectacularAPIView.as_view(authentication_classes=[], permission_classes=[]), name="schema"),
    # The split view serves Swagger UI's init script from /api/docs/?script, not inline: the
    # Content-Security-Policy allows scripts from files of this origin only (settings.py).
    path(
        "api/docs/",
        SpectacularSwaggerSplitView.as_view(url_name="schema", template_name="ops/swagger_ui.html",
                                            authentication_classes=[], permission_classes=[]),
        name="api-docs",
    ),
    path(settings.ADMIN_URL, admin.site.urls),
]

handler404 = "openplatform.ops.health.not_found"
