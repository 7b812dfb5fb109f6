"""Injected failures and latency per endpoint path.

Not thread-safe on its own: the state's lock guards every call. The WSGI layer takes the fault (and the
latency) under the lock, then sleeps and answers outside it.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

FAULT_KINDS = ("errcode", "http_status", "delay", "not_json")
ANY_PATH = "*"


class FaultError(ValueError):
    """A fault description the control API cannot accept."""


@dataclass(frozen=True)
class Fault:
    kind: str
    errcode: int = -1  # kind "errcode": -1 is WeChat's "system busy"
    status: int = 500  # kind "http_status"
    seconds: float = 1.0  # kind "delay": sleep, then answer normally
    #: kind "errcode": the errmsg text (without it, WeChat's usual text for the errcode); "{ip}" in it
    #: becomes the caller's address, as WeChat names it in 40164 and 61004 (docs/wechat-protocol.md §11)
    errmsg: str | None = None

    @classmethod
    def parse(cls, spec: Any) -> Fault:
        """``"errcode"``, ``{"kind": "errcode", "errcode": 45009}`` or, with its own text,
        ``{"kind": "errcode", "errcode": 40164, "errmsg": "invalid ip {ip}, not in whitelist"}``."""
        if isinstance(spec, str):
            spec = {"kind": spec}
        if not isinstance(spec, dict):
            raise FaultError(f"a fault is a kind name or an object, not {spec!r}")
        kind = spec.get("kind")
        if kind not in FAULT_KINDS:
            raise FaultError(f"fault kind must be one of {FAULT_KINDS}, not {kind!r}")
        fault = cls(
            kind=kind,
            errcode=spec.get("errcode", -1),
            status=spec.get("status", 500),
            seconds=spec.get("seconds", 1.0),
            errmsg=spec.get("errmsg"),
        )
        if not isinstance(fault.errcode, int) or not isinstance(fault.status, int):
            raise FaultError("errcode and status must be integers")
        if fault.errmsg is not None and not isinstance(fault.errmsg, str):
            raise FaultError("errmsg must be a string")
        if not 100 <= fault.status <= 599:
            raise FaultError("status must be an HTTP status code")
        if not isinstance(fault.seconds, int | float) or fault.seconds < 0:
            raise FaultError("seconds must be a non-negative number")
        return fault


@dataclass
class _Rate:
    rate: float
    kinds: list[Fault]
    seed: int
    rng: random.Random


class FaultBook:
    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self._queues: dict[str, deque[Fault]] = {}
        self._rates: dict[str, _Rate] = {}
        self._latency: dict[str, float] = {}

    def add(self, path: str, fault: Fault, count: int) -> None:
        """The next ``count`` calls to ``path`` (``"*"``: any path) get ``fault``, after earlier ones."""
        if not isinstance(count, int) or count < 1:
            raise FaultError("count must be a positive integer")
        self._queues.setdefault(path, deque()).extend([fault] * count)

    def set_rate(self, path: str, rate: float, kinds: list[Any], seed: int) -> None:
        """A random ``rate`` of calls fail with one of ``kinds``; seeded so a run can be replayed."""
        if not isinstance(rate, int | float) or not 0 <= rate <= 1:
            raise FaultError("rate must be between 0 and 1")
        if rate == 0:
            self._rates.pop(path, None)
            return
        parsed = [Fault.parse(k) for k in kinds or ["errcode"]]
        self._rates[path] = _Rate(rate=float(rate), kinds=parsed, seed=seed, rng=random.Random(seed))

    def set_latency(self, path: str, seconds: float) -> None:
        if not isinstance(seconds, int | float) or seconds < 0:
            raise FaultError("seconds must be a non-negative number")
        if seconds == 0:
            self._latency.pop(path, None)
        else:
            self._latency[path] = float(seconds)

    def latency_for(self, path: str) -> float:
        return self._latency.get(path, self._latency.get(ANY_PATH, 0.0))

    def take(self, path: str) -> Fault | None:
        """The fault for this call, if any: queued ones first (path, then "*"), then random ones."""
        for key in (path, ANY_PATH):
            queue = self._queues.get(key)
            if queue:
                return queue.popleft()
        for key in (path, ANY_PATH):
            rate = self._rates.get(key)
            if rate and rate.rng.random() < rate.rate:
                return rate.rng.choice(rate.kinds)
        return None

    def dump(self) -> dict[str, Any]:
        return {
            "queued": {p: [asdict(f) for f in q] for p, q in self._queues.items() if q},
            "rates": {
                p: {"rate": r.rate, "kinds": [asdict(f) for f in r.kinds], "seed": r.seed}
                for p, r in self._rates.items()
            },
            "latency": dict(self._latency),
        }
