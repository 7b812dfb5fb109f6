"""The WeChat simulator in a process of its own, for `make bench`: gunicorn serving `make_app()`.

In the bench process it would share one interpreter (one GIL) with the load clients: a direct loop of 32
calls in flight then measures the bench, not WeChat's latency. Here it has a core of its own to use, and
its CPU is counted apart ("simulator"). It is served by gunicorn's gthread worker, one process (the
state lives there), with keep-alive connections, as WeChat's API keeps them: werkzeug's development
server (SimulatorServer) closes every connection, which costs each call a TCP handshake and the
simulator a new thread, on both sides of every ratio. The component of bench/env.py is registered at
start; the control API (/_sim/) works as usual. Two bench-only routes are added:

    POST /_bench/grants {"n": 10000, "func_info": [1, 11]}
        -> {"grants": [[authorizer_appid, refresh_token], ...]}

`n` authorizations in one call (the control API's `authorize`, in bulk), for the scheduled-refresh
scenario's thousands of authorizers; and

    GET /_bench/outcomes?path=/cgi-bin/media/uploadimg -> {"0": 1200, "40001": 3}

how many calls to `path` answered each errcode (HTTP failures under "http <status>"), without sending
every call's record over the control API.
"""

from __future__ import annotations

import json

from werkzeug.wrappers import Request, Response

from bench.env import COMPONENT
from openplatform.wechat.simulator import authorization as authz
from openplatform.wechat.simulator.app import SimulatorApp

GRANTS_PATH = "/_bench/grants"
OUTCOMES_PATH = "/_bench/outcomes"


class BenchRoutes:
    """The simulator's WSGI app with the bench-only route in front."""

    def __init__(self, app) -> None:
        self.app = app
        self.state = app.state

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO")
        if path == OUTCOMES_PATH:
            return self.outcomes(Request(environ))(environ, start_response)
        if path != GRANTS_PATH:
            return self.app(environ, start_response)
        body = json.loads(Request(environ).get_data() or b"{}")
        n, func_info = int(body.get("n", 1)), list(body.get("func_info", [1, 11]))
        with self.state.lock:
            comp = self.state.components[COMPONENT["component_appid"]]
            grants = [authz.grant(self.state, comp, authorizer_appid=None, func_info=func_info) for _ in range(n)]
            pairs = [[g.authorizer.appid, g.authorizer.refresh_token] for g in grants]
        return Response(json.dumps({"grants": pairs}), content_type="application/json")(environ, start_response)

    def outcomes(self, request: Request) -> Response:
        wanted = request.args.get("path")
        counts: dict[str, int] = {}
        with self.state.lock:
            for call in self.state.calls:
                if call["path"] == wanted:
                    status = call.get("http_status")
                    key = str(call.get("errcode") or 0) if status == 200 else f"http {status}"
                    counts[key] = counts.get(key, 0) + 1
        return Response(json.dumps(counts), content_type="application/json")


def make_app() -> BenchRoutes:
    """The simulator's WSGI app with the bench's component registered and the bench-only routes."""
    app = SimulatorApp()
    with app.state.lock:
        authz.register_component(app.state, **COMPONENT, events_url=None)
    return BenchRoutes(app)
