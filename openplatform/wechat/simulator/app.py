"""The simulator as a werkzeug WSGI app: WeChat API endpoints, the authorization page, the control API.

Per API request: count it and take its fault and latency (under the lock), sleep (outside the lock, so
concurrent requests overlap), parse the body (outside the lock), evaluate the rule and record the call
(under the lock), then deliver any pushes the rule asked for (outside the lock).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Request, Response

from . import component_api, direct_api, media_api, messages
from .control_api import ControlApi
from .events import PendingEvent, deliver, deliver_in_background
from .faults import Fault
from .media_api import UPLOADIMG_PATH
from .multipart import parse_media
from .pages import PAGE_PATHS, handle_page
from .state import ERRMSGS, ApiError, Call, SimulatorState

Handler = Callable[[SimulatorState, Call], dict[str, Any]]

API_ROUTES: dict[str, Handler] = {
    "/cgi-bin/component/api_start_push_ticket": component_api.start_push_ticket,
    "/cgi-bin/component/api_component_token": component_api.component_token,
    "/cgi-bin/component/api_create_preauthcode": component_api.create_preauthcode,
    "/cgi-bin/component/api_query_auth": component_api.query_auth,
    "/cgi-bin/component/api_authorizer_token": component_api.authorizer_token,
    "/cgi-bin/component/api_get_authorizer_info": component_api.get_authorizer_info,
    "/cgi-bin/component/api_get_authorizer_list": component_api.get_authorizer_list,
    UPLOADIMG_PATH: media_api.uploadimg,
    "/cgi-bin/openapi/quota/get": media_api.quota_get,
    "/cgi-bin/clear_quota": media_api.clear_quota,
    "/cgi-bin/component/clear_quota/v2": media_api.component_clear_quota_v2,
    "/cgi-bin/stable_token": direct_api.stable_token,
    messages.CUSTOM_SEND_PATH: messages.custom_send,
}

# Far above uploadimg's 1 MB limit, so oversized images reach the 40009 rule instead of an HTTP 413.
MAX_REQUEST_BYTES = 16 * 1024 * 1024


def _json_response(data: dict[str, Any], status: int = 200) -> Response:
    return Response(json.dumps(data, ensure_ascii=False), status=status, content_type="application/json")


def _parse_json(request: Request) -> dict[str, Any] | None:
    try:
        body = json.loads(request.get_data(cache=False) or b"")
    except (ValueError, UnicodeDecodeError):
        return None
    return body if isinstance(body, dict) else None


def _fault_response(fault: Fault, request: Request) -> tuple[Response, int | None]:
    if fault.kind == "errcode":
        errmsg = ERRMSGS.get(fault.errcode) if fault.errmsg is None else fault.errmsg
        if errmsg is not None:  # WeChat names the caller's address in some (40164, 61004)
            errmsg = errmsg.replace("{ip}", request.remote_addr or "127.0.0.1")
        return _json_response(ApiError(fault.errcode, errmsg).as_json()), fault.errcode
    if fault.kind == "http_status":
        body = f"<html><body><h1>{fault.status}</h1>simulated failure</body></html>"
        return Response(body, status=fault.status, content_type="text/html"), None
    # not_json: what a proxy in front of WeChat answers when it is overloaded.
    return Response("<html><body>system busy (simulated)</body></html>", content_type="text/html"), None


class SimulatorApp:
    def __init__(self, state: SimulatorState | None = None, *, control_token: str | None = None) -> None:
        self.state = state or SimulatorState()
        self.control = ControlApi(self, token=control_token)

    def __call__(self, environ: dict, start_response: Callable) -> Any:
        request = Request(environ)
        request.max_content_length = MAX_REQUEST_BYTES
        try:
            response = self.dispatch(request)
        except HTTPException as exc:
            response = exc.get_response(environ)
        return response(environ, start_response)

    def dispatch(self, request: Request) -> Response:
        path = request.path
        if path.startswith("/_sim/"):
            return self.control.dispatch(request)
        if path in PAGE_PATHS:
            with self.state.lock:
                self.state.counters[path] += 1
            return handle_page(self.state, request, self.deliver_in_background)
        return self.handle_api(request, path)

    # -- pushes -------------------------------------------------------------------------------------------

    def deliver_now(self, event: PendingEvent, url: str | None = None) -> dict[str, Any]:
        result = deliver(event, url=url)
        self.state.record_event(**result)
        return result

    def deliver_in_background(self, event: PendingEvent, url: str | None = None) -> None:
        deliver_in_background(event, lambda result: self.state.record_event(**result), url=url)

    # -- WeChat API ---------------------------------------------------------------------------------------

    def handle_api(self, request: Request, path: str) -> Response:
        state = self.state
        handler = API_ROUTES.get(path)
        with state.lock:
            state.counters[path] += 1
            if handler is None:
                state.record_call(
                    path=path, query=request.args.to_dict(), json=None, errcode=None, http_status=404
                )
                return _json_response({"errcode": 404, "errmsg": f"simulator: no such path {path}"}, 404)
            latency = state.faults.latency_for(path)
            fault = state.faults.take(path)
        if fault is not None and fault.kind == "delay":
            latency += fault.seconds
            fault = None
        if latency:
            time.sleep(latency)

        media = None
        if path == UPLOADIMG_PATH:
            media = parse_media(request.headers.get("Content-Type", ""), request.get_data(cache=False))
        body = {} if media is not None else _parse_json(request)
        call = Call(path=path, query=request.args.to_dict(), body=body or {}, media=media)
        if fault is not None:
            response, errcode = _fault_response(fault, request)
            with state.lock:
                self._record(call, errcode=errcode, http_status=response.status_code, result=None)
            return response

        with state.lock:
            try:
                if body is None:
                    raise ApiError(47001)
                result = handler(state, call)
            except ApiError as exc:
                result = exc.as_json()
            self._record(call, errcode=result.get("errcode", 0), http_status=200, result=result)
        for event in call.after:
            self.deliver_in_background(event)
        return _json_response(result)

    def _record(self, call: Call, *, errcode: int | None, http_status: int, result: dict | None) -> None:
        state = self.state
        state.record_call(
            path=call.path,
            query=call.query,
            json=call.body if call.media is None else None,
            errcode=errcode,
            http_status=http_status,
        )
        if call.media is None:
            return
        token_value = call.query.get("access_token") or call.query.get("component_access_token")
        token = call.token or state.tokens.get(token_value or "")
        state.record_upload(
            authorizer_appid=token.owner if token else None,
            access_token=token_value,
            **call.media.record(),
            errcode=errcode,
            http_status=http_status,
            url=(result or {}).get("url"),
        )
