"""The lifecycle of components and of their authorizers: register, tickets, authorize, re-authorize,
revoke, lose a refresh token. Shared by the authorization page and the control API.

Callers hold ``state.lock``. Functions that cause a push return a ``PendingEvent`` that the caller
delivers after releasing the lock.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from openplatform.wechat.permissions import MINI_PROGRAM_SETS

from .events import PendingEvent, authorization_plaintext, ticket_plaintext
from .state import (
    ApiError,
    AuthCode,
    Authorizer,
    Component,
    ControlError,
    DirectAccount,
    SimulatorState,
    new_secret,
)

ACCOUNT_TYPES = ("official_account", "mini_program")
DEFAULT_FUNC_INFO = {"official_account": [1, 11], "mini_program": [18]}


def new_authorizer_appid() -> str:
    return "wx" + secrets.token_hex(8)


#: WeChat's dedicated release-check accounts keep their published user names (release_test.py).
RELEASE_TEST_USER_NAMES = {"wx570bc396a51b8ff8": "gh_3c884a361561", "wxd101a85aa106f53e": "gh_8dad206e9538"}


def gh_user_name(appid: str) -> str:
    return RELEASE_TEST_USER_NAMES.get(appid) or "gh_" + hashlib.sha256(appid.encode()).hexdigest()[:12]


def func_info_json(authorizer: Authorizer) -> list[dict]:
    """func_info as WeChat shapes it; MP sets carry the (undocumented) confirm_info seen in samples (docs/wechat-protocol.md §6)."""
    items = []
    for set_id in authorizer.func_info:
        item: dict = {"funcscope_category": {"id": set_id}}
        if set_id in MINI_PROGRAM_SETS:
            item["confirm_info"] = {"need_confirm": 0, "already_confirm": 0, "can_confirm": 0}
        items.append(item)
    return items


def register_component(
    state: SimulatorState,
    *,
    component_appid: str,
    component_appsecret: str,
    token: str,
    encoding_aes_key: str,
    events_url: str | None = None,
    messages_url: str | None = None,
) -> Component:
    for name, value in (
        ("component_appid", component_appid),
        ("component_appsecret", component_appsecret),
        ("token", token),
    ):
        if not isinstance(value, str) or not value:
            raise ControlError(f"{name} must be a non-empty string")
    if not isinstance(encoding_aes_key, str) or len(encoding_aes_key) != 43 or not encoding_aes_key.isalnum():
        raise ControlError("encoding_aes_key must be 43 characters of [A-Za-z0-9]")
    comp = Component(
        appid=component_appid,
        secret=component_appsecret,
        token=token,
        encoding_aes_key=encoding_aes_key,
        events_url=events_url or None,
        messages_url=messages_url or None,
    )
    state.components[component_appid] = comp
    return comp


def withhold_permission_sets(comp: Component, set_ids: object) -> list[int]:
    """The platform does not hold these sets on the Open Platform console (replaces the list; [] = none).

    WeChat then never offers them on the authorization page, so no authorization carries them, and an
    API that needs one of them answers 61007 (docs/wechat-notes.md, item 5).
    """
    comp.withheld_sets = _validate_grant("official_account", set_ids)
    return comp.withheld_sets


def set_account_lacks_api(state: SimulatorState, appid: object, path: object, lacks: object = True) -> bool:
    """Mark an account (authorizer or direct) as lacking an API itself, e.g. an unverified account: 48001."""
    if not isinstance(appid, str) or not (
        appid in state.direct_accounts or any(appid in comp.authorizers for comp in state.components.values())
    ):
        raise ControlError(f"unknown account {appid!r}", status=404)
    if not isinstance(path, str) or not path.startswith("/"):
        raise ControlError("path must be an API path such as /cgi-bin/media/uploadimg")
    if not isinstance(lacks, bool):
        raise ControlError("lacks must be a boolean")
    if lacks:
        state.lacking_apis.add((appid, path))
    else:
        state.lacking_apis.discard((appid, path))
    return lacks


def control_component(state: SimulatorState, appid: object) -> Component:
    try:
        return state.component(appid)
    except ApiError:
        raise ControlError(f"unknown component {appid!r}", status=404) from None


def _event(comp: Component, info_type: str, plaintext: str) -> PendingEvent:
    return PendingEvent(
        info_type=info_type,
        url=comp.events_url,
        component_appid=comp.appid,
        token=comp.token,
        encoding_aes_key=comp.encoding_aes_key,
        plaintext=plaintext,
    )


def issue_ticket(state: SimulatorState, comp: Component) -> tuple[str, PendingEvent]:
    now = state.now()
    ticket = new_secret("ticket@@@")
    comp.tickets[ticket] = now
    plaintext = ticket_plaintext(component_appid=comp.appid, create_time=int(now), ticket=ticket)
    return ticket, _event(comp, "component_verify_ticket", plaintext)


def check_pre_auth_code(state: SimulatorState, comp: Component, code: str | None) -> None:
    """Raise ControlError (shown as the page's error) unless ``code`` is live and unused (docs/wechat-protocol.md §5)."""
    pre = comp.pre_auth_codes.get(code or "")
    if pre is None:
        raise ControlError("pre_auth_code is unknown to this component")
    if pre.used:
        raise ControlError("pre_auth_code has already been used")
    if state.now() >= pre.expires_at:
        raise ControlError("pre_auth_code has expired")


@dataclass
class Grant:
    authorizer: Authorizer
    auth_code: AuthCode
    event: PendingEvent
    info_type: str


def _validate_grant(account_type: str, func_info: object) -> list[int]:
    if account_type not in ACCOUNT_TYPES:
        raise ControlError(f"account_type must be one of {ACCOUNT_TYPES}")
    if not isinstance(func_info, list) or not all(
        isinstance(i, int) and not isinstance(i, bool) for i in func_info
    ):
        raise ControlError("func_info must be a list of permission-set ids")
    return list(dict.fromkeys(func_info))  # keep order, drop duplicates


def _issue_auth_code(state: SimulatorState, comp: Component, authorizer: Authorizer) -> AuthCode:
    code = AuthCode(
        code=new_secret("queryauthcode@@@"),
        authorizer_appid=authorizer.appid,
        expires_at=state.now() + state.config.auth_code_ttl,
    )
    comp.auth_codes[code.code] = code
    return code


def _grant_event(
    state: SimulatorState, comp: Component, info_type: str, grant_code: AuthCode, pre_auth_code: str | None
) -> PendingEvent:
    now = int(state.now())
    plaintext = authorization_plaintext(
        info_type=info_type,
        component_appid=comp.appid,
        create_time=now,
        authorizer_appid=grant_code.authorizer_appid,
        auth_code=grant_code.code,
        auth_code_expires_at=now + int(state.config.auth_code_ttl),
        pre_auth_code=pre_auth_code,
    )
    return _event(comp, info_type, plaintext)


def grant(
    state: SimulatorState,
    comp: Component,
    *,
    authorizer_appid: str | None,
    func_info: object,
    account_type: str = "official_account",
    nick_name: str | None = None,
    principal_name: str | None = None,
    pre_auth_code: str | None = None,
) -> Grant:
    """A merchant confirms the authorization page: a new authorizer, or a re-authorization.

    Sets the platform does not hold are never offered, so they never end up in the grant.
    """
    sets = [s for s in _validate_grant(account_type, func_info) if s not in comp.withheld_sets]
    appid = authorizer_appid or new_authorizer_appid()
    if not isinstance(appid, str) or not appid.isascii() or not appid.isalnum():
        raise ControlError("authorizer_appid must be ASCII letters and digits")
    existing = comp.authorizers.get(appid)
    if existing is not None and not existing.revoked:
        # Re-authorizing replaces the refresh token; the old one stops working at once (docs/wechat-protocol.md §6, §7).
        existing.func_info = sets
        existing.account_type = account_type
        existing.nick_name = nick_name or existing.nick_name
        existing.principal_name = principal_name or existing.principal_name
        existing.refresh_token = new_secret("refreshtoken@@@")
        existing.old_refresh_tokens.clear()
        existing.auth_time = state.now()
        authorizer, info_type = existing, "updateauthorized"
    else:
        authorizer = Authorizer(
            appid=appid,
            component_appid=comp.appid,
            account_type=account_type,
            nick_name=nick_name or f"Simulated {account_type.replace('_', ' ')} {appid[-4:]}",
            principal_name=principal_name or "Simulated Merchant Co., Ltd.",
            func_info=sets,
            refresh_token=new_secret("refreshtoken@@@"),
            auth_time=state.now(),
        )
        comp.authorizers[appid] = authorizer
        info_type = "authorized"
    code = _issue_auth_code(state, comp, authorizer)
    event = _grant_event(state, comp, info_type, code, pre_auth_code)
    return Grant(authorizer=authorizer, auth_code=code, event=event, info_type=info_type)


def find_authorizer(state: SimulatorState, appid: str, component_appid: str | None = None) -> Authorizer:
    """The authorizer ``appid``; ``component_appid`` is needed only when several components have it."""
    found = [
        comp.authorizers[appid]
        for comp in state.components.values()
        if appid in comp.authorizers and component_appid in (None, comp.appid)
    ]
    if not found:
        raise ControlError(f"unknown authorizer {appid!r}", status=404)
    if len(found) > 1:
        raise ControlError(f"authorizer {appid!r} is authorized to several components; give component_appid")
    return found[0]


def reauthorize(state: SimulatorState, authorizer: Authorizer, func_info: object | None) -> Grant:
    if authorizer.revoked:
        raise ControlError("authorizer has revoked; authorize it again instead")
    comp = state.components[authorizer.component_appid]
    return grant(
        state,
        comp,
        authorizer_appid=authorizer.appid,
        func_info=authorizer.func_info if func_info is None else func_info,
        account_type=authorizer.account_type,
    )


def revoke(state: SimulatorState, authorizer: Authorizer) -> PendingEvent:
    """The merchant cancels the authorization: tokens die, the account leaves the list (docs/wechat-protocol.md §3)."""
    comp = state.components[authorizer.component_appid]
    authorizer.revoked = True
    authorizer.refresh_token = new_secret("revoked@@@")  # never handed out
    authorizer.old_refresh_tokens.clear()
    authorizer.access_token = None
    state.drop_tokens(authorizer.appid, comp.appid)
    for code in comp.auth_codes.values():
        if code.authorizer_appid == authorizer.appid:
            code.used = True
    plaintext = authorization_plaintext(
        info_type="unauthorized",
        component_appid=comp.appid,
        create_time=int(state.now()),
        authorizer_appid=authorizer.appid,
    )
    return _event(comp, "unauthorized", plaintext)


def invalidate_refresh_token(state: SimulatorState, authorizer: Authorizer) -> str:
    """The stored refresh token stops working (61023); WeChat's list/info endpoints hand out the new one."""
    if authorizer.revoked:
        raise ControlError("authorizer has revoked")
    authorizer.refresh_token = new_secret("refreshtoken@@@")
    authorizer.old_refresh_tokens.clear()
    return authorizer.refresh_token


def register_direct_account(
    state: SimulatorState, *, appid: str, secret: str, func_info: object
) -> DirectAccount:
    if not isinstance(appid, str) or not appid or not isinstance(secret, str) or not secret:
        raise ControlError("appid and secret must be non-empty strings")
    sets = _validate_grant("official_account", func_info)
    account = DirectAccount(appid=appid, secret=secret, func_info=sets)
    state.direct_accounts[appid] = account
    return account


def authorizer_view(state: SimulatorState, authorizer: Authorizer) -> dict:
    now = state.now()
    live = [
        {"access_token": t.value, "expires_at": t.expires_at, "forced_errcode": t.forced_errcode}
        for t in state.tokens.values()
        if t.owner == authorizer.appid
        and t.component_appid == authorizer.component_appid
        and t.expires_at > now
    ]
    return {
        "authorizer_appid": authorizer.appid,
        "component_appid": authorizer.component_appid,
        "account_type": authorizer.account_type,
        "nick_name": authorizer.nick_name,
        "access_token": authorizer.access_token,
        "access_tokens": live,
        "refresh_token": None if authorizer.revoked else authorizer.refresh_token,
        "func_info": authorizer.func_info,
        "revoked": authorizer.revoked,
        "auth_time": authorizer.auth_time,
    }
