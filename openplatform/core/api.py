"""The merchant REST API's one error shape and the exception handler that produces it.

Every refused request is `{"code": "...", "detail": "..."}` with a 4xx status.
"""

from __future__ import annotations

from django.core.exceptions import RequestDataTooBig, SuspiciousOperation, TooManyFieldsSent, TooManyFilesSent
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response


class ApiError(exceptions.APIException):
    """An API refusal with a stable code: `raise ApiError("image_too_large", "...", status=413)`."""

    def __init__(self, code: str, detail: str, *, status_code: int = status.HTTP_400_BAD_REQUEST) -> None:
        super().__init__(detail=detail, code=code)
        self.status_code = status_code
        self.error_code = code


_DEFAULT_CODES = {
    exceptions.NotAuthenticated: "not_authenticated",
    exceptions.AuthenticationFailed: "authentication_failed",
    exceptions.PermissionDenied: "permission_denied",
    exceptions.NotFound: "not_found",
    Http404: "not_found",  # DRF answers it as NotFound (e.g. an unknown ?format=): the same code
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
