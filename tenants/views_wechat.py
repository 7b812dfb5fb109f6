"""WeChat-facing endpoints: the authorization-event URL, per-authorizer message URL, redirect back.

A push to POST /wechat/component/events/ (docs/wechat-protocol.md §1, §3), end to end:
1. `component_events` (here): size limit, msg_signature, decryption, the `timestamp` window
   (WECHAT_PUSH_MAX_AGE_SECONDS), safe XML parsing, then the replay memory: a push identical to one
   accepted in the last 15 minutes is answered `success` and not processed again
   (openplatform/component/events.py). The per-authorizer URL gets the same checks.
2. `component_push_receive` (tenants/events.py) stores it via `component_push_store`
   (openplatform/component/events.py): a ticket into component/tickets.py (the component token,
   component/token.py, reads the newest), anything else as a `ComponentEvent` (component/models.py).
3. In that transaction `unauthorized` revokes the account; `authorized`/`updateauthorized` enqueue
   `tenants.process_component_event`, which exchanges the code once (`component_event_process`,
   tenants/events.py); `tenants.sweep_component_events` retries what is left until the code expires.
"""

from __future__ import annotations

import logging
import math

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from openplatform.component.config import component_config
from openplatform.component.events import (
    PushRefused,
    push_replay_claim,
    push_replay_release,
    push_timestamp_fresh,
)
from openplatform.wechat.crypto import CryptoError, InvalidSignature, WXBizMsgCrypt, parse_xml_fields
from openplatform.wechat.errors import AuthCodeExpired, AuthCodeInvalid, WeChatError
from tenants.auth import AuthorizedRedirectThrottle
from tenants.errors import TenantsError
from tenants.events import component_push_receive
from tenants.messages import authorizer_message_receive
from tenants.services.authorization import (
    auth_code_expiry,
    authorization_code_exchange,
    authorization_state_verify,
)

logger = logging.getLogger(__name__)

#: A ticket push is ~600 bytes; anything far larger is refused before it is parsed.
MAX_EVENT_BYTES = 64 * 1024


def _plain(text: str, status: int = 200) -> HttpResponse:
    return HttpResponse(text, status=status, content_type="text/plain; charset=utf-8")


def _read_verified(request: HttpRequest) -> dict[str, str] | HttpResponse:
    """Body size check, signature check, decryption and safe XML parsing; a response on failure."""
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return _plain("bad content length", 400)
    if declared > MAX_EVENT_BYTES:
        return _plain("body too large", 400)
    body = request.read(MAX_EVENT_BYTES + 1)
    if len(body) > MAX_EVENT_BYTES:
        return _plain("body too large", 400)
    config = component_config()
    if not config.is_configured:
        logger.error("events URL called but the component is not configured")
        return _plain("component not configured", 503)
    params = request.GET
    timestamp = params.get("timestamp", "")
    try:
        crypt = WXBizMsgCrypt(config.token, config.aes_key, config.appid)
        plaintext = crypt.decrypt_message(
            body, msg_signature=params.get("msg_signature", ""), timestamp=timestamp, nonce=params.get("nonce", "")
        )
    except InvalidSignature:
        logger.warning("event with a bad msg_signature refused")
        return _plain("invalid signature", 403)
    except CryptoError as exc:
        logger.warning("malformed event refused: %s (%s)", exc.__class__.__name__, exc.code)
        return _plain("malformed message", 400)
    # Checked once the push is known to be WeChat's: what is logged here is a replay or a clock problem,
    # never an anonymous caller's noise.
    if not push_timestamp_fresh(timestamp, max_age_seconds=config.push_max_age_seconds):
        logger.warning(
            "signed push refused: its timestamp is more than %d s from now (a replay, or a clock off)",
            config.push_max_age_seconds, extra={"push_timestamp": timestamp[:24]},
        )
        return _plain("timestamp out of range", 403)
    try:
        return parse_xml_fields(plaintext)
    except CryptoError as exc:
        logger.warning("malformed event refused: %s (%s)", exc.__class__.__name__, exc.code)
        return _plain("malformed message", 400)


def _claim(request: HttpRequest) -> str | None:
    """The replay memory's key for this verified push, or None if an identical one was accepted lately."""
    params = request.GET
    return push_replay_claim(
        timestamp=params.get("timestamp", ""), nonce=params.get("nonce", ""),
        msg_signature=params.get("msg_signature", ""), max_age_seconds=component_config().push_max_age_seconds,
    )


def _already_accepted() -> HttpResponse:
    logger.info("push identical to one accepted in the last 15 minutes: acknowledged, not processed again")
    return _plain("success")


@csrf_exempt
@require_POST
def component_events(request: HttpRequest) -> HttpResponse:
    """POST /wechat/component/events/: tickets and authorization events."""
    fields = _read_verified(request)
    if isinstance(fields, HttpResponse):
        return fields
    claim = _claim(request)
    if claim is None:
        return _already_accepted()
    try:
        component_push_receive(fields=fields)
    except PushRefused as exc:
        push_replay_release(claim)
        return _plain(str(exc), 400)
    except BaseException:
        push_replay_release(claim)  # not accepted: WeChat's retry must be processed
        raise
    return _plain("success")


@csrf_exempt
@require_POST
def authorizer_events(request: HttpRequest, appid: str) -> HttpResponse:
    """POST /wechat/authorizers/<appid>/events/ — messages on behalf of an account (tenants/messages.py):
    acknowledged, except WeChat's release-check messages, which get their answers."""
    fields = _read_verified(request)
    if isinstance(fields, HttpResponse):
        return fields
    claim = _claim(request)
    if claim is None:
        return _already_accepted()
    try:
        answer = authorizer_message_receive(
            appid=appid[:64], fields=fields, timestamp=request.GET.get("timestamp", ""),
            nonce=request.GET.get("nonce", ""),
        )
    except BaseException:
        push_replay_release(claim)  # not answered: WeChat's retry must be processed
        raise
    return HttpResponse(answer.body, content_type=answer.content_type)


@require_GET
def authorized_redirect(request: HttpRequest) -> HttpResponse:
    """GET /wechat/component/authorized/?state=…&auth_code=…&expires_in=… — the merchant comes back from
    WeChat. Throttled per client address (each new code costs an api_query_auth call); the code is
    exchanged once and lives `expires_in` seconds (at most an hour); the link's state binds one account."""
    throttle = AuthorizedRedirectThrottle()
    if not throttle.allow_request(request, None):
        wait = throttle.wait()
        response = render(request, "tenants/authorized.html", {
            "ok": False,
            "message": "Too many authorization attempts from your network. Please wait a few minutes and "
                       "reload this page.",
        }, status=429)
        if wait is not None:
            response["Retry-After"] = str(max(1, math.ceil(wait)))
        logger.warning("authorization redirect throttled")
        return response
    state = request.GET.get("state", "")
    auth_code = request.GET.get("auth_code", "")
    context: dict[str, object] = {"ok": False}
    status = 400
    if not auth_code:
        context["message"] = "WeChat did not send an authorization code. Please start the authorization again."
    else:
        try:
            tenant = authorization_state_verify(state=state, auth_code=auth_code)
            authorizer = authorization_code_exchange(
                auth_code=auth_code, tenant=tenant, state=state,
                code_expires_at=auth_code_expiry(expires_in=request.GET.get("expires_in")),
            )
        except TenantsError as exc:
            context["message"] = exc.detail
            status = exc.status
        except AuthCodeExpired:
            # 61010: the merchant took longer than the code lives (about an hour): a new link is needed.
            context["message"] = "This authorization link has expired: ask for a new one and authorize again."
            status = 400
        except AuthCodeInvalid:
            # 61009: the code is unknown or used up; the merchant's problem, not WeChat's outage.
            context["message"] = (
                "This authorization code is invalid or was already used. "
                "Please start the authorization again from a new link."
            )
            status = 400
        except WeChatError as exc:
            logger.warning("authorization exchange failed: %s", exc)
            context["message"] = f"WeChat refused the authorization ({exc.errcode}): please try again."
            status = 502
        else:
            context.update(ok=True, authorizer=authorizer, tenant=tenant)
            status = 200
    return render(request, "tenants/authorized.html", context, status=status)
