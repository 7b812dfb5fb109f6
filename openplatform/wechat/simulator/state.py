"""In-memory state of the simulated WeChat Open Platform, and the rules several endpoints share.

Pure data and rules, no HTTP. Everything here is read and written under ``state.lock`` (one RLock):
the WSGI layer holds it only while it evaluates a rule, never while it sleeps for simulated latency,
so concurrent requests still overlap like they would against the real API.

Time comes from ``state.clock`` so tests can move it forward (token, code and ticket expiry) without
sleeping.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import Counter, deque
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from .faults import FaultBook

# errmsg texts as WeChat writes them (docs/wechat-protocol.md §4, §6, §7, §10, §11).
ERRMSGS: dict[int, str] = {
    -1: "system error",
    40001: "invalid credential, access_token is invalid or not latest",
    40002: "invalid grant_type",
    40005: "invalid file type",
    40009: "invalid image size",
    40003: "invalid openid",
    40013: "invalid appid",
    40125: "invalid appsecret",
    # {ip}: the caller's address, filled in by the app (WeChat names it; docs/wechat-protocol.md §11)
    40164: "invalid ip {ip} ipv6 ::ffff:{ip}, not in whitelist",
    41001: "access_token missing",
    41002: "appid missing",
    41004: "appsecret missing",
    41005: "media data missing",
    42001: "access_token expired",
    44001: "empty media data",
    45009: "reach max api daily quota limit",
    47001: "data format error",
    48001: "api unauthorized",
    48006: "forbid to clear quota because of reaching the limit",
    61003: "component is not authorized by this account",
    61004: "access clientip is not registered requestIP: {ip}",
    61005: "component ticket is expired",
    61006: "component ticket is invalid",
    61007: "api is unauthorized to component",
    61009: "code is invalid",
    61010: "code is expired",
    61011: "invalid component",
    61023: "refresh_token is invalid",
    76021: "cgi_path not found, please check",
}


class ApiError(Exception):
    """A WeChat-style error answer: HTTP 200 with ``{"errcode", "errmsg"}``."""

    def __init__(self, errcode: int, errmsg: str | None = None) -> None:
        self.errcode = errcode
        self.errmsg = errmsg or ERRMSGS.get(errcode, "error")
        super().__init__(f"{errcode} {self.errmsg}")

    def as_json(self) -> dict[str, Any]:
        # Real errmsgs end with a request id; clients must not compare errmsg exactly.
        return {"errcode": self.errcode, "errmsg": f"{self.errmsg} rid: {secrets.token_hex(12)}"}


class ControlError(Exception):
    """A bad request to the control API (/_sim/...), answered with an HTTP error status."""

    def __init__(self, message: str, status: int = 400) -> None:
        self.status = status
        super().__init__(message)


class Clock:
    """Wall-clock time plus an offset that tests move forward with ``advance``."""

    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


@dataclass
class Config:
    component_token_ttl: int = 7200
    authorizer_token_ttl: int = 7200  # also used for stable_token (direct accounts)
    # After a refresh the previous token keeps working this long (docs/wechat-protocol.md §4).
    token_grace_seconds: int = 300
    rotate_refresh_tokens: bool = False
    daily_limit: int = 100000
    pre_auth_code_ttl: int = 600
    auth_code_ttl: int = 3600
    ticket_ttl: int = 12 * 3600
    clear_quota_monthly_limit: int = 10
    # stable_token (getStableAccessToken doc): a normal call renews only in the token's last 5 minutes;
    # force_refresh is limited to 20 a day, at least 30 s apart (a closer one does not refresh).
    stable_token_renew_seconds: int = 300
    stable_force_daily_limit: int = 20
    stable_force_min_interval: int = 30

    def update(self, changes: dict[str, Any]) -> None:
        known = {f.name: f.type for f in fields(self)}
        unknown = set(changes) - set(known)
        if unknown:
            raise ControlError(f"unknown config keys: {sorted(unknown)}")
        for name, value in changes.items():
            if name == "rotate_refresh_tokens":
                if not isinstance(value, bool):
                    raise ControlError("rotate_refresh_tokens must be a boolean")
            elif isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ControlError(f"{name} must be a non-negative number")
            setattr(self, name, value)


@dataclass
class AccessToken:
    value: str
    kind: str  # "component" | "authorizer" | "direct"
    owner: str  # the appid the token acts for
    component_appid: str | None
    issued_at: float
    expires_at: float
    # Set by /_sim/tokens/invalidate: the token answers this errcode from then on.
    forced_errcode: int | None = None


@dataclass
class Authorizer:
    appid: str
    component_appid: str
    account_type: str  # "official_account" | "mini_program"
    nick_name: str
    principal_name: str
    func_info: list[int]
    refresh_token: str
    auth_time: float
    revoked: bool = False
    # Superseded refresh tokens that still work until the given time (rotation grace).
    old_refresh_tokens: dict[str, float] = field(default_factory=dict)
    access_token: str | None = None


@dataclass
class PreAuthCode:
    code: str
    expires_at: float
    used: bool = False


@dataclass
class AuthCode:
    code: str
    authorizer_appid: str
    expires_at: float
    used: bool = False


@dataclass
class Component:
    appid: str
    secret: str
    token: str
    encoding_aes_key: str
    events_url: str | None
    tickets: dict[str, float] = field(default_factory=dict)  # ticket -> issued at
    # The per-authorizer message URL as configured on the Open Platform, with "$APPID$" in it.
    messages_url: str | None = None
    # Permission sets the platform does not hold on the Open Platform console: never offered on the
    # authorization page, never granted, and calls that need one answer 61007.
    withheld_sets: list[int] = field(default_factory=list)
    access_token: str | None = None
    pre_auth_codes: dict[str, PreAuthCode] = field(default_factory=dict)
    auth_codes: dict[str, AuthCode] = field(default_factory=dict)
    authorizers: dict[str, Authorizer] = field(default_factory=dict)


@dataclass
class DirectAccount:
    """An account calling with its own appid/secret (stable_token), not through a component."""

    appid: str
    secret: str
    func_info: list[int]
    access_token: str | None = None
    # Forced stable_token refreshes: the simulated (Beijing) day they were counted on, how many, last one.
    forced_day: int = -1
    forced_count: int = 0
    last_forced_at: float | None = None


@dataclass
class Call:
    """One API request as the rules see it (the WSGI layer fills it in)."""

    path: str
    query: dict[str, str]
    body: dict[str, Any]
    media: Any = None  # media.MediaPart for uploadimg
    token: AccessToken | None = None  # set once the access token has been checked
    # Pushes to deliver once the lock is released (see events.py).
    after: list[Any] = field(default_factory=list)


# Paths whose successful calls count against the caller's daily quota (and answer 45009 beyond it).
METERED_PATHS = frozenset(
    {
        "/cgi-bin/component/api_component_token",
        "/cgi-bin/component/api_create_preauthcode",
        "/cgi-bin/component/api_query_auth",
        "/cgi-bin/component/api_authorizer_token",
        "/cgi-bin/component/api_get_authorizer_info",
        "/cgi-bin/component/api_get_authorizer_list",
        "/cgi-bin/media/uploadimg",
        "/cgi-bin/stable_token",
    }
)
_RECORD_LIMIT = 200_000  # bounded so a long local run cannot grow without limit


def new_secret(prefix: str = "", nbytes: int = 48) -> str:
    return prefix + secrets.token_urlsafe(nbytes)


class SimulatorState:
    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.clock = Clock()
        self.faults = FaultBook()
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.clock.offset = 0.0
            self.faults.clear()
            self.config = Config()
            self.components: dict[str, Component] = {}
            self.direct_accounts: dict[str, DirectAccount] = {}
            self.tokens: dict[str, AccessToken] = {}
            self.counters: Counter[str] = Counter()
            self.calls: deque[dict[str, Any]] = deque(maxlen=_RECORD_LIMIT)
            self.uploads: deque[dict[str, Any]] = deque(maxlen=_RECORD_LIMIT)
            self.events: deque[dict[str, Any]] = deque(maxlen=_RECORD_LIMIT)
            self.messages: deque[dict[str, Any]] = deque(maxlen=_RECORD_LIMIT)  # pushed to message URLs
            self.custom_messages: deque[dict[str, Any]] = deque(maxlen=_RECORD_LIMIT)  # message/custom/send
            # (account appid, API path) the account itself lacks (unverified, wrong type): 48001.
            self.lacking_apis: set[tuple[str, str]] = set()
            self._quota_day = self.day()
            self.quota_used: Counter[tuple[str, str]] = Counter()  # (account appid, path) -> used today
            self.clears: Counter[tuple[str, str]] = Counter()  # (account appid, "YYYY-MM") -> clears

    def now(self) -> float:
        return self.clock.now()

    # -- components ---------------------------------------------------------------------------------------

    def component(self, appid: Any) -> Component:
        comp = self.components.get(appid) if isinstance(appid, str) else None
        if comp is None:
            raise ApiError(61011)
        return comp

    # -- access tokens ------------------------------------------------------------------------------------

    def issue_token(
        self, *, kind: str, owner: str, component_appid: str | None, ttl: float, previous: str | None
    ) -> AccessToken:
        now = self.now()
        if previous and previous in self.tokens:
            # The superseded token overlaps with the new one for the grace period, never longer than it had.
            old = self.tokens[previous]
            old.expires_at = min(old.expires_at, now + self.config.token_grace_seconds)
        token = AccessToken(
            value=new_secret(f"{kind[0]}_"),
            kind=kind,
            owner=owner,
            component_appid=component_appid,
            issued_at=now,
            expires_at=now + ttl,
        )
        self.tokens[token.value] = token
        return token

    def check_token(self, query: dict[str, str], *, kinds: tuple[str, ...]) -> AccessToken:
        """The token named in the query, if it is live and of an accepted kind."""
        # Old docs and all SDKs: component_access_token=; new docs: access_token= (docs/wechat-protocol.md §0).
        value = query.get("component_access_token") or query.get("access_token")
        if not value:
            raise ApiError(41001)
        token = self.tokens.get(value)
        if token is None or token.kind not in kinds:
            raise ApiError(40001)
        if token.forced_errcode is not None:
            raise ApiError(token.forced_errcode)
        if self.now() >= token.expires_at:
            raise ApiError(42001)
        return token

    def drop_tokens(self, owner: str, component_appid: str | None) -> None:
        """Forget every access token of ``owner`` issued through ``component_appid`` (revocation)."""
        for value in [
            v for v, t in self.tokens.items() if t.owner == owner and t.component_appid == component_appid
        ]:
            del self.tokens[value]

    def invalidate_tokens(self, appid: str | None, errcode: int) -> int:
        now = self.now()
        hit = 0
        for token in self.tokens.values():
            if (appid is None or token.owner == appid) and token.expires_at > now:
                token.forced_errcode = errcode
                hit += 1
        return hit

    # -- quota (per account appid and path, per simulated day) --------------------------------------------

    def day(self) -> int:
        # WeChat's daily quota resets at midnight Beijing time (UTC+8).
        return int((self.now() + 8 * 3600) // 86400)

    def _roll_quota_day(self) -> None:
        day = self.day()
        if day != self._quota_day:
            self._quota_day = day
            self.quota_used.clear()

    def check_quota(self, account: str, path: str) -> None:
        self._roll_quota_day()
        if path in METERED_PATHS and self.quota_used[(account, path)] >= self.config.daily_limit:
            raise ApiError(45009)

    def meter(self, account: str, path: str) -> None:
        self._roll_quota_day()
        self.quota_used[(account, path)] += 1

    def quota(self, account: str, path: str) -> dict[str, int]:
        self._roll_quota_day()
        used = self.quota_used[(account, path)]
        limit = int(self.config.daily_limit)
        return {"daily_limit": limit, "used": used, "remain": max(limit - used, 0)}

    def clear_quota(self, account: str) -> None:
        """Reset today's counters of ``account``; at most ``clear_quota_monthly_limit`` times a month."""
        month = time.strftime("%Y-%m", time.gmtime(self.now() + 8 * 3600))
        if self.clears[(account, month)] >= self.config.clear_quota_monthly_limit:
            raise ApiError(48006)
        self.clears[(account, month)] += 1
        for key in [k for k in self.quota_used if k[0] == account]:
            del self.quota_used[key]

    # -- records ------------------------------------------------------------------------------------------

    def record_call(self, **record: Any) -> None:
        self.calls.append({**record, "time": self.now()})

    def record_upload(self, **record: Any) -> None:
        self.uploads.append({**record, "time": self.now()})

    def record_event(self, **record: Any) -> None:
        with self.lock:
            self.events.append({**record, "time": self.now()})

    def dump(self) -> dict[str, Any]:
        """Everything, for debugging (GET /_sim/state)."""
        return {
            "now": self.now(),
            "clock_offset": self.clock.offset,
            "config": asdict(self.config),
            "components": {appid: asdict(c) for appid, c in self.components.items()},
            "direct_accounts": {appid: asdict(a) for appid, a in self.direct_accounts.items()},
            "tokens": [asdict(t) for t in self.tokens.values()],
            "quota_used": [{"appid": a, "path": p, "used": n} for (a, p), n in self.quota_used.items()],
            "lacking_apis": [{"appid": a, "path": p} for a, p in sorted(self.lacking_apis)],
            "faults": self.faults.dump(),
            "counters": dict(self.counters),
        }
