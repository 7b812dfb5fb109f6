"""OpenAPI: refusals documented from their classes, and the shared refusals added to every operation."""

from __future__ import annotations

from collections.abc import Iterable

from drf_spectacular.utils import OpenApiResponse

from openplatform.core.api import ApiError, ErrorSerializer

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

#: The rows every operation's table ends with: DRF's own refusals (status, code, when).
_COMMON_ROWS = (
    (400, "`invalid`", "other malformed fields (see `errors`)"),
    (400, "`parse_error` / `too_many_fields`", "the body cannot be parsed, or has far more parts than any operation takes"),
    (401, "`authentication_failed` / `not_authenticated`", "missing, invalid or revoked API key"),
    (403, "`permission_denied`", "the merchant account is disabled"),
    (429, "`throttled`", "too many requests"),
)


def _when(refusal: type[ApiError]) -> str:
    """The first line of the class docstring, as a table cell."""
    lines = (refusal.__doc__ or "").strip().splitlines()
    when = lines[0].rstrip(".").replace("|", "\\|") if lines else ""
    return when[:1].lower() + when[1:]


def refusal_table(refusals: Iterable[type[ApiError]]) -> str:
    """An operation's refusals as a markdown table, from the classes (status, code, docstring)."""
    rows = [(r.status, f"`{r.code}`", _when(r)) for r in dict.fromkeys(refusals)]
    lines = ['Refusals are `{"code": "...", "detail": "..."}`:', "", "| status | code | when |", "|---|---|---|"]
    lines += [f"| {status} | {code} | {when} |" for status, code, when in [*rows, *_COMMON_ROWS]]
    return "\n".join(lines) + "\n"


def refusal_responses(refusals: Iterable[type[ApiError]]) -> dict[int, OpenApiResponse]:
    """`extend_schema(responses=...)` entries for the refusals: one per status, saying when each code is."""
    by_status: dict[int, list[str]] = {}
    for refusal in dict.fromkeys(refusals):
        by_status.setdefault(refusal.status, []).append(f"`{refusal.code}`: {_when(refusal)}")
    return {
        status: OpenApiResponse(ErrorSerializer, description="; ".join(lines) + ".")
        for status, lines in sorted(by_status.items())
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
