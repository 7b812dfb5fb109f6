"""The merchant REST API's one error shape, the refusal base class, and the handler that renders both.

Every refused request is `{"code": "...", "detail": "..."}` with a 4xx status (a 5xx when an outside
service failed). A refusal is a subclass of `ApiError` with its `code` and `status` on the class, raised
where the rule lives (a service, a serializer); API views let it propagate and `api_exception_handler`
renders it. Callers outside the API (admin actions, commands, HTML pages) catch the same classes and
show `detail`.
"""

from __future__ import annotations

from typing import ClassVar

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation, TooManyFieldsSent, TooManyFilesSent
from django.http import Http404
from rest_framework import exceptions, serializers
from rest_framework.pagination import PageNumberPagination
from rest_framework.response import Response
from rest_framework.views import exception_handler, set_rollback

from openplatform.wechat.errors import without_addresses


class ApiError(Exception):
    """A refusal with a stable `code` and an HTTP `status`, both set on each subclass::

        class ImageTooLarge(UploadRefused):
            code = "image_too_large"
            status = 413

    `detail` is the message for the client: the one given, else `default_detail`, else the docstring.
    """

    code: ClassVar[str] = "error"
    status: ClassVar[int] = 400
    default_detail: ClassVar[str] = ""

    def __init__(self, detail: str = "") -> None:
        self.detail = detail or self.default_detail or (self.__doc__ or "").strip() or self.code
        super().__init__(self.detail)


class RequestTooLarge(ApiError):
    """The request body is over what Django reads into memory."""

    # The API's only large body is an upload's image, so the code is the one uploads answer with.
    code = "image_too_large"
    status = 413
    default_detail = "The request body is larger than the 1 MB image limit allows."


class TooManyFields(ApiError):
    """Far more form fields or files than any operation takes."""

    code = "too_many_fields"
    default_detail = "The request has far more form fields or files than this API takes."


class MalformedBody(ApiError):
    """Django's multipart parser refused the body."""

    code = "parse_error"
    default_detail = "The request body could not be parsed."


class InvalidPage(ApiError):
    """`page` is not a page number."""

    code = "invalid_page"
    default_detail = "page must be a whole number from 1 (or 'last')."


def is_clean_text(value: str, *, max_length: int) -> bool:
    """Whether `value` can be a text parameter at all: at most `max_length` characters, no NUL or other
    control character (PostgreSQL refuses NUL in text), no lone surrogate (it cannot be encoded to UTF-8,
    for the database or in a JSON answer) and no U+FFFD (what Django makes of bytes that are not UTF-8)."""
    return len(value) <= max_length and value.isprintable() and "\ufffd" not in value


class ApiPagination(PageNumberPagination):
    """DRF's page-number pagination; a `page` that is not a number is a 400 `invalid_page` (DRF answers
    404 for it, as for a page past the end, which stays a 404)."""

    def get_page_number(self, request, paginator):
        number = request.query_params.get(self.page_query_param) or 1
        if isinstance(number, str) and number not in self.last_page_strings and not (
            number.isascii() and number.isdigit() and 0 < len(number) <= 9 and int(number) > 0
        ):
            raise InvalidPage()
        return number


class ErrorSerializer(serializers.Serializer):
    """The shape of every refusal, for the OpenAPI document."""

    code = serializers.CharField()
    detail = serializers.CharField()


class RefusingSerializer(serializers.Serializer):
    """A serializer whose field failures become typed refusals instead of DRF's generic `invalid`.

    `refusals` maps (field name, DRF error code) to the refusal class, e.g.
    `{("media", "required"): MissingMedia}`. The first failing field decides; a failure the map does not
    name stays DRF's ValidationError (code `invalid`, with per-field `errors`). Validation methods may also
    raise a refusal themselves.
    """

    refusals: ClassVar[dict[tuple[str, str], type[ApiError]]] = {}

    def to_internal_value(self, data):
        try:
            return super().to_internal_value(data)
        except serializers.ValidationError as exc:
            if isinstance(exc.detail, dict) and exc.detail:
                field, details = next(iter(exc.detail.items()))
                code = getattr(details[0], "code", None) if isinstance(details, list) and details else None
                refusal = self.refusals.get((field, code))
                if refusal is not None:
                    raise refusal() from None
            raise


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


def _translate(exc: Exception) -> Exception:
    """Django's own refusals of a request, as the API's: a JSON 4xx like every other, not an HTML page."""
    if isinstance(exc, RequestDataTooBig):
        return RequestTooLarge()
    if isinstance(exc, TooManyFieldsSent | TooManyFilesSent):
        return TooManyFields()
    if isinstance(exc, SuspiciousOperation):
        return MalformedBody()
    # DRF turns these two into its own exceptions internally; do it here so they get their codes.
    if isinstance(exc, Http404):
        return exceptions.NotFound()
    if isinstance(exc, DjangoPermissionDenied):
        return exceptions.PermissionDenied()
    return exc


def api_exception_handler(exc, context) -> Response | None:
    exc = _translate(exc)
    if isinstance(exc, ApiError):
        set_rollback()
        # A refusal may quote WeChat (503 wechat_unavailable), whose errmsg can name our servers' addresses.
        return Response({"code": exc.code, "detail": without_addresses(exc.detail)}, status=exc.status)
    response = exception_handler(exc, context)
    if response is None:
        return None
    code = next((c for cls, c in _DEFAULT_CODES.items() if isinstance(exc, cls)), "error")
    if isinstance(exc, exceptions.ValidationError):
        response.data = {"code": code, "detail": "Invalid request.", "errors": response.data}
    else:
        detail = response.data.get("detail", str(exc)) if isinstance(response.data, dict) else str(exc)
        response.data = {"code": code, "detail": str(detail)}
    return response
