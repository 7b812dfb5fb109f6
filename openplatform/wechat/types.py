"""Typed results of the WeChat client, and the defensive parsers that build them from response JSON.

Token fields are excluded from ``repr`` so a result that ends up in a log or a traceback shows no secret.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class MalformedResponse(Exception):
    """A successful-looking answer lacks a field we need; the client turns it into a WeChatError."""


@dataclass(frozen=True)
class ComponentToken:
    access_token: str = field(repr=False)
    expires_in: int


@dataclass(frozen=True)
class PreAuthCode:
    pre_auth_code: str = field(repr=False)
    expires_in: int


@dataclass(frozen=True)
class AuthorizationInfo:
    authorizer_appid: str
    #: Absent when the account granted no API permission set (docs/wechat-protocol.md §6).
    authorizer_access_token: str | None = field(repr=False)
    expires_in: int
    authorizer_refresh_token: str = field(repr=False)
    func_info: list[int]


@dataclass(frozen=True)
class AuthorizerToken:
    access_token: str = field(repr=False)
    expires_in: int
    #: Always persist what comes back, overwriting the stored one (docs/wechat-protocol.md §7).
    refresh_token: str | None = field(repr=False)


@dataclass(frozen=True)
class AuthorizerInfo:
    appid: str
    nick_name: str
    user_name: str
    principal_name: str
    head_img: str
    #: "mini_program" when authorizer_info has MiniProgramInfo, else "official_account".
    account_type: str
    service_type: int | None
    verify_type: int | None
    account_status: int | None
    refresh_token: str | None = field(repr=False)
    func_info: list[int]
    #: The response as received, minus the refresh token (which is in ``refresh_token``).
    raw: dict = field(repr=False)


@dataclass(frozen=True)
class AuthorizerListItem:
    appid: str
    #: Absent when the account authorized but the code was never exchanged (docs/wechat-protocol.md §8).
    refresh_token: str | None = field(repr=False)
    auth_time: int | None


@dataclass(frozen=True)
class AuthorizerListPage:
    total_count: int
    items: list[AuthorizerListItem]


@dataclass(frozen=True)
class UploadResult:
    url: str
    http_status: int
    latency_ms: float


@dataclass(frozen=True)
class Quota:
    daily_limit: int
    used: int
    remain: int


@dataclass(frozen=True)
class AccessToken:
    access_token: str = field(repr=False)
    expires_in: int


# --- parsing helpers -------------------------------------------------------------------------------


def _dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _int_or_none(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _required_str(data: dict, key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise MalformedResponse(f"no {key} in response")
    return value


def _expires_in(data: dict, default: int = 7200) -> int:
    value = _int_or_none(data.get("expires_in"))
    return default if value is None else value


def parse_func_info(entries: Any) -> list[int]:
    """``[{"funcscope_category": {"id": 11}}, ...]`` -> ``[11, ...]``; skips entries of any other shape."""
    ids: list[int] = []
    for entry in entries if isinstance(entries, list) else []:
        set_id = _int_or_none(_dict(_dict(entry).get("funcscope_category")).get("id"))
        if set_id is not None and set_id not in ids:
            ids.append(set_id)
    return ids


def parse_component_token(data: dict) -> ComponentToken:
    return ComponentToken(
        access_token=_required_str(data, "component_access_token"), expires_in=_expires_in(data)
    )


def parse_pre_auth_code(data: dict) -> PreAuthCode:
    return PreAuthCode(pre_auth_code=_required_str(data, "pre_auth_code"), expires_in=_expires_in(data, 600))


def parse_authorization_info(data: dict) -> AuthorizationInfo:
    info = data.get("authorization_info")
    if not isinstance(info, dict):
        raise MalformedResponse("no authorization_info in response")
    return AuthorizationInfo(
        authorizer_appid=_required_str(info, "authorizer_appid"),
        authorizer_access_token=_str_or_none(info.get("authorizer_access_token")),
        expires_in=_expires_in(info),
        authorizer_refresh_token=_required_str(info, "authorizer_refresh_token"),
        func_info=parse_func_info(info.get("func_info")),
    )


def parse_authorizer_token(data: dict) -> AuthorizerToken:
    return AuthorizerToken(
        access_token=_required_str(data, "authorizer_access_token"),
        expires_in=_expires_in(data),
        refresh_token=_str_or_none(data.get("authorizer_refresh_token")),
    )


def parse_authorizer_info(data: dict, *, requested_appid: str) -> AuthorizerInfo:
    """authorization_info may be missing; the 2015 shape had ``authorization_info.appid`` (docs/wechat-protocol.md §8)."""
    info = _dict(data.get("authorizer_info"))
    authorization = _dict(data.get("authorization_info"))
    appid = (
        _str_or_none(authorization.get("authorizer_appid"))
        or _str_or_none(authorization.get("appid"))
        or requested_appid
    )
    raw = dict(data)
    if "authorizer_refresh_token" in authorization:
        raw["authorization_info"] = {
            k: v for k, v in authorization.items() if k != "authorizer_refresh_token"
        }
    return AuthorizerInfo(
        appid=appid,
        nick_name=_str(info.get("nick_name")),
        user_name=_str(info.get("user_name")),
        principal_name=_str(info.get("principal_name")),
        head_img=_str(info.get("head_img")),
        account_type="mini_program" if "MiniProgramInfo" in info else "official_account",
        service_type=_int_or_none(_dict(info.get("service_type_info")).get("id")),
        verify_type=_int_or_none(_dict(info.get("verify_type_info")).get("id")),
        account_status=_int_or_none(info.get("account_status")),
        refresh_token=_str_or_none(authorization.get("authorizer_refresh_token")),
        func_info=parse_func_info(authorization.get("func_info")),
        raw=raw,
    )


def parse_authorizer_list_page(data: dict) -> AuthorizerListPage:
    """The key is ``refresh_token`` (not authorizer_refresh_token) and may be absent (docs/wechat-protocol.md §8)."""
    entries = data.get("list")
    items = [
        AuthorizerListItem(
            appid=entry["authorizer_appid"],
            refresh_token=_str_or_none(entry.get("refresh_token")),
            auth_time=_int_or_none(entry.get("auth_time")),
        )
        for entry in (entries if isinstance(entries, list) else [])
        if isinstance(entry, dict) and _str_or_none(entry.get("authorizer_appid"))
    ]
    total_count = _int_or_none(data.get("total_count"))
    if total_count is None:
        raise MalformedResponse("no total_count in response")
    return AuthorizerListPage(total_count=total_count, items=items)


def parse_quota(data: dict) -> Quota:
    quota = data.get("quota")
    if not isinstance(quota, dict):
        raise MalformedResponse("no quota in response")
    return Quota(
        daily_limit=_int_or_none(quota.get("daily_limit")) or 0,
        used=_int_or_none(quota.get("used")) or 0,
        remain=_int_or_none(quota.get("remain")) or 0,
    )


def parse_access_token(data: dict) -> AccessToken:
    return AccessToken(access_token=_required_str(data, "access_token"), expires_in=_expires_in(data))


def parse_upload_url(data: dict) -> str:
    """Success is ``url`` present and errcode absent or 0 (the client already raised on a nonzero errcode)."""
    return _required_str(data, "url")


def parse_nothing(data: dict) -> None:
    return None
