"""OpenAPI post-processing: every merchant operation documents the shared refusals."""

from __future__ import annotations

_ERROR_SCHEMA = {
    "type": "object",
    "properties": {
        "code": {"type": "string", "description": "A stable machine-readable code."},
        "detail": {"type": "string"},
        "errors": {"type": "object", "description": "Per-field problems (code `invalid` only)."},
    },
    "required": ["code", "detail"],
}

_COMMON = {
    "400": "Bad request (`invalid`, or an operation-specific code).",
    "401": "`not_authenticated` or `authentication_failed`: missing, invalid, revoked or expired API key.",
    "403": "`permission_denied`: the merchant account is disabled.",
    "404": "`not_found`.",
    "405": "`method_not_allowed`.",
    "406": "`not_acceptable`.",
    "415": "`unsupported_media_type`.",
    "429": "`throttled`: too many requests for this merchant; retry after `Retry-After` seconds.",
}


def add_common_error_responses(result, generator, request, public):
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = _ERROR_SCHEMA
    ref = {"$ref": "#/components/schemas/Error"}
    for path, operations in result.get("paths", {}).items():
        if not path.startswith("/api/v1/"):
            continue
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            for status, description in _COMMON.items():
                responses.setdefault(status, {"description": description, "content": {"application/json": {"schema": ref}}})
    return result
