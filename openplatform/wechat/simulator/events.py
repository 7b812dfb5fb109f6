"""Encrypted pushes to our authorization-event URL, as WeChat sends them (docs/wechat-protocol.md §1-§3).

The state decides *what* to push (a ``PendingEvent``, built under its lock); this module does the HTTP,
always outside the lock, because the receiver may call back into the simulator (api_query_auth) before
it answers.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests

from openplatform.wechat.crypto import WXBizMsgCrypt

PUSH_TIMEOUT = 10.0


@dataclass(frozen=True)
class PendingEvent:
    info_type: str
    url: str | None
    component_appid: str
    token: str
    encoding_aes_key: str
    plaintext: str


def cdata(value: object) -> str:
    # "]]>" cannot appear inside CDATA; split it across two sections.
    return "<![CDATA[" + str(value).replace("]]>", "]]]]><![CDATA[>") + "]]>"


def ticket_plaintext(*, component_appid: str, create_time: int, ticket: str) -> str:
    return (
        f"<xml><AppId>{cdata(component_appid)}</AppId><CreateTime>{create_time}</CreateTime>"
        f"<InfoType>{cdata('component_verify_ticket')}</InfoType>"
        f"<ComponentVerifyTicket>{cdata(ticket)}</ComponentVerifyTicket></xml>"
    )


def authorization_plaintext(
    *,
    info_type: str,
    component_appid: str,
    create_time: int,
    authorizer_appid: str,
    auth_code: str | None = None,
    auth_code_expires_at: int | None = None,
    pre_auth_code: str | None = None,
) -> str:
    parts = [
        f"<AppId>{cdata(component_appid)}</AppId>",
        f"<CreateTime>{create_time}</CreateTime>",
        f"<InfoType>{cdata(info_type)}</InfoType>",
        f"<AuthorizerAppid>{cdata(authorizer_appid)}</AuthorizerAppid>",
    ]
    if auth_code is not None:
        parts.append(f"<AuthorizationCode>{cdata(auth_code)}</AuthorizationCode>")
        # An absolute unix time (CreateTime + code validity), as third-party fixtures read it (§3).
        parts.append(f"<AuthorizationCodeExpiredTime>{auth_code_expires_at}</AuthorizationCodeExpiredTime>")
        parts.append(f"<PreAuthCode>{cdata(pre_auth_code or '')}</PreAuthCode>")
    return "<xml>" + "".join(parts) + "</xml>"


def deliver(event: PendingEvent, *, url: str | None = None, timeout: float = PUSH_TIMEOUT) -> dict[str, Any]:
    """POST the encrypted event; returns ``{status_code, response_text, error}``, never raises."""
    target = url or event.url
    result: dict[str, Any] = {
        "info_type": event.info_type,
        "component_appid": event.component_appid,
        "url": target,
        "status_code": None,
        "response_text": None,
        "error": None,
    }
    if not target:
        result["error"] = "no events_url registered for this component"
        return result
    crypto = WXBizMsgCrypt(event.token, event.encoding_aes_key, event.component_appid)
    encrypt = crypto.encrypt(event.plaintext)
    # The query timestamp is real time, not simulated: it is transport freshness, not message content.
    timestamp = str(int(time.time()))
    nonce = str(secrets.randbelow(10**10))
    body = f"<xml><AppId>{cdata(event.component_appid)}</AppId><Encrypt>{cdata(encrypt)}</Encrypt></xml>"
    params = {
        # signature is sent too, as WeChat does, though receivers must verify msg_signature (§1).
        "signature": hashlib.sha1("".join(sorted([event.token, timestamp, nonce])).encode()).hexdigest(),  # noqa: S324
        "timestamp": timestamp,
        "nonce": nonce,
        "encrypt_type": "aes",
        "msg_signature": crypto.sign(timestamp, nonce, encrypt),
    }
    try:
        response = requests.post(
            target,
            params=params,
            data=body.encode("utf-8"),
            headers={"Content-Type": "text/xml"},
            timeout=timeout,
        )
    except requests.RequestException as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"[:500]
        return result
    result["status_code"] = response.status_code
    result["response_text"] = response.text[:2000]
    return result


def deliver_in_background(
    event: PendingEvent, on_done: Callable[[dict[str, Any]], None], *, url: str | None = None
) -> threading.Thread:
    """Best effort, like WeChat: the caller (a redirect, an API answer) never waits for the receiver."""

    def run() -> None:
        on_done(deliver(event, url=url))

    thread = threading.Thread(target=run, name=f"sim-push-{event.info_type}", daemon=True)
    thread.start()
    return thread
