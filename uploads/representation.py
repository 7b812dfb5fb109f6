"""An upload as its tenant sees it (the API's answers and the webhooks' `data`), built by hand.

The same JSON as the field-by-field UploadSerializer of uploads/api.py, which stays the schema's
description of it (OpenAPI) and is checked against this function in tests/test_upload_cost.py.
Building the dict directly costs a few microseconds; the serializer's field machinery cost about 1 ms
per upload on the accept path and again in the webhook event (docs/architecture.md §7, "Cost").
"""

from __future__ import annotations

import json
from datetime import datetime

from django.utils import timezone

from openplatform.wechat.errors import without_addresses
from uploads.models import Upload


def _datetime(value: datetime | None) -> str | None:
    """What DRF's DateTimeField renders: ISO 8601 in the current time zone, UTC written as `Z`."""
    if value is None:
        return None
    if timezone.is_aware(value):
        value = value.astimezone(timezone.get_current_timezone())
    text = value.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def _ints(values) -> list[int]:
    return [int(v) for v in values or []]


def upload_json(upload: Upload) -> dict:
    """The upload's representation (its authorizer loaded)."""
    reused_from = upload.reused_from_id
    return {
        "id": str(upload.pk),
        "status": upload.status,
        "authorizer_appid": upload.authorizer.appid,
        "url": upload.url,
        "errcode": upload.errcode,
        "errmsg": without_addresses(upload.errmsg),
        "permission_check": {
            "required_any_of": _ints(upload.permission_required),
            "granted": _ints(upload.permission_granted),
            "passed": upload.permission_passed,
        },
        "attempts": upload.attempts,
        "size": upload.size,
        "original_size": upload.original_size,
        "fitted": upload.fitted,
        "content_type": upload.content_type,
        "width": upload.width,
        "height": upload.height,
        "sha256": upload.sha256,
        "created_at": _datetime(upload.created_at),
        "started_at": _datetime(upload.started_at),
        "finished_at": _datetime(upload.finished_at),
        "reused_from": str(reused_from) if reused_from is not None else None,
    }


def json_bytes(data) -> bytes:
    """What DRF's JSONRenderer writes (compact, UTF-8, U+2028/U+2029 escaped for JavaScript)."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029").encode()
