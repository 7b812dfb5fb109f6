"""Merchant REST API glue: API-key authentication, tenant throttling, and one error shape.

Every refused request is `{"code": "...", "detail": "..."}` with a 4xx status.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from django.core.exceptions import RequestDataTooBig, SuspiciousOperation, TooManyFieldsSent, TooManyFilesSent
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import exceptions, status
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import SimpleRateThrottle

from tenants.models import Tenant, TenantAPIKey


class ApiError(exceptions.APIException):
    """An API refusal with a stable code: `raise ApiError("image_too_large", "...", status=413)`."""

    def __init__(self, code: str, detail: str, *, status_code: int = status.HTTP_400_BAD_REQUEST) -> None:
        super().__init__(detail=detail, code=code)
        self.status_code = status_code
        self.error_code = code


@dataclass(frozen=True)
class TenantPrincipal:
    """request.user for an API-key request."""

    tenant: Tenant
    api_key: TenantAPIKey
    is_authenticated: bool = True
    is_anonymous: bool = False

    @property
    def pk(self) -> str:
        return f"tenant:{self.tenant.pk}"


#: What djangorestframework-api-key issues: an 8-character prefix, a dot, a 32-character secret.
#: Anything else is refused before it reaches the database (a NUL byte would make PostgreSQL raise).
_KEY_SHAPE = re.compile(r"[A-Za-z0-9]{1,16}\.[A-Za-z0-9]{1,128}")


class TenantAPIKeyAuthentication(BaseAuthentication):
    """`Authorization: Api-Key <key>`; keys are stored hashed (djangorestframework-api-key)."""

    keyword = b"api-key"

    def authenticate(self, request: Request):
        parts = get_authorization_header(request).split()
        if not parts or parts[0].lower() != self.keyword:
            return None
        if len(parts) != 2:
            raise exceptions.AuthenticationFailed("Malformed Authorization header: use 'Api-Key <key>'.")
        try:
            key = parts[1].decode("ascii")
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("Invalid API key.") from None
        if not _KEY_SHAPE.fullmatch(key):
            raise exceptions.AuthenticationFailed("Invalid API key.")
        prefix = key.partition(".")[0]
        api_key = TenantAPIKey.objects.select_related("tenant").filter(prefix=prefix).first()
        # The stored hash is checked in constant time by the library; an unknown prefix is the same 401.
        if api_key is None or not api_key.is_valid(key):
            raise exceptions.AuthenticationFailed("Invalid API key.")
        if api_key.revoked or api_key.has_expired:
            raise exceptions.AuthenticationFailed("This API key has been revoked or has expired.")
        if not api_key.tenant.is_active:
            raise exceptions.PermissionDenied("This merchant account is disabled.")
        return TenantPrincipal(tenant=api_key.tenant, api_key=api_key), api_key

    def authenticate_header(self, request: Request) -> str:
        return "Api-Key"


class TenantAPIKeyScheme(OpenApiAuthenticationExtension):
    target_class = "openplatform.api.TenantAPIKeyAuthentication"
    name = "ApiKeyAuth"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": "`Api-Key <your key>` (keys are issued by the service provider and shown once).",
        }


class TenantRateThrottle(SimpleRateThrottle):
    """Per-tenant request rate (all of a tenant's keys share it)."""

    scope = "tenant"

    def get_cache_key(self, request, view):
        user = getattr(request, "user", None)
        if not isinstance(user, TenantPrincipal):
            return None
        return self.cache_format % {"scope": self.scope, "ident": user.tenant.pk}


_DEFAULT_CODES = {
    exceptions.NotAuthenticated: "not_authenticated",
    exceptions.AuthenticationFailed: "authentication_failed",
    exceptions.PermissionDenied: "permission_denied",
    exceptions.NotFound: "not_found",
    exceptions.MethodNotAllowed: "method_not_allowed",
    exceptions.NotAcceptable: "not_acceptable",
    exceptions.UnsupportedMediaType: "unsupported_media_type",
    exceptions.Throttled: "throttled",
    exceptions.ParseError: "parse_error",
    exceptions.ValidationError: "invalid",
}


def api_exception_handler(exc, context) -> Response | None:
    from rest_framework.views import exception_handler

    if isinstance(exc, RequestDataTooBig):
        exc = ApiError("image_too_large", "The request body is larger than the 1 MB image limit allows.",
                       status_code=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)
    elif isinstance(exc, TooManyFieldsSent | TooManyFilesSent):
        exc = ApiError("too_many_fields", "The request has far more form fields or files than this API takes.")
    elif isinstance(exc, SuspiciousOperation):
        # Django's multipart parser refusing the body: a JSON 400 like every other refusal, not its HTML page.
        exc = ApiError("parse_error", "The request body could not be parsed.")
    response = exception_handler(exc, context)
    if response is None:
        return None
    code = getattr(exc, "error_code", None)
    if code is None:
        code = next((c for cls, c in _DEFAULT_CODES.items() if isinstance(exc, cls)), "error")
    if isinstance(exc, exceptions.ValidationError):
        response.data = {"code": code, "detail": "Invalid request.", "errors": response.data}
    else:
        detail = response.data.get("detail", str(exc)) if isinstance(response.data, dict) else str(exc)
        response.data = {"code": code, "detail": str(detail)}
    return response
