"""Messages on behalf of an authorizer: encrypted pushes to the platform's per-authorizer message URL,
the passive reply they may get back, and /cgi-bin/message/custom/send (the customer-service message API).

WeChat encrypts these with the platform's token, EncodingAESKey and component appid, like the component
events, and wraps them in ``<xml><ToUserName/><Encrypt/></xml>``. A passive reply is either "success" /
an empty body (no reply) or the encrypted reply envelope (``Encrypt``, ``MsgSignature``, ``TimeStamp``,
``Nonce``), which the simulator verifies and decrypts like WeChat would (docs/wechat-protocol.md §2).

As with events.py, the state decides what to send (under its lock) and the HTTP happens outside it.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import Any

import requests

from openplatform.wechat.crypto import CryptoError, WXBizMsgCrypt, parse_encrypted_envelope, parse_xml_fields

from .events import cdata
from .state import ApiError, Authorizer, Call, Component, ControlError, SimulatorState

CUSTOM_SEND_PATH = "/cgi-bin/message/custom/send"
APPID_PLACEHOLDER = "$APPID$"
#: WeChat waits this long for the answer to a message (passive replies must come within 5 s).
REPLY_DEADLINE = 5.0


@dataclass(frozen=True)
class PendingMessage:
    url: str
    authorizer_appid: str
    to_user: str  # the account's gh_ user name
    from_user: str  # the fan's openid
    component_appid: str
    token: str
    encoding_aes_key: str
    plaintext: str


def new_openid() -> str:
    return "o" + secrets.token_urlsafe(20)[:27]


def text_message_plaintext(
    *, to_user: str, from_user: str, create_time: int, content: str, msg_id: int
) -> str:
    return (
        f"<xml><ToUserName>{cdata(to_user)}</ToUserName><FromUserName>{cdata(from_user)}</FromUserName>"
        f"<CreateTime>{create_time}</CreateTime><MsgType>{cdata('text')}</MsgType>"
        f"<Content>{cdata(content)}</Content><MsgId>{msg_id}</MsgId></xml>"
    )


def messages_url_for(comp: Component, appid: str, override: str | None = None) -> str:
    template = override or comp.messages_url
    if not template:
        raise ControlError(
            "no messages_url: register the component with one (containing $APPID$) or pass url"
        )
    return template.replace(APPID_PLACEHOLDER, appid)


def pending_text(
    state: SimulatorState,
    comp: Component,
    authorizer: Authorizer,
    *,
    user_name: str,
    content: str,
    from_user: str,
    url: str | None = None,
) -> PendingMessage:
    """A fan's text message to ``authorizer``, ready to deliver (call under the lock)."""
    plaintext = text_message_plaintext(
        to_user=user_name,
        from_user=from_user,
        create_time=int(state.now()),
        content=content,
        msg_id=secrets.randbelow(10**18),
    )
    return PendingMessage(
        url=messages_url_for(comp, authorizer.appid, url),
        authorizer_appid=authorizer.appid,
        to_user=user_name,
        from_user=from_user,
        component_appid=comp.appid,
        token=comp.token,
        encoding_aes_key=comp.encoding_aes_key,
        plaintext=plaintext,
    )


def read_reply(crypto: WXBizMsgCrypt, text: str) -> tuple[dict[str, str] | None, str | None]:
    """(decrypted reply fields, None), (None, None) for "no reply", or (None, why the reply is invalid)."""
    if text.strip() in ("", "success"):
        return None, None
    try:
        envelope = parse_encrypted_envelope(text)
        crypto.verify_signature(
            envelope.get("MsgSignature", ""),
            envelope.get("TimeStamp", ""),
            envelope.get("Nonce", ""),
            envelope["Encrypt"],
        )
        return parse_xml_fields(crypto.decrypt(envelope["Encrypt"])), None
    except CryptoError as exc:
        # WeChat rejects a plaintext or badly signed reply to an encrypted message.
        return None, f"{type(exc).__name__}: {exc}"[:300]


def deliver_message(message: PendingMessage, *, timeout: float = REPLY_DEADLINE) -> dict[str, Any]:
    """POST the encrypted message; never raises. ``reply`` is the decrypted passive reply, if any."""
    crypto = WXBizMsgCrypt(message.token, message.encoding_aes_key, message.component_appid)
    encrypt = crypto.encrypt(message.plaintext)
    timestamp, nonce = str(int(time.time())), str(secrets.randbelow(10**10))
    params = {
        "signature": hashlib.sha1("".join(sorted([message.token, timestamp, nonce])).encode()).hexdigest(),  # noqa: S324
        "timestamp": timestamp,
        "nonce": nonce,
        "openid": message.from_user,
        "encrypt_type": "aes",
        "msg_signature": crypto.sign(timestamp, nonce, encrypt),
    }
    body = f"<xml><ToUserName>{cdata(message.to_user)}</ToUserName><Encrypt>{cdata(encrypt)}</Encrypt></xml>"
    result: dict[str, Any] = {
        "url": message.url,
        "authorizer_appid": message.authorizer_appid,
        "from_user": message.from_user,
        "status_code": None,
        "response_text": None,
        "elapsed_ms": None,
        "error": None,
        "reply": None,
        "reply_error": None,
    }
    started = time.perf_counter()
    try:
        response = requests.post(
            message.url,
            params=params,
            data=body.encode(),
            headers={"Content-Type": "text/xml"},
            timeout=timeout,
        )
    except requests.RequestException as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"[:500]
        return result
    finally:
        result["elapsed_ms"] = round((time.perf_counter() - started) * 1000, 1)
    result["status_code"] = response.status_code
    result["response_text"] = response.text[:2000]
    if response.status_code == 200:
        result["reply"], result["reply_error"] = read_reply(crypto, response.text)
    return result


def custom_send(state: SimulatorState, call: Call) -> dict[str, Any]:
    """message/custom/send with the account's token; text messages are recorded, others accepted."""
    call.token = state.check_token(call.query, kinds=("authorizer", "direct"))
    if (call.token.owner, call.path) in state.lacking_apis:
        raise ApiError(48001)
    body = call.body
    touser, msgtype = body.get("touser"), body.get("msgtype")
    if not isinstance(touser, str) or not touser:
        raise ApiError(40003)
    if not isinstance(msgtype, str) or not isinstance(body.get(msgtype), dict):
        raise ApiError(47001)
    content = body[msgtype].get("content") if msgtype == "text" else None
    if msgtype == "text" and not isinstance(content, str):
        raise ApiError(47001)
    state.custom_messages.append(
        {
            "appid": call.token.owner,
            "touser": touser,
            "msgtype": msgtype,
            "content": content,
            "time": state.now(),
        }
    )
    return {"errcode": 0, "errmsg": "ok"}
