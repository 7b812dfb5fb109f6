"""The simulated authorization pages (docs/wechat-protocol.md §5): PC and mobile, on the simulator's host.

GET shows a form standing in for "scan the QR code and confirm"; POST authorizes, pushes the
``authorized`` / ``updateauthorized`` event in the background (best effort, like WeChat) and redirects
to ``redirect_uri`` with ``auth_code`` and ``expires_in`` appended, so onboarding runs offline.

Paths: ``/cgi-bin/componentloginpage`` (PC, mp.weixin.qq.com), ``/wxaopen/safe/bindcomponent`` (mobile,
open.weixin.qq.com; needs ``action=bindcomponent&no_scan=1`` like the real link) and the older mobile
``/safe/bindcomponent``. ``category_id_list`` ("11|18") offers only those sets; without it every set
the platform holds is offered. Sets the platform does not hold (``withhold_permission_sets``) never are.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from werkzeug.wrappers import Request, Response

from openplatform.wechat.links import MOBILE_AUTHORIZATION_PATH, PC_AUTHORIZATION_PATH, parse_category_id_list
from openplatform.wechat.permissions import MINI_PROGRAM_SETS, OFFICIAL_ACCOUNT_SETS, OTHER_SETS

from .authorization import DEFAULT_FUNC_INFO, check_pre_auth_code, grant, new_authorizer_appid
from .events import PendingEvent
from .state import ControlError, SimulatorState

LEGACY_MOBILE_PATH = "/safe/bindcomponent"
PAGE_PATHS = (PC_AUTHORIZATION_PATH, MOBILE_AUTHORIZATION_PATH, LEGACY_MOBILE_PATH)
# auth_type: 1 Official Accounts only, 2 Mini Programs only, 3 both (the default).
_ALLOWED_TYPES = {
    "1": ("official_account",),
    "2": ("mini_program",),
    "3": ("official_account", "mini_program"),
}

_STYLE = (
    "body{font-family:sans-serif;max-width:46em;margin:2em auto}fieldset{margin:1em 0}label{display:block}"
)


def _page(title: str, body: str, status: int = 200) -> Response:
    doc = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>"
    )
    return Response(doc, status=status, content_type="text/html; charset=utf-8")


def _error(message: str) -> Response:
    return _page("Authorization failed", f"<p class='error'>{html.escape(message)}</p>", status=400)


def _redirect_target(redirect_uri: str, auth_code: str, expires_in: int) -> str:
    # Keep the caller's own query (its signed state) and append ours, as WeChat does.
    parts = urlsplit(redirect_uri)
    query = parse_qsl(parts.query, keep_blank_values=True)
    query += [("auth_code", auth_code), ("expires_in", str(expires_in))]
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), parts.fragment))


def _checkboxes(sets: dict[int, str], offered: set[int], checked: list[int]) -> str:
    return "".join(
        f"<label><input type='checkbox' name='func' value='{set_id}'{' checked' if set_id in checked else ''}>"
        f" {set_id} — {html.escape(name)}</label>"
        for set_id, name in sets.items()
        if set_id in offered
    )


def _form(params: dict[str, str], allowed: tuple[str, ...], offered: set[int], requested: bool) -> str:
    default_type = allowed[0]
    checked = sorted(offered) if requested else DEFAULT_FUNC_INFO[default_type]
    appid = params.get("biz_appid") or new_authorizer_appid()
    options = "".join(
        f"<option value='{t}'{' selected' if t == default_type else ''}>{t}</option>" for t in allowed
    )
    groups = (
        ("Official Account permission sets", OFFICIAL_ACCOUNT_SETS),
        ("Mini Program permission sets", MINI_PROGRAM_SETS),
        ("Other permission sets", OTHER_SETS),
    )
    fieldsets = "".join(
        f"<fieldset><legend>{legend}</legend>{_checkboxes(sets, offered, checked)}</fieldset>"
        for legend, sets in groups
        if offered & set(sets)
    )
    return (
        f"<p>Component <code>{html.escape(params['component_appid'])}</code> asks for authorization.</p>"
        "<form method='post'>"
        f"<label>Authorizer appid <input name='appid' value='{html.escape(appid)}'></label>"
        f"<label>Nick name <input name='nick_name' value='Simulated account {html.escape(appid[-4:])}'></label>"
        f"<label>Account type <select name='account_type'>{options}</select></label>"
        f"{fieldsets}<button type='submit'>Authorize (授权)</button></form>"
    )


def _offered_sets(state: SimulatorState, params: dict[str, str]) -> tuple[set[int], bool]:
    """The sets the page offers, and whether the link asked for specific ones (category_id_list)."""
    comp = state.components[params["component_appid"]]
    requested = bool(params["category_id_list"])
    if requested:
        try:
            wanted = set(parse_category_id_list(params["category_id_list"]))
        except ValueError as exc:
            raise ControlError(str(exc)) from None
    else:
        wanted = set(OFFICIAL_ACCOUNT_SETS) | set(MINI_PROGRAM_SETS) | set(OTHER_SETS)
    offered = wanted - set(comp.withheld_sets)
    if not offered:
        raise ControlError("none of the requested permission sets is held by this platform")
    return offered, requested


def _validated_params(
    state: SimulatorState, request: Request
) -> tuple[dict[str, str], tuple[str, ...], set[int], bool]:
    names = ("component_appid", "pre_auth_code", "redirect_uri", "auth_type", "biz_appid", "category_id_list")
    params = {name: request.args.get(name, "") for name in names}
    if request.path == MOBILE_AUTHORIZATION_PATH and (
        request.args.get("action") != "bindcomponent" or request.args.get("no_scan") != "1"
    ):
        raise ControlError("the mobile authorization link needs action=bindcomponent and no_scan=1")
    if params["component_appid"] not in state.components:
        raise ControlError("unknown component_appid")
    check_pre_auth_code(state, state.components[params["component_appid"]], params["pre_auth_code"])
    if urlsplit(params["redirect_uri"]).scheme not in ("http", "https"):
        raise ControlError("redirect_uri must be an absolute http(s) URL")
    allowed = _ALLOWED_TYPES.get(params["auth_type"] or "3")
    if allowed is None:
        raise ControlError("auth_type must be 1, 2 or 3")
    offered, requested = _offered_sets(state, params)
    return params, allowed, offered, requested


def handle_page(state: SimulatorState, request: Request, deliver: Callable[[PendingEvent], Any]) -> Response:
    if request.method not in ("GET", "POST"):
        return _error("method not allowed")
    with state.lock:
        try:
            params, allowed, offered, requested = _validated_params(state, request)
        except ControlError as exc:
            return _error(str(exc))
        if request.method == "GET":
            return _page("WeChat authorization (simulated)", _form(params, allowed, offered, requested))
        appid = request.form.get("appid", "").strip()
        account_type = request.form.get("account_type", allowed[0])
        if params["biz_appid"] and appid != params["biz_appid"]:
            return _error(f"this link only authorizes {params['biz_appid']}")
        if account_type not in allowed:
            return _error(f"auth_type {params['auth_type']} does not allow a {account_type}")
        try:
            # A set the link did not ask for is not on the real page, so it cannot be ticked: drop it
            # (grant() drops the sets the platform does not hold).
            func_info = [int(v) for v in request.form.getlist("func")]
            func_info = [i for i in func_info if i in offered] if requested else func_info
            comp = state.components[params["component_appid"]]
            result = grant(
                state,
                comp,
                authorizer_appid=appid or None,
                func_info=func_info,
                account_type=account_type,
                nick_name=request.form.get("nick_name", "").strip() or None,
                pre_auth_code=params["pre_auth_code"],
            )
        except (ControlError, ValueError) as exc:
            return _error(str(exc))
        # Each pre_auth_code authorizes once (§5).
        comp.pre_auth_codes[params["pre_auth_code"]].used = True
        ttl = int(state.config.auth_code_ttl)
    deliver(result.event)
    response = Response(status=302)
    response.headers["Location"] = _redirect_target(params["redirect_uri"], result.auth_code.code, ttl)
    return response
