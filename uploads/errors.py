"""Refusals of the uploads app, each with a stable `code` the API returns as is."""

from __future__ import annotations


class UploadRefused(Exception):
    def __init__(self, code: str, detail: str, status_code: int = 400) -> None:
        super().__init__(detail)
        self.code, self.detail, self.status_code = code, detail, status_code
