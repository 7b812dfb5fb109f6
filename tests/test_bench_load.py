"""bench/load.py's lean HTTP client: what a server receives from it, kept-alive connections, and a
connection the server dropped while idle. Against a server on loopback made here."""

from __future__ import annotations

import http.server
import threading

import pytest

from bench.load import Client, HTTPError, run
from openplatform.wechat.simulator.multipart import parse_parts


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: list[dict] = []
    drop_after_answer = False

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()
        if type(self).drop_after_answer:  # as a server whose keep-alive timeout ran out, without a word
            self.close_connection = True

    def do_GET(self) -> None:  # noqa: N802
        self.seen.append({"path": self.path, "port": self.client_address[1]})
        self._answer(404 if self.path == "/missing" else 200, b'{"ok": true}')

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.seen.append({"path": self.path, "port": self.client_address[1], "body": body,
                          "content_type": self.headers["Content-Type"], "auth": self.headers["Authorization"]})
        self._answer(202, b'{"id": "u1"}')

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server():
    _Handler.seen, _Handler.drop_after_answer = [], False
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", _Handler
    httpd.shutdown()
    httpd.server_close()


def test_a_post_is_the_multipart_form_any_client_sends_fields_first(server):
    url, handler = server
    image = bytes(range(256)) * 300 + b"\r\n--not-a-boundary\r\n"
    with Client() as client:
        response = client.post(f"{url}/api/v1/uploads/?fit=false", files={"media": ("image.jpg", image, "image/jpeg")},
                               data={"authorizer_appid": "wx1234", "fit": "true"},
                               headers={"Authorization": "Api-Key k.s"})
    assert response.status_code == 202 and response.json() == {"id": "u1"}
    (seen,) = handler.seen
    assert seen["path"] == "/api/v1/uploads/?fit=false" and seen["auth"] == "Api-Key k.s"
    parts = parse_parts(seen["content_type"], seen["body"])
    assert [(p.name, p.filename, p.content_type) for p in parts] == [
        ("authorizer_appid", None, None), ("fit", None, None), ("media", "image.jpg", "image/jpeg")]
    assert parts[0].data == b"wx1234" and parts[2].data == image


def test_a_client_keeps_its_connection_and_another_client_has_its_own(server):
    url, handler = server
    with Client() as one, Client() as two:
        for _ in range(3):
            one.get(f"{url}/healthz").raise_for_status()
        two.get(f"{url}/healthz").raise_for_status()
    ports = [s["port"] for s in handler.seen]
    assert ports[0] == ports[1] == ports[2] != ports[3]


def test_a_connection_the_server_dropped_while_idle_is_replaced_and_the_request_sent_once(server):
    url, handler = server
    handler.drop_after_answer = True
    with Client() as client:
        assert client.get(f"{url}/a").status_code == 200
        assert client.post(f"{url}/b", data={"x": "1"}).status_code == 202
        assert client.get(f"{url}/c").status_code == 200
    assert [s["path"] for s in handler.seen] == ["/a", "/b", "/c"]
    assert len({s["port"] for s in handler.seen}) == 3


def test_an_error_status_is_refused_when_asked_and_load_run_records_it(server):
    url, _ = server
    with Client() as client:
        response = client.get(f"{url}/missing")
        assert response.status_code == 404
        with pytest.raises(HTTPError, match="HTTP 404"):
            response.raise_for_status()
    result = run(6, 2, lambda c, i: c.get(f"{url}/{'missing' if i % 3 == 0 else 'ok'}").raise_for_status())
    assert len(result.latencies) == 4 and len(result.errors) == 2 and sorted(set(result.clients)) == [0, 1]
