"""The control API under /_sim/ (JSON in, JSON out), used by tests, benchmarks and the local run.

``SimulatorControl`` (control.py) mirrors every route one-to-one. Mutations happen under the state's
lock; synchronous pushes (``push_event``) are delivered after it is released, because the receiver may
call back into the simulator.

With a control token (``SIMULATOR_CONTROL_TOKEN``), every route needs ``Authorization: Bearer <token>``:
on a shared staging network the control API can reset the state, hand out authorizations and inject
faults, which is nobody's business but the tests'. Without one (the local run) it is open.
"""

from __future__ import annotations

import hmac
import json
from typing import TYPE_CHECKING, Any

from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from . import authorization as authz
from .faults import Fault, FaultError
from .messages import deliver_message, new_openid, pending_text
from .release_test import run_release_test
from .state import ControlError

if TYPE_CHECKING:
    from .app import SimulatorApp

TOKEN_ERRCODES = (40001, 40014, 42001)

_RULES = Map(
    [
        Rule("/_sim/reset", methods=["POST"], endpoint="reset"),
        Rule("/_sim/config", methods=["GET", "POST"], endpoint="config"),
        Rule("/_sim/components", methods=["POST"], endpoint="register_component"),
        Rule("/_sim/components/<appid>/withheld_sets", methods=["POST"], endpoint="withhold_sets"),
        Rule("/_sim/accounts/<appid>/lacks_api", methods=["POST"], endpoint="lacks_api"),
        Rule("/_sim/authorizers/<appid>/messages", methods=["POST"], endpoint="send_message"),
        Rule("/_sim/release_test", methods=["POST"], endpoint="release_test"),
        Rule("/_sim/messages", methods=["GET"], endpoint="messages"),
        Rule("/_sim/custom_messages", methods=["GET"], endpoint="custom_messages"),
        Rule("/_sim/tickets/push", methods=["POST"], endpoint="push_ticket"),
        Rule("/_sim/tickets/issue", methods=["POST"], endpoint="issue_ticket"),
        Rule("/_sim/authorizers", methods=["POST"], endpoint="authorize"),
        Rule("/_sim/authorizers/<appid>", methods=["GET"], endpoint="authorizer"),
        Rule("/_sim/authorizers/<appid>/reauthorize", methods=["POST"], endpoint="reauthorize"),
        Rule("/_sim/authorizers/<appid>/revoke", methods=["POST"], endpoint="revoke"),
        Rule(
            "/_sim/authorizers/<appid>/invalidate_refresh_token",
            methods=["POST"],
            endpoint="invalidate_refresh_token",
        ),
        Rule("/_sim/direct_accounts", methods=["POST"], endpoint="register_direct_account"),
        Rule("/_sim/tokens/invalidate", methods=["POST"], endpoint="invalidate_tokens"),
        Rule("/_sim/faults", methods=["POST"], endpoint="faults"),
        Rule("/_sim/faults/clear", methods=["POST"], endpoint="clear_faults"),
        Rule("/_sim/latency", methods=["POST"], endpoint="latency"),
        Rule("/_sim/clock", methods=["POST"], endpoint="clock"),
        Rule("/_sim/counters", methods=["GET"], endpoint="counters"),
        Rule("/_sim/calls", methods=["GET"], endpoint="calls"),
        Rule("/_sim/uploads", methods=["GET"], endpoint="uploads"),
        Rule("/_sim/events", methods=["GET"], endpoint="events"),
        Rule("/_sim/state", methods=["GET"], endpoint="state"),
    ]
)


def _json(data: Any, status: int = 200) -> Response:
    return Response(json.dumps(data, ensure_ascii=False), status=status, content_type="application/json")


def _event_summary(result: dict[str, Any] | None) -> dict[str, Any] | None:
    if result is None:
        return None
    return {k: result[k] for k in ("status_code", "response_text", "error")}


class ControlApi:
    def __init__(self, app: SimulatorApp, *, token: str | None = None) -> None:
        self.app = app
        self.state = app.state
        self._token = token or None

    def authorized(self, request: Request) -> bool:
        if self._token is None:
            return True
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), self._token.encode())

    def dispatch(self, request: Request) -> Response:
        if not self.authorized(request):
            response = _json({"error": "the control API needs Authorization: Bearer <SIMULATOR_CONTROL_TOKEN>"}, 401)
            response.headers["WWW-Authenticate"] = 'Bearer realm="simulator control"'
            return response
        try:
            endpoint, args = _RULES.bind_to_environ(request.environ).match()
            body: dict[str, Any] = {}
            if request.method == "POST":
                raw = request.get_data()
                body = json.loads(raw) if raw.strip() else {}
                if not isinstance(body, dict):
                    raise ControlError("the body must be a JSON object")
            return _json(getattr(self, f"_{endpoint}")(request, body, **args))
        except HTTPException as exc:
            return _json({"error": exc.description}, exc.code or 500)
        except (ControlError, FaultError, ValueError, TypeError) as exc:
            return _json({"error": str(exc)}, getattr(exc, "status", 400))

    def _push(self, event: Any, push: bool, url: str | None = None) -> dict[str, Any] | None:
        return _event_summary(self.app.deliver_now(event, url=url)) if push else None

    # -- set-up -------------------------------------------------------------------------------------------

    def _reset(self, request: Request, body: dict) -> dict:
        self.state.reset()
        return {"ok": True}

    def _config(self, request: Request, body: dict) -> dict:
        with self.state.lock:
            self.state.config.update(body)
            return vars(self.state.config).copy()

    def _register_component(self, request: Request, body: dict) -> dict:
        with self.state.lock:
            comp = authz.register_component(self.state, **body)
        return {"component_appid": comp.appid, "events_url": comp.events_url, "messages_url": comp.messages_url}

    def _withhold_sets(self, request: Request, body: dict, appid: str) -> dict:
        with self.state.lock:
            comp = authz.control_component(self.state, appid)
            return {"component_appid": appid, "withheld_sets": authz.withhold_permission_sets(comp, body.get("set_ids"))}

    def _lacks_api(self, request: Request, body: dict, appid: str) -> dict:
        with self.state.lock:
            lacks = authz.set_account_lacks_api(self.state, appid, body.get("path"), body.get("lacks", True))
        return {"appid": appid, "path": body.get("path"), "lacks": lacks}

    def _register_direct_account(self, request: Request, body: dict) -> dict:
        with self.state.lock:
            account = authz.register_direct_account(self.state, **body)
        return {"appid": account.appid, "func_info": account.func_info}

    # -- tickets ------------------------------------------------------------------------------------------

    def _issue_ticket(self, request: Request, body: dict) -> dict:
        with self.state.lock:
            comp = authz.control_component(self.state, body.get("component_appid"))
            ticket, _event = authz.issue_ticket(self.state, comp)
        return {"ticket": ticket}

    def _push_ticket(self, request: Request, body: dict) -> dict:
        with self.state.lock:
            comp = authz.control_component(self.state, body.get("component_appid"))
            ticket, event = authz.issue_ticket(self.state, comp)
        return {"ticket": ticket, **(self._push(event, True, body.get("url")) or {})}

    # -- authorizers --------------------------------------------------------------------------------------

    def _authorize(self, request: Request, body: dict) -> dict:
        account_type = body.get("account_type", "official_account")
        with self.state.lock:
            comp = authz.control_component(self.state, body.get("component_appid"))
            grant = authz.grant(
                self.state,
                comp,
                authorizer_appid=body.get("authorizer_appid"),
                func_info=body.get("func_info", authz.DEFAULT_FUNC_INFO.get(account_type, [])),
                account_type=account_type,
                nick_name=body.get("nick_name"),
                principal_name=body.get("principal_name"),
            )
            refresh_token = grant.authorizer.refresh_token
        return {
            "authorizer_appid": grant.authorizer.appid,
            "auth_code": grant.auth_code.code,
            "refresh_token": refresh_token,
            "info_type": grant.info_type,
            "event": self._push(grant.event, bool(body.get("push_event"))),
        }

    def _reauthorize(self, request: Request, body: dict, appid: str) -> dict:
        with self.state.lock:
            authorizer = authz.find_authorizer(self.state, appid, body.get("component_appid"))
            grant = authz.reauthorize(self.state, authorizer, body.get("func_info"))
            refresh_token = authorizer.refresh_token
        return {
            "authorizer_appid": appid,
            "auth_code": grant.auth_code.code,
            "refresh_token": refresh_token,
            "info_type": grant.info_type,
            "event": self._push(grant.event, bool(body.get("push_event"))),
        }

    def _revoke(self, request: Request, body: dict, appid: str) -> dict:
        with self.state.lock:
            authorizer = authz.find_authorizer(self.state, appid, body.get("component_appid"))
            event = authz.revoke(self.state, authorizer)
        return {"authorizer_appid": appid, "event": self._push(event, bool(body.get("push_event")))}

    def _invalidate_refresh_token(self, request: Request, body: dict, appid: str) -> dict:
        with self.state.lock:
            authorizer = authz.find_authorizer(self.state, appid, body.get("component_appid"))
            new = authz.invalidate_refresh_token(self.state, authorizer)
        return {"authorizer_appid": appid, "refresh_token": new}

    def _authorizer(self, request: Request, body: dict, appid: str) -> dict:
        with self.state.lock:
            authorizer = authz.find_authorizer(self.state, appid, request.args.get("component_appid"))
            return authz.authorizer_view(self.state, authorizer)

    # -- messages on behalf of authorizers, the release check ---------------------------------------------

    def _send_message(self, request: Request, body: dict, appid: str) -> dict:
        content = body.get("content")
        if not isinstance(content, str):
            raise ControlError("content must be a string")
        with self.state.lock:
            authorizer = authz.find_authorizer(self.state, appid, body.get("component_appid"))
            comp = self.state.components[authorizer.component_appid]
            message = pending_text(
                self.state,
                comp,
                authorizer,
                user_name=authz.gh_user_name(appid),
                content=content,
                from_user=body.get("from_user") or new_openid(),
                url=body.get("url"),
            )
        result = deliver_message(message)
        with self.state.lock:
            self.state.messages.append({**result, "time": self.state.now()})
        return result

    def _release_test(self, request: Request, body: dict) -> dict:
        return run_release_test(
            self.app,
            component_appid=body.get("component_appid"),
            account_type=body.get("account_type", "official_account"),
            url=body.get("url"),
            wait=body.get("wait", 10.0),
        )

    def _messages(self, request: Request, body: dict) -> list:
        with self.state.lock:
            return list(self.state.messages)

    def _custom_messages(self, request: Request, body: dict) -> list:
        with self.state.lock:
            return list(self.state.custom_messages)

    # -- failures, latency, time --------------------------------------------------------------------------

    def _invalidate_tokens(self, request: Request, body: dict) -> dict:
        errcode = body.get("errcode", 40001)
        if errcode not in TOKEN_ERRCODES:
            raise ControlError(f"errcode must be one of {TOKEN_ERRCODES}")
        with self.state.lock:
            return {"invalidated": self.state.invalidate_tokens(body.get("appid"), errcode)}

    def _faults(self, request: Request, body: dict) -> dict:
        path = body.get("path")
        if not isinstance(path, str) or not path:
            raise ControlError("path is required")
        with self.state.lock:
            if "rate" in body:
                self.state.faults.set_rate(
                    path, body["rate"], body.get("kinds") or [], int(body.get("seed", 0))
                )
            else:
                spec = {k: body[k] for k in ("kind", "errcode", "status", "seconds", "errmsg") if k in body}
                self.state.faults.add(path, Fault.parse(spec), body.get("count", 1))
            return self.state.faults.dump()

    def _clear_faults(self, request: Request, body: dict) -> dict:
        with self.state.lock:
            self.state.faults.clear()
            return self.state.faults.dump()

    def _latency(self, request: Request, body: dict) -> dict:
        path = body.get("path")
        if not isinstance(path, str) or not path:
            raise ControlError("path is required")
        with self.state.lock:
            self.state.faults.set_latency(path, body.get("seconds", 0))
            return self.state.faults.dump()["latency"]

    def _clock(self, request: Request, body: dict) -> dict:
        seconds = body.get("advance_seconds", 0)
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
            raise ControlError("advance_seconds must be a non-negative number")
        with self.state.lock:
            self.state.clock.advance(seconds)
            return {"now": self.state.now(), "offset": self.state.clock.offset}

    # -- records ------------------------------------------------------------------------------------------

    def _counters(self, request: Request, body: dict) -> dict:
        with self.state.lock:
            return dict(self.state.counters)

    def _calls(self, request: Request, body: dict) -> list:
        path = request.args.get("path")
        with self.state.lock:
            return [c for c in self.state.calls if path is None or c["path"] == path]

    def _uploads(self, request: Request, body: dict) -> list:
        with self.state.lock:
            return list(self.state.uploads)

    def _events(self, request: Request, body: dict) -> list:
        with self.state.lock:
            return list(self.state.events)

    def _state(self, request: Request, body: dict) -> dict:
        with self.state.lock:
            return self.state.dump()
