"""Refusals with a stable code, shown to merchants as `{"code": ..., "detail": ...}` (the API's one
error base, openplatform.core.api.ApiError)."""

from __future__ import annotations

from openplatform.core.api import ApiError


class WebhookRefused(ApiError):
    """A webhook endpoint or filter the API does not take; `code` says which rule (invalid_url, ...)."""

    status = 400

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code


class WebhookEndpointNotFound(ApiError):
    """No such webhook endpoint."""

    code = "not_found"
    status = 404
