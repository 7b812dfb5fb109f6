"""Serve the simulator over real HTTP: in a background thread for tests, or in the foreground (CLI).

``python -m openplatform.wechat.simulator.server --port 9000`` runs it without Django;
``manage.py wechat_simulator`` does the same with the component taken from Django settings.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from . import authorization as authz
from .app import SimulatorApp

logger = logging.getLogger("openplatform.wechat.simulator")

# WeChat pushes a fresh component_verify_ticket every 10 minutes (docs/wechat-protocol.md §1).
TICKET_INTERVAL = 600.0
# Until the first push is acknowledged (the web app may still be starting), retry this often.
TICKET_RETRY = 5.0


class _QuietHandler(WSGIRequestHandler):
    """Tests and benchmarks send thousands of requests; one stderr line each is only noise."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        logger.debug("%s %s", self.requestline, code)


class SimulatorServer:
    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, *, quiet: bool = True, control_token: str | None = None
    ) -> None:
        self.host = host
        self.port = port
        self.quiet = quiet
        self.app = SimulatorApp(control_token=control_token)
        self.state = self.app.state
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._pushers: list[threading.Thread] = []

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the simulator is not started")
        return f"http://{self.host}:{self._server.port}"

    def start(self) -> SimulatorServer:
        if self._server is not None:
            return self
        self._stopping.clear()
        self._server = make_server(
            self.host,
            self.port,
            self.app,
            threaded=True,
            request_handler=_QuietHandler if self.quiet else None,
        )
        # A short poll interval keeps stop() quick; the loop idles on select() in between.
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="wechat-simulator",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        for pusher in self._pushers:
            pusher.join(timeout=5)
        self._server = self._thread = None
        self._pushers = []

    def __enter__(self) -> SimulatorServer:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    def register_component(self, **kwargs: Any) -> None:
        with self.state.lock:
            authz.register_component(self.state, **kwargs)

    def start_ticket_pusher(self, component_appid: str, interval: float = TICKET_INTERVAL) -> None:
        """Push a ticket now and every ``interval`` seconds, as WeChat does, until stopped."""

        def run() -> None:
            while not self._stopping.is_set():
                with self.state.lock:
                    comp = self.state.components.get(component_appid)
                    _ticket, event = authz.issue_ticket(self.state, comp) if comp else (None, None)
                if event is None:
                    return
                result = self.app.deliver_now(event)
                ok = result["status_code"] == 200 and (result["response_text"] or "").strip() == "success"
                logger.info(
                    "pushed component_verify_ticket to %s: %s",
                    event.url,
                    result["status_code"] or result["error"],
                )
                self._stopping.wait(interval if ok else min(TICKET_RETRY, interval))

        thread = threading.Thread(target=run, name="wechat-simulator-tickets", daemon=True)
        thread.start()
        self._pushers.append(thread)

    def run_forever(self) -> None:
        """Block until Ctrl-C or SIGTERM, then stop cleanly."""

        def on_term(signum: int, frame: Any) -> None:
            raise KeyboardInterrupt

        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, on_term)
        self.start()
        try:
            while self._thread is not None and self._thread.is_alive():
                self._thread.join(timeout=0.5)
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()


class UnsafeBind(ValueError):
    """Listening beyond loopback with an open control API."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, control_token: str | None) -> None:
    """Beyond loopback (a staging network) the control API must need a token: refuse to start otherwise."""
    if not control_token and not is_loopback(host):
        raise UnsafeBind(
            f"refusing to listen on {host} with an open control API (/_sim/): set SIMULATOR_CONTROL_TOKEN "
            "(or --control-token), or listen on 127.0.0.1"
        )


def serve(
    *,
    host: str,
    port: int,
    component: dict[str, str] | None,
    ticket_interval: float,
    control_token: str | None = None,
    out: Any = sys.stdout,
) -> None:
    """Shared by the CLI and the management command: start, register, push tickets, run until stopped."""
    check_bind(host, control_token)
    server = SimulatorServer(host, port, quiet=False, control_token=control_token).start()
    if component:
        server.register_component(**component)
        out.write(f"registered component {component['component_appid']} -> {component.get('events_url')}\n")
        if ticket_interval > 0 and component.get("events_url"):
            server.start_ticket_pusher(component["component_appid"], ticket_interval)
    guard = "needs the control token" if control_token else "open: no control token"
    out.write(f"WeChat simulator listening on {server.url} (control API under {server.url}/_sim/, {guard})\n")
    out.flush()
    server.run_forever()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the WeChat Open Platform simulator until stopped.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--component-appid", default=os.environ.get("WECHAT_COMPONENT_APPID", ""))
    parser.add_argument("--component-appsecret", default=os.environ.get("WECHAT_COMPONENT_APPSECRET", ""))
    parser.add_argument("--token", default=os.environ.get("WECHAT_COMPONENT_TOKEN", ""))
    parser.add_argument("--aes-key", default=os.environ.get("WECHAT_COMPONENT_AES_KEY", ""))
    parser.add_argument("--events-url", default="", help="the component's authorization-event URL")
    parser.add_argument("--ticket-interval", type=float, default=TICKET_INTERVAL, help="0 disables pushes")
    parser.add_argument(
        "--control-token",
        default=os.environ.get("SIMULATOR_CONTROL_TOKEN", ""),
        help="bearer token the control API (/_sim/) requires (default $SIMULATOR_CONTROL_TOKEN; empty: open)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    component = None
    if args.component_appid and args.component_appsecret and args.token and args.aes_key:
        component = {
            "component_appid": args.component_appid,
            "component_appsecret": args.component_appsecret,
            "token": args.token,
            "encoding_aes_key": args.aes_key,
            "events_url": args.events_url or None,
        }
    try:
        serve(host=args.host, port=args.port, component=component, ticket_interval=args.ticket_interval,
              control_token=args.control_token or None)
    except UnsafeBind as exc:
        parser.error(str(exc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
