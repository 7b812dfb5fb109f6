"""Authorization links a merchant's administrator opens to authorize our platform (docs/wechat-protocol.md §5).

Pure functions: they build URLs from a pre_auth_code the caller already holds; no HTTP, no settings.

- PC (scan a QR code): ``{mp_base}/cgi-bin/componentloginpage?component_appid=&pre_auth_code=&redirect_uri=
  &auth_type=&biz_appid=&category_id_list=``
- Mobile (opened inside WeChat): ``{open_base}/wxaopen/safe/bindcomponent?action=bindcomponent&no_scan=1
  &component_appid=&pre_auth_code=&redirect_uri=&auth_type=&biz_appid=&category_id_list=#wechat_redirect``

``category_id_list`` asks for specific permission sets, ids joined by "|" (e.g. ``11`` or ``11|18``);
without it the page offers every set the platform has published. Sources:
https://developers.weixin.qq.com/doc/oplatform/Third-party_Platforms/2.0/api/Before_Develop/Authorization_Process_Technical_Description.html
and docs/wechat-notes.md ("Mobile authorization link").
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlencode

DEFAULT_MP_BASE = "https://mp.weixin.qq.com"
DEFAULT_OPEN_BASE = "https://open.weixin.qq.com"
PC_AUTHORIZATION_PATH = "/cgi-bin/componentloginpage"
MOBILE_AUTHORIZATION_PATH = "/wxaopen/safe/bindcomponent"
CATEGORY_ID_SEPARATOR = "|"


def format_category_id_list(set_ids: Iterable[int]) -> str:
    """``[11, 18]`` -> ``"11|18"``; order kept, duplicates dropped; ids must be positive integers."""
    ids: list[int] = []
    for set_id in set_ids:
        if isinstance(set_id, bool) or not isinstance(set_id, int) or set_id <= 0:
            raise ValueError(f"permission-set ids must be positive integers, got {set_id!r}")
        if set_id not in ids:
            ids.append(set_id)
    return CATEGORY_ID_SEPARATOR.join(str(i) for i in ids)


def parse_category_id_list(value: str) -> list[int]:
    """``"11|18"`` -> ``[11, 18]``; raises ValueError on anything else (the simulator's page uses it)."""
    parts = value.split(CATEGORY_ID_SEPARATOR)
    if not all(p.isascii() and p.isdigit() and int(p) > 0 for p in parts):
        raise ValueError(f"category_id_list must be positive ids joined by {CATEGORY_ID_SEPARATOR!r}")
    return list(dict.fromkeys(int(p) for p in parts))


def _query(
    *,
    component_appid: str,
    pre_auth_code: str,
    redirect_uri: str,
    auth_type: int | None,
    biz_appid: str | None,
    category_id_list: Iterable[int] | None,
) -> list[tuple[str, str]]:
    for name, value in (
        ("component_appid", component_appid),
        ("pre_auth_code", pre_auth_code),
        ("redirect_uri", redirect_uri),
    ):
        if not isinstance(value, str) or not value:
            raise ValueError(f"{name} must be a non-empty string")
    if auth_type is not None and (
        isinstance(auth_type, bool) or not isinstance(auth_type, int) or auth_type < 1
    ):
        raise ValueError("auth_type must be a positive integer (1 accounts, 2 Mini Programs, 3 both)")
    query = [
        ("component_appid", component_appid),
        ("pre_auth_code", pre_auth_code),
        ("redirect_uri", redirect_uri),
    ]
    if auth_type is not None:
        query.append(("auth_type", str(auth_type)))
    if biz_appid:
        query.append(("biz_appid", biz_appid))
    categories = format_category_id_list(category_id_list or ())
    if categories:
        query.append(("category_id_list", categories))
    return query


def pc_authorization_url(
    *,
    mp_base: str = DEFAULT_MP_BASE,
    component_appid: str,
    pre_auth_code: str,
    redirect_uri: str,
    auth_type: int | None = None,
    biz_appid: str | None = None,
    category_id_list: Iterable[int] | None = None,
) -> str:
    """The PC authorization page (the administrator scans a QR code shown there)."""
    query = _query(
        component_appid=component_appid,
        pre_auth_code=pre_auth_code,
        redirect_uri=redirect_uri,
        auth_type=auth_type,
        biz_appid=biz_appid,
        category_id_list=category_id_list,
    )
    return f"{mp_base.rstrip('/')}{PC_AUTHORIZATION_PATH}?{urlencode(query)}"


def mobile_authorization_url(
    *,
    open_base: str = DEFAULT_OPEN_BASE,
    component_appid: str,
    pre_auth_code: str,
    redirect_uri: str,
    auth_type: int | None = None,
    biz_appid: str | None = None,
    category_id_list: Iterable[int] | None = None,
) -> str:
    """The mobile authorization page on open.weixin.qq.com, which SDKs label the new H5 link; the older
    mp.weixin.qq.com/safe/bindcomponent still appears in some SDKs (docs/wechat-notes.md)."""
    query = [("action", "bindcomponent"), ("no_scan", "1")] + _query(
        component_appid=component_appid,
        pre_auth_code=pre_auth_code,
        redirect_uri=redirect_uri,
        auth_type=auth_type,
        biz_appid=biz_appid,
        category_id_list=category_id_list,
    )
    return f"{open_base.rstrip('/')}{MOBILE_AUTHORIZATION_PATH}?{urlencode(query)}#wechat_redirect"
