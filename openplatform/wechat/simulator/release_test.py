"""The full-network release check (全网发布接入检测) that WeChat runs before a platform goes public.

Source: https://developers.weixin.qq.com/doc/oplatform/Third-party_Platforms/2.0/operation/thirdparty/releases_instructions.html
(docs/wechat-notes.md, item 6). WeChat authorizes a dedicated test account to the platform (pushing its
``query_auth_code`` in an ``authorized`` event), then:

1. pushes a component_verify_ticket: the events URL must answer ``success``;
2. Official Account, if the platform holds message management (set 1): a fan sends the text
   ``TESTCOMPONENT_MSG_TYPE_TEXT``; the message URL must reply, encrypted and within 5 s, a text message
   whose Content is ``TESTCOMPONENT_MSG_TYPE_TEXT_callback``;
3. a fan sends ``QUERY_AUTH_CODE:<query_auth_code>``; the message URL must answer an empty body (or
   ``success``) within 5 s, then exchange the code (api_query_auth) and send, with the account's token,
   the customer-service text ``<query_auth_code>_from_api`` to that fan (message/custom/send).
   A Mini Program (set 19, customer service) gets step 3 only.

``run_release_test`` plays all of it against the configured URLs and reports each step.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from openplatform.wechat.release_check import API_CHECK_PREFIX, API_CHECK_SUFFIX, TEXT_CHECK, TEXT_CHECK_REPLY

from . import authorization as authz
from .messages import REPLY_DEADLINE, deliver_message, new_openid, pending_text
from .state import ControlError

if TYPE_CHECKING:
    from .app import SimulatorApp

#: The first of the five groups of dedicated test accounts the doc lists, per account type.
TEST_ACCOUNTS = {"official_account": "wx570bc396a51b8ff8", "mini_program": "wxd101a85aa106f53e"}
#: The permission set whose presence makes WeChat run the message steps, per account type.
MESSAGE_SETS = {"official_account": 1, "mini_program": 19}


def _step(name: str, passed: bool, detail: str, result: dict[str, Any] | None = None) -> dict[str, Any]:
    step = {"name": name, "passed": passed, "detail": detail}
    if result is not None:
        step["delivery"] = {
            k: result.get(k) for k in ("url", "status_code", "response_text", "elapsed_ms", "error")
        }
    return step


def _acknowledged(name: str, result: dict[str, Any]) -> dict[str, Any]:
    ok = result.get("status_code") == 200 and (result.get("response_text") or "").strip() == "success"
    detail = (
        "answered success"
        if ok
        else f"expected HTTP 200 'success', got {result.get('status_code')} {result.get('error') or ''}"
    )
    return _step(name, ok, detail.strip(), result)


def _in_time(result: dict[str, Any]) -> str | None:
    if result["error"]:
        return f"no answer within {REPLY_DEADLINE:.0f} s: {result['error']}"
    if result["status_code"] != 200:
        return f"HTTP {result['status_code']}"
    if result["elapsed_ms"] > REPLY_DEADLINE * 1000:
        return f"answered after {result['elapsed_ms']:.0f} ms (limit {REPLY_DEADLINE * 1000:.0f})"
    return None


def _text_step(result: dict[str, Any], *, openid: str, user_name: str) -> dict[str, Any]:
    problem = _in_time(result) or result["reply_error"]
    reply = result["reply"]
    if problem is None and reply is None:
        problem = "no passive reply (expected an encrypted text reply)"
    if problem is None:
        expected = {
            "MsgType": "text",
            "Content": TEXT_CHECK_REPLY,
            "ToUserName": openid,
            "FromUserName": user_name,
        }
        wrong = {k: reply.get(k) for k, v in expected.items() if reply.get(k) != v}
        problem = f"reply fields differ: {wrong}" if wrong else None
    return _step("text_reply", problem is None, problem or "encrypted reply " + TEXT_CHECK_REPLY, result)


def _api_step(
    app: SimulatorApp, result: dict[str, Any], *, appid: str, openid: str, code: str, wait: float
) -> dict[str, Any]:
    problem = _in_time(result) or result["reply_error"]
    if problem is None and result["reply"] is not None:
        problem = "expected an empty answer (no passive reply) before the customer-service message"
    if problem is not None:
        return _step("api_reply", False, problem, result)
    wanted = code + API_CHECK_SUFFIX
    deadline = time.monotonic() + wait
    while True:
        with app.state.lock:
            sent = [m for m in app.state.custom_messages if m["appid"] == appid and m["touser"] == openid]
        if any(m["content"] == wanted for m in sent):
            return _step("api_reply", True, f"customer-service message {API_CHECK_SUFFIX} received", result)
        if time.monotonic() >= deadline:
            got = [m["content"] for m in sent]
            return _step(
                "api_reply",
                False,
                f"no message/custom/send of '<code>{API_CHECK_SUFFIX}' within {wait} s; got {got}",
                result,
            )
        time.sleep(0.05)


def run_release_test(
    app: SimulatorApp,
    *,
    component_appid: object,
    account_type: str = "official_account",
    url: str | None = None,
    wait: float = 10.0,
) -> dict[str, Any]:
    """Play WeChat's release check; ``url`` overrides the component's message URL ("$APPID$" is replaced)."""
    if account_type not in TEST_ACCOUNTS:
        raise ControlError(f"account_type must be one of {tuple(TEST_ACCOUNTS)}")
    if isinstance(wait, bool) or not isinstance(wait, int | float) or not 0 <= wait <= 60:
        raise ControlError("wait must be a number of seconds between 0 and 60")
    appid = TEST_ACCOUNTS[account_type]
    user_name = authz.gh_user_name(appid)
    state = app.state
    with state.lock:
        comp = authz.control_component(state, component_appid)
        applies = MESSAGE_SETS[account_type] not in comp.withheld_sets
        _ticket, ticket_event = authz.issue_ticket(state, comp)
        sets = [MESSAGE_SETS[account_type], *authz.DEFAULT_FUNC_INFO[account_type]]
        grant = authz.grant(state, comp, authorizer_appid=appid, func_info=sets, account_type=account_type)
        code = grant.auth_code.code
        openid = new_openid()
        text = pending_text(
            state, comp, grant.authorizer, user_name=user_name, content=TEXT_CHECK, from_user=openid, url=url
        )
        api = pending_text(
            state,
            comp,
            grant.authorizer,
            user_name=user_name,
            content=API_CHECK_PREFIX + code,
            from_user=openid,
            url=url,
        )
    steps = [
        _acknowledged("component_verify_ticket", app.deliver_now(ticket_event)),
        _acknowledged("authorized_event", app.deliver_now(grant.event)),
    ]
    if applies:
        if account_type == "official_account":
            steps.append(_text_step(_record(app, deliver_message(text)), openid=openid, user_name=user_name))
        result = _record(app, deliver_message(api))
        steps.append(_api_step(app, result, appid=appid, openid=openid, code=code, wait=wait))
    return {
        "account_type": account_type,
        "authorizer_appid": appid,
        "user_name": user_name,
        "openid": openid,
        "query_auth_code": code,
        "message_steps_apply": applies,
        "passed": all(s["passed"] for s in steps),
        "steps": steps,
    }


def _record(app: SimulatorApp, result: dict[str, Any]) -> dict[str, Any]:
    with app.state.lock:
        app.state.messages.append({**result, "time": app.state.now()})
    return result
