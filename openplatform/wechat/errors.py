"""Typed WeChat errors, chosen by errcode in one mapper (docs/wechat-protocol.md §11).

Callers catch classes; nobody compares errcodes outside this module.
"""

from __future__ import annotations

import ipaddress
import re


class WeChatError(Exception):
    """Any error answered by (or on the way to) the WeChat API."""

    errcodes: frozenset[int] = frozenset()
    #: Worth retrying the same call later without changing anything.
    retryable: bool = False

    def __init__(
        self,
        errcode: int | None = None,
        errmsg: str = "",
        *,
        http_status: int | None = None,
        path: str = "",
    ) -> None:
        self.errcode = errcode
        self.errmsg = errmsg
        self.http_status = http_status
        self.path = path
        super().__init__(self.describe())

    def describe(self) -> str:
        parts = []
        if self.path:
            parts.append(self.path)
        if self.errcode is not None:
            parts.append(f"errcode={self.errcode}")
        if self.http_status is not None:
            parts.append(f"http_status={self.http_status}")
        if self.errmsg:
            parts.append(self.errmsg)
        return " ".join(parts) or self.__class__.__name__


class TransientError(WeChatError):
    """-1 system busy, HTTP 5xx, a body that is not JSON: retry with backoff."""

    errcodes = frozenset({-1})
    retryable = True


class NetworkError(TransientError):
    """Timeout or connection failure: no answer from WeChat at all."""


class RateLimited(TransientError):
    """45011: minute quota reached; back off about a minute."""

    errcodes = frozenset({45011})


class TokenInvalid(WeChatError):
    """40001/40014/42001: the access token used is invalid or expired; refresh once, retry once."""

    errcodes = frozenset({40001, 40014, 42001})


class RefreshTokenInvalid(WeChatError):
    """61023: the authorizer_refresh_token is no longer valid (recover once, else re-authorize)."""

    errcodes = frozenset({61023})


class NotAuthorized(WeChatError):
    """61003: the account has not authorized (or has revoked) this component."""

    errcodes = frozenset({61003})


class TicketInvalid(WeChatError):
    """61005/61006: the component_verify_ticket is expired or invalid; wait for the next push."""

    errcodes = frozenset({61005, 61006})


class MissingTicket(TicketInvalid):
    """No component_verify_ticket has been received (or the newest is older than 12 h)."""

    def __init__(self, errmsg: str = "no valid component_verify_ticket stored", **kwargs) -> None:
        super().__init__(None, errmsg, **kwargs)


class QuotaExceeded(WeChatError):
    """45009: daily API quota reached; retry after the daily reset (or clear_quota)."""

    errcodes = frozenset({45009})


class ClearQuotaExhausted(WeChatError):
    """48006: clear_quota used 10 times this month."""

    errcodes = frozenset({48006})


class PermissionDenied(WeChatError):
    """The call is not allowed for this account; catch this for every kind (48001, 61007, 48004, ...).

    The subclasses say whose side lacks what, because the operator's remedy differs (see
    ``permissions.uploadimg_hint``).
    """

    errcodes = frozenset({48004, 50001, 50002})


class AccountLacksApi(PermissionDenied):
    """48001 "api unauthorized": the account itself lacks this API (unverified account, wrong account
    type, or a token of the wrong kind). Re-authorizing does not help.

    https://developers.weixin.qq.com/doc/oplatform/Third-party_Platforms/2.0/troubleshooting/third_party_authority_instructions_troubleshooting.html
    """

    errcodes = frozenset({48001})


class PermissionSetNotGranted(PermissionDenied):
    """61007 "api is unauthorized to component": the account has not granted this API's permission set
    to our platform (the merchant left it unticked, or the platform does not hold the set on the Open
    Platform console, so it was never offered). Fixed by holding the set and re-authorizing.
    """

    errcodes = frozenset({61007})


class InvalidPayload(WeChatError):
    """The uploaded media is wrong (type, size, missing or empty part)."""

    errcodes = frozenset({40005, 40009, 41005, 44001, 45001})


class AuthCodeInvalid(WeChatError):
    """A dead authorization code: final, never exchange it again; the merchant needs a new link.

    61009 "code is invalid" (unknown, already used, or another account's). Catching this class also
    catches ``AuthCodeExpired``.
    """

    errcodes = frozenset({61009})


class AuthCodeExpired(AuthCodeInvalid):
    """61010 "code is expired": the authorization code outlived its validity (about an hour)."""

    errcodes = frozenset({61010})


class AdminConfirmationRequired(WeChatError):
    """89503/89506/89507: the account admin must confirm (or has rejected) this caller's IP."""

    errcodes = frozenset({89503, 89506, 89507})


class ConfigurationError(WeChatError):
    """Our configuration is wrong: appid, appsecret, IP whitelist, component."""

    errcodes = frozenset({40013, 40125, 41004, 40164, 61004, 61011})


_ALL_CLASSES: tuple[type[WeChatError], ...] = (
    TransientError,
    RateLimited,
    TokenInvalid,
    RefreshTokenInvalid,
    NotAuthorized,
    TicketInvalid,
    QuotaExceeded,
    ClearQuotaExhausted,
    PermissionDenied,
    AccountLacksApi,
    PermissionSetNotGranted,
    InvalidPayload,
    AuthCodeInvalid,
    AuthCodeExpired,
    AdminConfirmationRequired,
    ConfigurationError,
)
_BY_ERRCODE: dict[int, type[WeChatError]] = {}
for _cls in _ALL_CLASSES:
    for _code in _cls.errcodes:
        assert _code not in _BY_ERRCODE, f"errcode {_code} mapped twice"
        _BY_ERRCODE[_code] = _cls


def error_class_for(errcode: int) -> type[WeChatError]:
    return _BY_ERRCODE.get(errcode, WeChatError)


def error_for(errcode: int, errmsg: str = "", *, http_status: int | None = None, path: str = "") -> WeChatError:
    """The one place that turns an errcode into an exception instance."""
    return error_class_for(errcode)(errcode, errmsg, http_status=http_status, path=path)


# Human-readable meaning of the errcodes an operator meets most (dashboard, admin, API errmsg).
ERRCODE_MEANINGS: dict[int, str] = {
    -1: "WeChat system busy; retried later",
    40001: "access token invalid or not the latest",
    40005: "invalid file type",
    40009: "invalid image size or format",
    40013: "invalid appid",
    40014: "invalid access token",
    40125: "invalid appsecret",
    40164: "caller IP is not on the account's IP whitelist",
    41004: "appsecret missing",
    41005: "media data missing",
    42001: "access token expired",
    44001: "empty media data",
    45001: "media size out of limit",
    45009: "daily API quota reached",
    45011: "API minute quota reached",
    48001: "API unauthorized: the account itself lacks this API (e.g. not verified), or the token is of the wrong kind",
    48004: "API banned for this account",
    48006: "clear_quota used 10 times this month",
    50001: "user not authorized for this API",
    50002: "account limited (frozen, banned or deregistered)",
    61003: "account has not authorized this component",
    61004: "caller IP is not on the component's IP whitelist",
    61005: "component_verify_ticket expired",
    61006: "component_verify_ticket invalid",
    61007: "API unauthorized to component: the account has not granted this API's permission set to our platform",
    61009: "authorization code invalid or already used",
    61010: "authorization code expired",
    61011: "invalid component",
    61023: "authorizer refresh token invalid",
    89503: "account admin must confirm this call's IP",
    89506: "account admin rejected this IP (retry after 24 h)",
    89507: "account admin rejected this IP (retry after 1 h)",
}


# -- what a tenant may read of an errmsg --------------------------------------------------------------------

#: Candidate IPv6 text: hex digits, colons and dots (an embedded IPv4) with two colons at least, not part of
#: a longer word. Each candidate is kept only if it parses as an address, so "10:30:00" stays.
_IPV6_CANDIDATE = re.compile(r"(?<![\w:.])(?=[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*:)[0-9A-Fa-f:.]+(?:%\w+)?(?![\w:])")
_IPV4 = re.compile(r"(?<![\w.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?![\w.])")
ADDRESS_PLACEHOLDER = "[address]"


def _ipv6_or_keep(match: re.Match) -> str:
    text = match.group(0)
    try:
        ipaddress.IPv6Address(text.split("%", 1)[0].rstrip("."))
    except ValueError:
        return text
    return ADDRESS_PLACEHOLDER + ("." if text.endswith(".") else "")


def without_addresses(errmsg: str) -> str:
    """`errmsg` with every IPv4 and IPv6 address replaced by "[address]".

    WeChat names the caller's address in some errmsgs (40164 "invalid ip 1.2.3.4 ipv6 ::ffff:1.2.3.4,
    not in whitelist", 61004 "... requestIP: 1.2.3.4"; docs/wechat-protocol.md §11): our servers'
    addresses, which are not the tenants' to read. Operators read the full text (the attempt records,
    the admin); tenants read this (the API, webhooks).
    """
    if not errmsg:
        return errmsg
    return _IPV4.sub(ADDRESS_PLACEHOLDER, _IPV6_CANDIDATE.sub(_ipv6_or_keep, errmsg))
