"""Closed-loop load: `concurrency` clients, each with its own HTTP session, share `n` requests."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import requests


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


def run(n: int, concurrency: int, request: Callable[[requests.Session, int], Any]) -> LoadResult:
    """Call `request(session, i)` for i in range(n) from `concurrency` threads; time the whole."""
    counter = itertools.count()
    lock = threading.Lock()
    result = LoadResult(elapsed=0.0)
    start = threading.Barrier(concurrency + 1)

    def client(number: int) -> None:
        with requests.Session() as session:
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
