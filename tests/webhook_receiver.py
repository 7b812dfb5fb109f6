"""A merchant's webhook receiver for tests: a real HTTP server on 127.0.0.1 in a thread.

It records every POST (path, headers, raw body) and answers `status` (200 by default). `stop()` closes
the port (connections are refused, as when a receiver is down) and `start()` opens the same port again.
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_verify():
    """The README's verification snippet, executed as a merchant would paste it."""
    block = re.search(r"```python\n(.*?def verify_webhook.*?)```", README.read_text(), re.S)
    assert block, "the README has no verify_webhook snippet"
    code = block.group(1)
    assert len(code.strip().splitlines()) <= 10
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    return namespace["verify_webhook"]


def add_endpoint(client, url: str, events=("*",)) -> dict:
    """An endpoint added through the merchant API: its JSON, with the secret shown once."""
    response = client.post("/api/v1/webhook-endpoints/", {"url": url, "events": list(events)}, format="json")
    assert response.status_code == 201, response.content
    return response.json()


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def event(self) -> dict:
        return json.loads(self.body)


class Receiver:
    def __init__(self) -> None:
        self.received: list[Received] = []
        self.status = 200
        #: Seconds to wait after reading a request, before answering.
        self.delay = 0.0
        self.answer = b"ok"
        self.port = 0
        #: An ssl.SSLContext to serve https instead of http.
        self.tls = None
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver._lock:
                    receiver.received.append(Received(self.path, dict(self.headers.items()), body))
                    status, answer, delay = receiver.status, receiver.answer, receiver.delay
                if delay:
                    time.sleep(delay)
                self.send_response(status)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        if self.tls is not None:
            self._server.socket = self.tls.wrap_socket(self._server.socket, server_side=True)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def events(self) -> list[dict]:
        with self._lock:
            return [r.event for r in self.received]

    def wait_for(self, count: int, timeout: float = 30) -> list[Received]:
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                if len(self.received) >= count:
                    return list(self.received)
            if time.monotonic() > deadline:
                raise AssertionError(f"the receiver got {len(self.received)} of {count} deliveries in {timeout}s")
            time.sleep(0.05)


@pytest.fixture
def receiver():
    r = Receiver()
    r.start()
    try:
        yield r
    finally:
        r.stop()


@pytest.fixture
def loopback_allowed(settings):
    """Webhooks may reach 127.0.0.0/8 (and plain http there), as a local run or staging configures it."""
    settings.WEBHOOK_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    return settings
