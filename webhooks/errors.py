"""Refusals with a stable code, shown to merchants as `{"code": ..., "detail": ...}` (400)."""

from __future__ import annotations


class WebhookRefused(Exception):
    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
