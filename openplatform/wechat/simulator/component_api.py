"""Rules of the component endpoints under /cgi-bin/component/ (docs/wechat-protocol.md §0, §1, §4-§8).

Each handler takes the state (locked by the caller) and the ``Call``, and returns the JSON answer or
raises ``ApiError``. Quota is checked after the credentials and counted only on success.
"""

from __future__ import annotations

from typing import Any

from .authorization import func_info_json, gh_user_name, issue_ticket
from .state import ApiError, Authorizer, Call, Component, PreAuthCode, SimulatorState, new_secret

MAX_LIST_COUNT = 500


def _str_field(body: dict[str, Any], name: str, missing_errcode: int = 47001) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise ApiError(missing_errcode)
    return value


def _credentials(state: SimulatorState, body: dict[str, Any], secret_field: str) -> Component:
    comp = state.component(_str_field(body, "component_appid", 41002))
    if _str_field(body, secret_field, 41004) != comp.secret:
        raise ApiError(40125)
    return comp


def _component_call(state: SimulatorState, call: Call) -> Component:
    call.token = state.check_token(call.query, kinds=("component",))
    if call.body.get("component_appid") != call.token.owner:
        raise ApiError(61011, "invalid component, component_appid does not match the access_token")
    comp = state.component(call.token.owner)
    state.check_quota(comp.appid, call.path)
    return comp


def _issue_authorizer_token(state: SimulatorState, comp: Component, authorizer: Authorizer) -> Any:
    token = state.issue_token(
        kind="authorizer",
        owner=authorizer.appid,
        component_appid=comp.appid,
        ttl=state.config.authorizer_token_ttl,
        previous=authorizer.access_token,
    )
    authorizer.access_token = token.value
    return token


def start_push_ticket(state: SimulatorState, call: Call) -> dict[str, Any]:
    comp = _credentials(state, call.body, "component_secret")  # note: component_secret here (§0)
    _ticket, event = issue_ticket(state, comp)
    call.after.append(event)
    return {"errcode": 0, "errmsg": "ok"}


def component_token(state: SimulatorState, call: Call) -> dict[str, Any]:
    comp = _credentials(state, call.body, "component_appsecret")
    ticket = call.body.get("component_verify_ticket")
    issued_at = comp.tickets.get(ticket) if isinstance(ticket, str) else None
    if issued_at is None:
        raise ApiError(61006)
    if state.now() - issued_at >= state.config.ticket_ttl:  # a ticket lasts 12 h (§1)
        raise ApiError(61005)
    state.check_quota(comp.appid, call.path)
    token = state.issue_token(
        kind="component",
        owner=comp.appid,
        component_appid=comp.appid,
        ttl=state.config.component_token_ttl,
        previous=comp.access_token,
    )
    comp.access_token = token.value
    state.meter(comp.appid, call.path)
    return {"component_access_token": token.value, "expires_in": int(state.config.component_token_ttl)}


def create_preauthcode(state: SimulatorState, call: Call) -> dict[str, Any]:
    comp = _component_call(state, call)
    ttl = state.config.pre_auth_code_ttl
    code = PreAuthCode(code=new_secret("preauthcode@@@", 64), expires_at=state.now() + ttl)
    comp.pre_auth_codes[code.code] = code
    state.meter(comp.appid, call.path)
    return {"pre_auth_code": code.code, "expires_in": int(ttl)}


def query_auth(state: SimulatorState, call: Call) -> dict[str, Any]:
    comp = _component_call(state, call)
    value = call.body.get("authorization_code")
    code = comp.auth_codes.get(value) if isinstance(value, str) else None
    # Unknown, used, or belonging to a revoked grant: 61009 "code is invalid". Expired: 61010 "code is
    # expired" (staff answers on the developer community; docs/wechat-notes.md, item 1).
    if code is None or code.used:
        raise ApiError(61009)
    if state.now() >= code.expires_at:
        raise ApiError(61010)
    authorizer = comp.authorizers.get(code.authorizer_appid)
    if authorizer is None or authorizer.revoked:
        raise ApiError(61009)
    code.used = True
    token = _issue_authorizer_token(state, comp, authorizer)
    state.meter(comp.appid, call.path)
    return {
        "authorization_info": {
            "authorizer_appid": authorizer.appid,
            "authorizer_access_token": token.value,
            "expires_in": int(state.config.authorizer_token_ttl),
            "authorizer_refresh_token": authorizer.refresh_token,
            "func_info": func_info_json(authorizer),
        }
    }


def _refresh_token_valid(state: SimulatorState, authorizer: Authorizer, value: object) -> bool:
    if authorizer.revoked or not isinstance(value, str):
        return False
    if value == authorizer.refresh_token:
        return True
    return authorizer.old_refresh_tokens.get(value, 0) > state.now()


def authorizer_token(state: SimulatorState, call: Call) -> dict[str, Any]:
    comp = _component_call(state, call)
    authorizer = comp.authorizers.get(call.body.get("authorizer_appid"))
    if authorizer is None:
        raise ApiError(61003)
    if not _refresh_token_valid(state, authorizer, call.body.get("authorizer_refresh_token")):
        raise ApiError(61023)
    token = _issue_authorizer_token(state, comp, authorizer)
    if state.config.rotate_refresh_tokens:
        # Staff: "旧的刷新令牌有5分钟的过渡期" - the old refresh token keeps working a while (§7).
        authorizer.old_refresh_tokens[authorizer.refresh_token] = (
            state.now() + state.config.token_grace_seconds
        )
        authorizer.refresh_token = new_secret("refreshtoken@@@")
    state.meter(comp.appid, call.path)
    return {
        "authorizer_access_token": token.value,
        "expires_in": int(state.config.authorizer_token_ttl),
        "authorizer_refresh_token": authorizer.refresh_token,
    }


def _authorizer_info(authorizer: Authorizer) -> dict[str, Any]:
    is_mp = authorizer.account_type == "mini_program"
    info: dict[str, Any] = {
        "nick_name": authorizer.nick_name,
        "head_img": f"http://wx.qlogo.cn/mmopen/sim/{authorizer.appid}/0",
        "service_type_info": {"id": 0 if is_mp else 2},  # MP: ordinary; OA: service account
        "verify_type_info": {"id": 0},  # WeChat-verified
        "user_name": gh_user_name(authorizer.appid),
        "principal_name": authorizer.principal_name,
        "alias": "",
        "qrcode_url": f"http://mmbiz.qpic.cn/sim/qrcode/{authorizer.appid}/0",
        "account_status": 1,
        "business_info": {"open_pay": 0, "open_shake": 0, "open_scan": 0, "open_card": 0, "open_store": 0},
        "register_type": 0,
    }
    if is_mp:
        # Its presence is what marks a Mini Program (§8).
        info["signature"] = "A simulated Mini Program"
        info["MiniProgramInfo"] = {
            "network": {
                "RequestDomain": [],
                "WsRequestDomain": [],
                "UploadDomain": [],
                "DownloadDomain": [],
                "UDPDomain": [],
                "BizDomain": [],
            },
            "categories": [],
            "visit_status": 0,
        }
    return info


def get_authorizer_info(state: SimulatorState, call: Call) -> dict[str, Any]:
    comp = _component_call(state, call)
    authorizer = comp.authorizers.get(call.body.get("authorizer_appid"))
    if authorizer is None or authorizer.revoked:
        raise ApiError(61003)
    state.meter(comp.appid, call.path)
    return {
        "authorizer_info": _authorizer_info(authorizer),
        "authorization_info": {
            "authorizer_appid": authorizer.appid,
            "authorizer_refresh_token": authorizer.refresh_token,
            "func_info": func_info_json(authorizer),
        },
    }


def get_authorizer_list(state: SimulatorState, call: Call) -> dict[str, Any]:
    comp = _component_call(state, call)
    offset = call.body.get("offset", 0)
    count = call.body.get("count", MAX_LIST_COUNT)
    for value in (offset, count):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ApiError(47001)
    if count > MAX_LIST_COUNT:
        raise ApiError(47001, "data format error, count must not exceed 500")
    live = sorted(
        (a for a in comp.authorizers.values() if not a.revoked), key=lambda a: (a.auth_time, a.appid)
    )
    state.meter(comp.appid, call.path)
    return {
        "total_count": len(live),
        # The key is refresh_token here, not authorizer_refresh_token (§8).
        "list": [
            {"authorizer_appid": a.appid, "refresh_token": a.refresh_token, "auth_time": int(a.auth_time)}
            for a in live[offset : offset + count]
        ],
    }
