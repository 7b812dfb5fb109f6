"""HTTP client for the WeChat Open Platform (third-party platform / "component") APIs we use.

One private ``_call`` sends, times, parses and classifies every request (docs/wechat-protocol.md §0, §11):
- a requests timeout or connection failure -> NetworkError;
- HTTP >= 500, or a body that is not a JSON object -> TransientError (never success);
- a nonzero ``errcode`` -> the class chosen by ``errors.error_for``;
- otherwise the endpoint's parser builds a typed result (a missing field -> non-retryable WeChatError).
Retryable errors are retried with a bounded, jittered backoff (stripe-python's ``should_retry`` /
``sleep_seconds``). Token errors are *not* retried here: the token service refreshes once and calls again.

One structured log line per HTTP attempt on the "openplatform.wechat" logger. Tokens, secrets, tickets,
the query string and bodies are never logged, and never put into exception messages.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlencode, urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3 import encode_multipart_formdata
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    LocationValueError,
    MaxRetryError,
    NewConnectionError,
    ProxyError,
    ReadTimeoutError,
    SSLError,
)

from .errors import NetworkError, TransientError, WeChatError, error_for
from .types import (
    AccessToken,
    AuthorizationInfo,
    AuthorizerInfo,
    AuthorizerListItem,
    AuthorizerListPage,
    AuthorizerToken,
    ComponentToken,
    MalformedResponse,
    PreAuthCode,
    Quota,
    UploadResult,
    parse_access_token,
    parse_authorization_info,
    parse_authorizer_info,
    parse_authorizer_list_page,
    parse_authorizer_token,
    parse_component_token,
    parse_nothing,
    parse_pre_auth_code,
    parse_quota,
    parse_upload_url,
)

__all__ = [
    "CLEAR_QUOTA_MONTHLY_LIMIT",
    "AccessToken",
    "AuthorizationInfo",
    "AuthorizerInfo",
    "AuthorizerListItem",
    "AuthorizerListPage",
    "AuthorizerToken",
    "ComponentToken",
    "PreAuthCode",
    "Quota",
    "RetryPolicy",
    "UploadResult",
    "WeChatClient",
    "sniff_image",
]

logger = logging.getLogger("openplatform.wechat")

T = TypeVar("T")

DEFAULT_API_BASE = "https://api.weixin.qq.com"
#: api_get_authorizer_list accepts at most 500 per page (docs/wechat-protocol.md §8).
MAX_AUTHORIZER_PAGE = 500
#: clear_quota and component/clear_quota/v2 together reset one account's quota at most this many times
#: per calendar month (Beijing time), then answer 48006 (docs/wechat-protocol.md §11).
CLEAR_QUOTA_MONTHLY_LIMIT = 10
_SNIPPET_CHARS = 120

_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries for retryable errors only; capped exponential backoff with full jitter."""

    max_retries: int = 2
    base_delay: float = 0.5
    max_delay: float = 8.0

    def should_retry(self, error: WeChatError, attempt: int) -> bool:
        """``attempt`` counts the retries already made (0 after the first failure)."""
        return bool(error.retryable) and attempt < self.max_retries

    def sleep_seconds(self, attempt: int) -> float:
        """Delay before retry number ``attempt + 1``: uniform in [0, min(max_delay, base_delay * 2**attempt)]."""
        cap = min(self.max_delay, self.base_delay * (2 ** max(attempt, 0)))
        return random.uniform(0, cap)


def sniff_image(data: bytes) -> tuple[str, str]:
    """(filename, content type) from magic bytes; uploadimg takes only JPEG and PNG (docs/wechat-protocol.md §10).

    The filename is ASCII with the right extension: WeChat's multipart parser rejects others (41005).
    """
    if data.startswith(_JPEG_MAGIC):
        return "image.jpg", "image/jpeg"
    if data.startswith(_PNG_MAGIC):
        return "image.png", "image/png"
    raise ValueError("image data is neither JPEG nor PNG")


def _snippet(content: bytes) -> str:
    text = content[: _SNIPPET_CHARS * 4].decode("utf-8", errors="replace")
    return " ".join(text.split())[:_SNIPPET_CHARS]


def _errcode(data: dict) -> int | None:
    value = data.get("errcode")
    if value is None or isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


class WeChatClient:
    def __init__(
        self,
        *,
        api_base: str = DEFAULT_API_BASE,
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.api_base = api_base.rstrip("/")
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.session = session or self._pooled_session(self.api_base)
        self._sleep = sleep

    @staticmethod
    def _pooled_session(api_base: str) -> requests.Session:
        session = requests.Session()
        # The environment's proxy (HTTPS_PROXY, NO_PROXY) and CA bundle (REQUESTS_CA_BUNDLE) are read once,
        # here: with trust_env on, requests reads and parses os.environ again on every call, which cost
        # about 2 ms of CPU per upload (docs/architecture.md §7, "Cost").
        session.trust_env = False
        session.proxies.update(requests.utils.get_environ_proxies(api_base))
        ca_bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        if ca_bundle:
            session.verify = ca_bundle
        # Many Celery threads/greenlets share one client; retries are ours, not urllib3's.
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=64, max_retries=0)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        return session

    def close(self) -> None:
        self.session.close()

    # --- component (third-party platform) -----------------------------------------------------------

    def start_push_ticket(self, *, component_appid: str, component_secret: str) -> None:
        # The body field is component_secret, not component_appsecret (docs/wechat-protocol.md §0).
        self._call(
            "/cgi-bin/component/api_start_push_ticket",
            body={"component_appid": component_appid, "component_secret": component_secret},
            parse=parse_nothing,
        )

    def component_token(
        self, *, component_appid: str, component_appsecret: str, verify_ticket: str
    ) -> ComponentToken:
        return self._call(
            "/cgi-bin/component/api_component_token",
            body={
                "component_appid": component_appid,
                "component_appsecret": component_appsecret,
                "component_verify_ticket": verify_ticket,
            },
            parse=parse_component_token,
        )

    def create_preauthcode(self, *, component_access_token: str, component_appid: str) -> PreAuthCode:
        return self._call(
            "/cgi-bin/component/api_create_preauthcode",
            query={"component_access_token": component_access_token},
            body={"component_appid": component_appid},
            parse=parse_pre_auth_code,
        )

    def query_auth(
        self, *, component_access_token: str, component_appid: str, authorization_code: str
    ) -> AuthorizationInfo:
        return self._call(
            "/cgi-bin/component/api_query_auth",
            query={"component_access_token": component_access_token},
            body={"component_appid": component_appid, "authorization_code": authorization_code},
            parse=parse_authorization_info,
        )

    def authorizer_token(
        self,
        *,
        component_access_token: str,
        component_appid: str,
        authorizer_appid: str,
        authorizer_refresh_token: str,
    ) -> AuthorizerToken:
        return self._call(
            "/cgi-bin/component/api_authorizer_token",
            query={"component_access_token": component_access_token},
            body={
                "component_appid": component_appid,
                "authorizer_appid": authorizer_appid,
                "authorizer_refresh_token": authorizer_refresh_token,
            },
            parse=parse_authorizer_token,
        )

    def get_authorizer_info(
        self, *, component_access_token: str, component_appid: str, authorizer_appid: str
    ) -> AuthorizerInfo:
        return self._call(
            "/cgi-bin/component/api_get_authorizer_info",
            query={"component_access_token": component_access_token},
            body={"component_appid": component_appid, "authorizer_appid": authorizer_appid},
            parse=lambda data: parse_authorizer_info(data, requested_appid=authorizer_appid),
        )

    def get_authorizer_list(
        self, *, component_access_token: str, component_appid: str, offset: int = 0, count: int = 500
    ) -> AuthorizerListPage:
        if not 1 <= count <= MAX_AUTHORIZER_PAGE:
            raise ValueError(f"count must be between 1 and {MAX_AUTHORIZER_PAGE}")
        if offset < 0:
            raise ValueError("offset must not be negative")
        return self._call(
            "/cgi-bin/component/api_get_authorizer_list",
            query={"component_access_token": component_access_token},
            body={"component_appid": component_appid, "offset": offset, "count": count},
            parse=parse_authorizer_list_page,
        )

    def iter_authorizer_list(
        self, *, component_access_token: str, component_appid: str, page_size: int = 500
    ) -> Iterator[AuthorizerListItem]:
        """Every authorizer, paging until ``offset >= total_count`` (or an empty page, so it always ends)."""
        offset = 0
        while True:
            page = self.get_authorizer_list(
                component_access_token=component_access_token,
                component_appid=component_appid,
                offset=offset,
                count=page_size,
            )
            yield from page.items
            offset += len(page.items)
            if not page.items or offset >= page.total_count:
                return

    def component_clear_quota_v2(
        self, *, component_appid: str, appsecret: str, appid: str | None = None
    ) -> None:
        """Reset quota by AppSecret: the way out when api_component_token answers 45009 (docs/wechat-protocol.md §11)."""
        body = {"component_appid": component_appid, "appsecret": appsecret}
        if appid:
            body["appid"] = appid
        self._call("/cgi-bin/component/clear_quota/v2", body=body, parse=parse_nothing)

    # --- calls with an account's (authorizer's) access token ---------------------------------------------

    def upload_image(
        self,
        *,
        access_token: str,
        data: bytes,
        retry: RetryPolicy | None = None,
        appid: str | None = None,
    ) -> UploadResult:
        """media/uploadimg. ``retry`` overrides the client's policy; ``appid`` is only used in the log line.

        The multipart part is rebuilt from ``data`` on every attempt, so a retry re-sends the same bytes.
        """
        payload = bytes(data)
        filename, content_type = sniff_image(payload)
        outcome: dict[str, Any] = {}
        url = self._call(
            "/cgi-bin/media/uploadimg",
            query={"access_token": access_token},
            files=lambda: {"media": (filename, payload, content_type)},
            parse=parse_upload_url,
            retry=retry,
            log_appid=appid,
            outcome=outcome,
        )
        return UploadResult(url=url, http_status=outcome["http_status"], latency_ms=outcome["latency_ms"])

    def get_quota(self, *, access_token: str, cgi_path: str) -> Quota:
        return self._call(
            "/cgi-bin/openapi/quota/get",
            query={"access_token": access_token},
            body={"cgi_path": cgi_path},
            parse=parse_quota,
        )

    def clear_quota(self, *, access_token: str, appid: str) -> None:
        # At most 10 resets per account per month (48006 afterwards), docs/wechat-protocol.md §11.
        self._call(
            "/cgi-bin/clear_quota",
            query={"access_token": access_token},
            body={"appid": appid},
            parse=parse_nothing,
        )

    def custom_send_text(self, *, access_token: str, touser: str, content: str, appid: str | None = None) -> None:
        """message/custom/send: a customer-service text to a fan (``touser`` is the fan's openid).

        Used by the release check's API step (release_check.py). ``appid`` is only used in the log line.
        """
        self._call(
            "/cgi-bin/message/custom/send",
            query={"access_token": access_token},
            body={"touser": touser, "msgtype": "text", "text": {"content": content}},
            parse=parse_nothing,
            log_appid=appid,
        )

    def stable_token(self, *, appid: str, secret: str, force_refresh: bool = False) -> AccessToken:
        """An account's own token from its AppID/AppSecret (direct mode), getStableAccessToken.

        A normal call (the default) returns the current token and WeChat renews it only in its last
        5 minutes, the old one staying valid meanwhile: it is also how to recover from a token error.
        ``force_refresh=True`` invalidates the current token at once for everyone who shares it (the
        merchant's own servers too); WeChat allows 20 a day, 30 s apart (a closer one returns the current
        token unchanged). Use it only for a leaked token, on an operator's explicit request. Errors: 45009
        -> QuotaExceeded (also the simulator's answer beyond 20 forced calls; WeChat's code for that is
        undocumented), 40013/40125/40164/41004 -> ConfigurationError (docs/wechat-notes.md, item 2).
        """
        return self._call(
            "/cgi-bin/stable_token",
            body={
                "grant_type": "client_credential",
                "appid": appid,
                "secret": secret,
                "force_refresh": force_refresh,
            },
            parse=parse_access_token,
        )

    # --- the one place that talks HTTP ------------------------------------------------------------------

    def _call(
        self,
        path: str,
        *,
        parse: Callable[[dict], T],
        query: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
        files: Callable[[], dict] | None = None,
        retry: RetryPolicy | None = None,
        log_appid: str | None = None,
        outcome: dict[str, Any] | None = None,
    ) -> T:
        policy = retry or self.retry
        appids = {
            "appid": log_appid or _body_appid(body),
            "component_appid": (body or {}).get("component_appid"),
        }
        retries = 0
        while True:
            try:
                return self._attempt(path, parse, query, body, files, appids, retries + 1, outcome)
            except WeChatError as error:
                if not policy.should_retry(error, retries):
                    raise
                self._sleep(policy.sleep_seconds(retries))
                retries += 1

    def _attempt(
        self,
        path: str,
        parse: Callable[[dict], T],
        query: dict[str, str] | None,
        body: dict[str, Any] | None,
        files: Callable[[], dict] | None,
        appids: dict[str, str | None],
        attempt: int,
        outcome: dict[str, Any] | None,
    ) -> T:
        started = time.perf_counter()
        status: int | None = None
        errcode: int | None = None
        error: Exception | None = None
        try:
            try:
                status, content = self._send(path, query, body, files)
            except (LocationValueError, requests.RequestException) as exc:
                # A URL urllib3 cannot parse, or proxy settings the adapter refuses (InvalidProxyURL): ours
                # are wrong, not the network. Before OSError: requests' exceptions are OSErrors.
                raise WeChatError(None, type(exc).__name__, path=path) from None
            except (HTTPError, OSError) as exc:
                # A timeout, a refused or dropped connection, TLS, the proxy, a body cut short. str(exc)
                # carries the URL with the token in its query string: keep only the class name.
                raise NetworkError(None, _network_error_name(exc), path=path) from None
            data = _json_object(content)
            if data is not None:
                errcode = _errcode(data)
            if status >= 500 or data is None:
                raise TransientError(None, _snippet(content), http_status=status, path=path)
            if errcode:
                raise error_for(errcode, str(data.get("errmsg") or ""), http_status=status, path=path)
            if not 200 <= status < 300:
                raise WeChatError(None, f"unexpected HTTP status {status}", http_status=status, path=path)
            try:
                result = parse(data)
            except MalformedResponse as exc:
                raise WeChatError(None, str(exc), http_status=status, path=path) from None
            return result
        except Exception as exc:
            error = exc
            raise
        finally:
            latency_ms = round((time.perf_counter() - started) * 1000, 1)
            if outcome is not None:
                outcome.update(http_status=status, latency_ms=latency_ms)
            _log_attempt(path, appids, errcode, status, attempt, latency_ms, error)

    def _send(
        self, path: str, query: dict[str, str] | None, body: dict[str, Any] | None, files: Callable[[], dict] | None
    ) -> tuple[int, bytes]:
        """POST, without redirects: (HTTP status, body read whole).

        Straight to the urllib3 pool that the session's adapter keeps for this URL: the adapter still
        chooses the pool (the proxy read in _pooled_session, TLS verification, the CA bundle), and urllib3
        still pools, reuses and replaces the connections. What is skipped is requests' own per-call work:
        preparing a PreparedRequest, merging session settings, and building a Response with its cookie jar. That was about 0.6 ms of CPU per 90 KB upload, a
        ninth of the task (docs/architecture.md §7, "Cost"). The body is the bytes requests would send
        (urllib3's encode_multipart_formdata, which requests calls, or the JSON it would write).
        """
        session = self.session
        url = self.api_base + path
        if query:
            url += "?" + urlencode(query)
        headers = dict(session.headers)
        if files is not None:
            payload, headers["Content-Type"] = encode_multipart_formdata(files())  # requests' own encoder
        else:
            payload = json.dumps(body, allow_nan=False).encode() if body is not None else None
            if payload is not None:
                headers["Content-Type"] = "application/json"
        if payload is not None:
            headers["Content-Length"] = str(len(payload))
        adapter = session.get_adapter(url)
        target = _Target(url)
        pool = adapter.get_connection_with_tls_context(target, session.verify, session.proxies, session.cert)
        response = pool.urlopen(
            method="POST",
            url=adapter.request_url(target, session.proxies),
            body=payload,
            headers=headers,
            redirect=False,
            assert_same_host=False,
            preload_content=True,  # the body is read here: a broken one raises inside the caller's network errors
            decode_content=True,
            retries=adapter.max_retries,
            timeout=urllib3.Timeout(connect=self.timeout, read=self.timeout),
        )
        return response.status, response.data


class _Target:
    """What HTTPAdapter reads of a request to choose the pool and the request line: its URL."""

    __slots__ = ("url", "path_url")

    def __init__(self, url: str) -> None:
        self.url = url
        parts = urlsplit(url)
        self.path_url = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


def _network_error_name(exc: BaseException) -> str:
    """The name requests gives this transport failure, as the log lines and attempt records always had it."""
    if isinstance(exc, MaxRetryError) and exc.reason is not None:
        exc = exc.reason
    if isinstance(exc, ReadTimeoutError):
        return "ReadTimeout"
    if isinstance(exc, ConnectTimeoutError) and not isinstance(exc, NewConnectionError):
        return "ConnectTimeout"
    if isinstance(exc, ProxyError):
        return "ProxyError"
    if isinstance(exc, SSLError):
        return "SSLError"
    return "ConnectionError"


def _json_object(content: bytes) -> dict | None:
    try:
        data = json.loads(content)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _body_appid(body: dict[str, Any] | None) -> str | None:
    """The account a call is about: the authorizer when the body names one, else the component."""
    body = body or {}
    for key in ("authorizer_appid", "appid", "component_appid"):
        if body.get(key):
            return body[key]
    return None


def _log_attempt(
    path: str,
    appids: dict[str, str | None],
    errcode: int | None,
    status: int | None,
    attempt: int,
    latency_ms: float,
    error: Exception | None,
) -> None:
    outcome = "ok" if error is None else type(error).__name__
    logger.log(
        logging.INFO if error is None else logging.WARNING,
        "wechat %s %s appid=%s errcode=%s http_status=%s attempt=%d latency_ms=%.1f",
        path,
        outcome,
        appids["appid"],
        errcode,
        status,
        attempt,
        latency_ms,
        extra={
            "path": path,
            "outcome": outcome,
            "appid": appids["appid"],
            "component_appid": appids["component_appid"],
            "errcode": errcode,
            "http_status": status,
            "attempt": attempt,
            "latency_ms": latency_ms,
        },
    )
