"""Closed-loop load: `concurrency` clients, each with its own HTTP connections, share `n` requests.

The clients run in the bench process, on the same cores as the service they measure, so they are kept
lean: `Client` speaks HTTP/1.1 over `http.client` with keep-alive and encodes a multipart body with
urllib3's encoder: about a quarter of the CPU per 90 KB POST that `requests` takes (bench/RESULTS.md,
"Issue 10, seventh pass"). What the server receives is what any HTTP client sends: the same headers that matter,
fields before files (as requests, curl -F and browsers send them), one connection kept per client.
"""

from __future__ import annotations

import http.client
import itertools
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from urllib3 import encode_multipart_formdata


class HTTPError(Exception):
    """An answer the caller asked to be refused (`Response.raise_for_status`)."""


@dataclass
class Response:
    status_code: int
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.content)

    def raise_for_status(self) -> None:
        if self.status_code >= 400:
            raise HTTPError(f"HTTP {self.status_code}: {self.text[:200]}")


#: A kept-alive connection the server closed while idle fails on its next request before any answer;
#: that request is sent again once, on a new connection (as urllib3 does for a dropped pooled connection).
_STALE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)


class Client:
    """One load client's HTTP: a kept-alive connection per host and port, used by one thread at a time."""

    def __init__(self) -> None:
        self._connections: dict[tuple[str, int], http.client.HTTPConnection] = {}

    def close(self) -> None:
        for connection in self._connections.values():
            connection.close()
        self._connections.clear()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def get(self, url: str, *, timeout: float = 60) -> Response:
        return self._request("GET", url, None, {}, timeout)

    def post(self, url: str, *, files: dict[str, tuple[str, bytes, str]] | None = None,
             data: dict[str, str] | None = None, headers: dict[str, str] | None = None,
             timeout: float = 60) -> Response:
        """A multipart/form-data POST: `data`'s fields, then `files` ({name: (filename, bytes, type)}), encoded
        by urllib3's encoder (as requests and openplatform/wechat/client.py encode theirs)."""
        fields = [*(data or {}).items(), *(files or {}).items()]
        body, content_type = encode_multipart_formdata(fields)
        return self._request("POST", url, body, {**(headers or {}), "Content-Type": content_type}, timeout)

    def _request(self, method: str, url: str, body: bytes | None, headers: dict[str, str], timeout: float) -> Response:
        parts = urlsplit(url)
        key = (parts.hostname, parts.port or 80)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        connection = self._connections.get(key)
        reused = connection is not None
        if connection is None:
            connection = self._connections[key] = http.client.HTTPConnection(*key, timeout=timeout)
        try:
            connection.request(method, target, body, headers)
            answer = connection.getresponse()
            response = Response(answer.status, answer.read())
        except BaseException as exc:
            connection.close()
            del self._connections[key]
            if reused and isinstance(exc, _STALE):
                return self._request(method, url, body, headers, timeout)
            raise
        if answer.will_close:
            connection.close()
            del self._connections[key]
        return response


@dataclass
class LoadResult:
    elapsed: float
    latencies: list[float] = field(default_factory=list)  # seconds, one per request
    clients: list[int] = field(default_factory=list)  # which client sent each of them (0 .. concurrency - 1)
    results: list[Any] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def client_means_ms(self) -> list[float]:
        """Each client's mean latency, lowest first. A client keeps its connection, and the connection
        stays with the web process that accepted it: a spread here is that process's queue."""
        by_client: dict[int, list[float]] = {}
        for client, took in zip(self.clients, self.latencies, strict=True):
            by_client.setdefault(client, []).append(took)
        return sorted(sum(v) / len(v) * 1000 for v in by_client.values())

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.elapsed if self.elapsed else 0.0

    def percentile_ms(self, q: float) -> float:
        ordered = sorted(self.latencies)
        if not ordered:
            return float("nan")
        index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))
        return ordered[index] * 1000


def run(n: int, concurrency: int, request: Callable[[Client, int], Any]) -> LoadResult:
    """Call `request(client, i)` for i in range(n) from `concurrency` threads; time the whole."""
    counter = itertools.count()
    lock = threading.Lock()
    result = LoadResult(elapsed=0.0)
    start = threading.Barrier(concurrency + 1)

    def client(number: int) -> None:
        with Client() as session:
            start.wait()
            while True:
                with lock:
                    i = next(counter)
                if i >= n:
                    return
                t0 = time.perf_counter()
                try:
                    value = request(session, i)
                except Exception as exc:  # recorded and reported, never hidden
                    with lock:
                        result.errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                took = time.perf_counter() - t0
                with lock:
                    result.latencies.append(took)
                    result.clients.append(number)
                    result.results.append(value)

    threads = [threading.Thread(target=client, args=(number,), daemon=True) for number in range(concurrency)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    result.elapsed = time.perf_counter() - t0
    return result
