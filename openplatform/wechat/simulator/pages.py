"""The simulated authorization page of mp.weixin.qq.com (docs/wechat-protocol.md §5).

GET shows a form standing in for "scan the QR code and confirm"; POST authorizes, pushes the
``authorized`` / ``updateauthorized`` event in the background (best effort, like WeChat) and redirects
to ``redirect_uri`` with ``auth_code`` and ``expires_in`` appended, so onboarding runs offline.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from werkzeug.wrappers import Request, Response

from openplatform.wechat.permissions import MINI_PROGRAM_SETS, OFFICIAL_ACCOUNT_SETS

from .authorization import DEFAULT_FUNC_INFO, check_pre_auth_code, grant, new_authorizer_appid
from .events import PendingEvent
from .state import ControlError, SimulatorState

PAGE_PATHS = ("/cgi-bin/componentloginpage", "/safe/bindcomponent")
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


def _checkboxes(sets: dict[int, str], checked: list[int]) -> str:
    return "".join(
        f"<label><input type='checkbox' name='func' value='{set_id}'{' checked' if set_id in checked else ''}>"
        f" {set_id} — {html.escape(name)}</label>"
        for set_id, name in sets.items()
    )


def _form(params: dict[str, str], allowed: tuple[str, ...]) -> str:
    default_type = allowed[0]
    checked = DEFAULT_FUNC_INFO[default_type]
    appid = params.get("biz_appid") or new_authorizer_appid()
    options = "".join(
        f"<option value='{t}'{' selected' if t == default_type else ''}>{t}</option>" for t in allowed
    )
    return (
        f"<p>Component <code>{html.escape(params['component_appid'])}</code> asks for authorization.</p>"
        "<form method='post'>"
        f"<label>Authorizer appid <input name='appid' value='{html.escape(appid)}'></label>"
        f"<label>Nick name <input name='nick_name' value='Simulated account {html.escape(appid[-4:])}'></label>"
        f"<label>Account type <select name='account_type'>{options}</select></label>"
        f"<fieldset><legend>Official Account permission sets</legend>{_checkboxes(OFFICIAL_ACCOUNT_SETS, checked)}"
        "</fieldset>"
        f"<fieldset><legend>Mini Program permission sets</legend>{_checkboxes(MINI_PROGRAM_SETS, checked)}"
        "</fieldset>"
        "<button type='submit'>Authorize (授权)</button></form>"
    )


def _validated_params(state: SimulatorState, request: Request) -> tuple[dict[str, str], tuple[str, ...]]:
    names = ("component_appid", "pre_auth_code", "redirect_uri", "auth_type", "biz_appid")
    params = {name: request.args.get(name, "") for name in names}
    if params["component_appid"] not in state.components:
        raise ControlError("unknown component_appid")
    check_pre_auth_code(state, state.components[params["component_appid"]], params["pre_auth_code"])
    if urlsplit(params["redirect_uri"]).scheme not in ("http", "https"):
        raise ControlError("redirect_uri must be an absolute http(s) URL")
    allowed = _ALLOWED_TYPES.get(params["auth_type"] or "3")
    if allowed is None:
        raise ControlError("auth_type must be 1, 2 or 3")
    return params, allowed


def handle_page(state: SimulatorState, request: Request, deliver: Callable[[PendingEvent], Any]) -> Response:
    if request.method not in ("GET", "POST"):
        return _error("method not allowed")
    with state.lock:
        try:
            params, allowed = _validated_params(state, request)
        except ControlError as exc:
            return _error(str(exc))
        if request.method == "GET":
            return _page("WeChat authorization (simulated)", _form(params, allowed))
        appid = request.form.get("appid", "").strip()
        account_type = request.form.get("account_type", allowed[0])
        if params["biz_appid"] and appid != params["biz_appid"]:
            return _error(f"this link only authorizes {params['biz_appid']}")
        if account_type not in allowed:
            return _error(f"auth_type {params['auth_type']} does not allow a {account_type}")
        try:
            func_info = [int(v) for v in request.form.getlist("func")]
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
