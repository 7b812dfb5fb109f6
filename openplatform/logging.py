"""Log filter and formatters: structured lines, secrets redacted.

Our code never puts a secret in a log record on purpose; this is the second line of defence for
third-party messages (urllib3 printing a URL with `access_token=` in its query, an access log line
with the `auth_code` and `state` WeChat appends to our redirect URL, a traceback quoting either).
The filter redacts the message; the formatters redact the whole formatted line, traceback included,
so every format (plain, JSON, runserver's and gunicorn's access logs) is covered.
"""

from __future__ import annotations

import json
import logging
import re

_SECRET_NAMES = (
    "access_token",
    "component_access_token",
    "authorizer_access_token",
    "authorizer_refresh_token",
    "refresh_token",
    "component_appsecret",
    "component_secret",
    "appsecret",
    "secret",
    "component_verify_ticket",
    "ComponentVerifyTicket",
    "api_key",
    "Api-Key",
    "password",
    # The redirect back from WeChat's authorization page (docs/wechat-protocol.md §5, §6): the code is
    # exchangeable for tokens for up to an hour, and the signed `state` binds an account to a tenant.
    "auth_code",
    "authorization_code",
    "AuthorizationCode",
    "pre_auth_code",
    "PreAuthCode",
    "state",
    "ticket",
)
_NAMES = "|".join(re.escape(n) for n in sorted(_SECRET_NAMES, key=len, reverse=True))
# key=value (query strings, forms), "key": "value" (JSON), Api-Key header values.
_PATTERNS = [
    re.compile(rf"(?P<k>\b(?:{_NAMES}))=(?P<v>[^&\s\"']+)"),
    re.compile(rf"(?P<k>\"(?:{_NAMES})\"\s*:\s*)\"(?P<v>[^\"]*)\""),
    re.compile(r"(?P<k>Api-Key\s+)(?P<v>[A-Za-z0-9._-]+)"),
    re.compile(r"(?P<k>Bearer\s+)(?P<v>[A-Za-z0-9._~+/=-]+)"),
    # Decrypted push XML: <AuthorizationCode>...</AuthorizationCode>, <ComponentVerifyTicket>...
    re.compile(rf"(?P<k><(?:{_NAMES})>(?:<!\[CDATA\[)?)(?P<v>[^<\]]+)"),
]


def redact(text: str) -> str:
    for pattern in _PATTERNS:
        text = pattern.sub(lambda m: m.group(0).replace(m.group("v"), "[redacted]") if m.group("v") else m.group(0), text)
    return text


class RedactSecretsFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string must not lose the record
            return True
        redacted = redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


class RedactingFormatter(logging.Formatter):
    """The plain line format, redacted as a whole: the message, `extra` rendered in it, and the traceback."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


_STANDARD_ATTRS = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line with the record's `extra` fields (LOG_JSON=1)."""

    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                payload[key] = value if isinstance(value, str | int | float | bool | None) else str(value)
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return redact(json.dumps(payload, ensure_ascii=False))
