"""Merchant API authentication and throttling: `Authorization: Api-Key <key>`, counted per key and per tenant.

Failed key checks are counted per client address (openplatform/core/http.py): past
API_KEY_FAILURE_LIMIT in API_KEY_FAILURE_WINDOW_SECONDS, that address gets a 429 `throttled` before
any key is looked up, so guessing keys costs the attacker the window, not us a database query each.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from functools import cache

from django.conf import settings
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.request import Request
from rest_framework.throttling import SimpleRateThrottle

from openplatform.core import sql
from openplatform.core.http import client_address, window_hits, window_hits_many
from tenants.models import Tenant, TenantAPIKey

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TenantPrincipal:
    """request.user for an API-key request."""

    tenant: Tenant
    api_key: TenantAPIKey
    is_authenticated: bool = True
    is_anonymous: bool = False

    @property
    def pk(self) -> str:
        return f"tenant:{self.tenant.pk}"


#: What djangorestframework-api-key issues: an 8-character prefix, a dot, a 32-character secret.
#: Anything else is refused before it reaches the database (a NUL byte would make PostgreSQL raise).
_KEY_SHAPE = re.compile(r"[A-Za-z0-9]{1,16}\.[A-Za-z0-9]{1,128}")


#: How long this process trusts a failed-key counter it read as 0 (see _known_clean).
CLEAN_MEMO_SECONDS = 1.0
_CLEAN_MEMO_MAX = 10_000
#: (counter, window number) -> monotonic time until which it is taken as 0 without reading it.
_clean: dict[tuple[str, int], float] = {}


def _window_number(window: int) -> int:
    return int(time.time() // window)


def _known_clean(counter: str, window: int) -> bool:
    """Whether this process read the address's failed-key counter as 0 in this window less than
    CLEAN_MEMO_SECONDS ago, and has seen no failure from it since.

    An address that never fails (every real client) is then read from Redis about once a second per
    process, not on every request: that read was 0.14 ms of a request's CPU (docs/architecture.md §7,
    "Cost"). What it costs the limit: an address with failures is never remembered, and the first
    failure a process sees from it drops the memo, so a guesser gets at most one guess more per web
    process and window than API_KEY_FAILURE_LIMIT; an address blocked by failures seen elsewhere is
    refused here at most CLEAN_MEMO_SECONDS later.
    """
    until = _clean.get((counter, _window_number(window)))
    return until is not None and time.monotonic() < until


def _remember_clean(counter: str, window: int) -> None:
    if len(_clean) >= _CLEAN_MEMO_MAX:  # many addresses: start again rather than grow
        _clean.clear()
    _clean[(counter, _window_number(window))] = time.monotonic() + CLEAN_MEMO_SECONDS


def _forget_clean(counter: str, window: int) -> None:
    _clean.pop((counter, _window_number(window)), None)


class TenantAPIKeyAuthentication(BaseAuthentication):
    """`Authorization: Api-Key <key>`; keys are stored hashed (djangorestframework-api-key)."""

    keyword = b"api-key"

    def authenticate(self, request: Request):
        parts = get_authorization_header(request).split()
        if not parts or parts[0].lower() != self.keyword:
            return None
        limit, window = settings.API_KEY_FAILURE_LIMIT, settings.API_KEY_FAILURE_WINDOW_SECONDS
        if limit <= 0:
            return self._authenticate_key(parts)
        counter = f"api-key-failures:{client_address(request)}"
        if not _known_clean(counter, window):
            failures, left = window_hits(counter, window=window, add=0)
            if failures >= limit:
                raise exceptions.Throttled(wait=left, detail="Too many failed API-key attempts from this address.")
            if failures == 0:
                _remember_clean(counter, window)
        try:
            return self._authenticate_key(parts)
        except exceptions.AuthenticationFailed:
            _forget_clean(counter, window)
            failures, _ = window_hits(counter, window=window)
            if failures == limit:  # once per address and window: the moment it starts being refused
                logger.warning("API-key failures from one address reached the limit; refusing it for the window",
                               extra={"client_address": client_address(request), "failures": failures})
            raise

    def _authenticate_key(self, parts: list[bytes]):
        if len(parts) != 2:
            raise exceptions.AuthenticationFailed("Malformed Authorization header: use 'Api-Key <key>'.")
        try:
            key = parts[1].decode("ascii")
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("Invalid API key.") from None
        if not _KEY_SHAPE.fullmatch(key):
            raise exceptions.AuthenticationFailed("Invalid API key.")
        prefix = key.partition(".")[0]
        api_key = _key_with_tenant(prefix)
        # The stored hash is checked in constant time by the library; an unknown prefix is the same 401.
        if api_key is None or not api_key.is_valid(key):
            raise exceptions.AuthenticationFailed("Invalid API key.")
        if api_key.revoked or api_key.has_expired:
            raise exceptions.AuthenticationFailed("This API key has been revoked or has expired.")
        if not api_key.tenant.is_active:
            raise exceptions.PermissionDenied("This merchant account is disabled.")
        return TenantPrincipal(tenant=api_key.tenant, api_key=api_key), api_key

    def authenticate_header(self, request: Request) -> str:
        return "Api-Key"


@cache
def _key_sql() -> str:
    k, t = sql.quote(TenantAPIKey._meta.db_table), sql.quote(Tenant._meta.db_table)
    return (f"SELECT {sql.columns(TenantAPIKey, 'k')}, {sql.columns(Tenant, 't')} FROM {k} k "  # noqa: S608
            f"JOIN {t} t ON t.id = k.tenant_id WHERE k.prefix = %(prefix)s LIMIT 1")


def _key_with_tenant(prefix: str) -> TenantAPIKey | None:
    """The key with this prefix (unique) and its tenant: on every API request, so one prepared statement
    on PostgreSQL (openplatform/core/sql.py), the ORM elsewhere."""
    if not sql.available():
        return TenantAPIKey.objects.select_related("tenant").filter(prefix=prefix).first()
    rows = sql.execute(_key_sql(), {"prefix": prefix}, health_check=True)  # the request's first statement
    if not rows:
        return None
    n = sql.width(TenantAPIKey)
    api_key = sql.build(TenantAPIKey, rows[0][:n])
    api_key.tenant = sql.build(Tenant, rows[0][n:])
    return api_key


class TenantAPIKeyScheme(OpenApiAuthenticationExtension):
    target_class = "tenants.auth.TenantAPIKeyAuthentication"
    name = "ApiKeyAuth"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": "`Api-Key <your key>` (keys are issued by the service provider and shown once).",
        }


class _WindowRateThrottle(SimpleRateThrottle):
    """A DRF rate ("1200/min") counted in fixed windows with the cache's atomic increment.

    DRF's own SimpleRateThrottle reads a list of timestamps, appends and writes it back: two processes
    answering at once both write, one count is lost, and the limit is exceeded under exactly the load
    it is meant to stop. A window boundary lets at most twice the rate through in one window's time.
    """

    def allow_request(self, request, view) -> bool:
        if self.rate is None:
            return True
        self.key = self.get_cache_key(request, view)
        if self.key is None:
            return True
        hits, self._wait = self._counted(request, view)
        return hits <= self.num_requests

    def _counted(self, request, view) -> tuple[int, float]:
        """This throttle's count for the request. The first of the view's window throttles to be asked
        counts the request in all of them, in one round trip (window_hits_many), as DRF asks every
        throttle of a view in turn; the others read their count from the request."""
        counted = getattr(request, "_window_throttle_counts", None)
        if counted is None or (self.key, self.duration) not in counted:
            throttles = [self]
            if view is not None and hasattr(view, "get_throttles"):
                throttles += [t for t in view.get_throttles() if isinstance(t, _WindowRateThrottle)
                              and type(t) is not type(self) and t.rate is not None]
            counters = []
            for throttle in throttles:
                key = self.key if throttle is self else throttle.get_cache_key(request, view)
                if key is not None and (key, throttle.duration) not in counters:
                    counters.append((key, throttle.duration))
            counted = dict(zip(counters, window_hits_many(counters), strict=True))
            request._window_throttle_counts = counted
        return counted.pop((self.key, self.duration))

    def wait(self) -> float:
        return self._wait


class TenantRateThrottle(_WindowRateThrottle):
    """Per-tenant request rate (all of a tenant's keys share it): API_THROTTLE_RATE."""

    scope = "tenant"

    def get_cache_key(self, request, view):
        user = getattr(request, "user", None)
        if not isinstance(user, TenantPrincipal):
            return None
        return self.cache_format % {"scope": self.scope, "ident": user.tenant.pk}


class AuthorizationLinkThrottle(TenantRateThrottle):
    """Authorization links per tenant (`AUTHORIZATION_LINK_THROTTLE_RATE`): each one costs an
    api_create_preauthcode call against the platform's shared quota (docs/wechat-protocol.md §5)."""

    scope = "authorization_link"

    def get_rate(self) -> str:
        return settings.AUTHORIZATION_LINK_THROTTLE_RATE


class AuthorizedRedirectThrottle(_WindowRateThrottle):
    """Requests to the redirect URL per client address (`AUTHORIZED_REDIRECT_THROTTLE_RATE`): each new
    code there costs an api_query_auth call. Used by a plain Django view (tenants/views_wechat.py)."""

    scope = "authorized_redirect"

    def get_rate(self) -> str:
        return settings.AUTHORIZED_REDIRECT_THROTTLE_RATE

    def get_cache_key(self, request, view):
        return self.cache_format % {"scope": self.scope, "ident": client_address(request)}


class APIKeyRateThrottle(_WindowRateThrottle):
    """Per-key request rate (API_KEY_THROTTLE_RATE), below the tenant's: one runaway integration or leaked
    key cannot take the whole of its tenant's rate from the merchant's other keys."""

    scope = "api_key"

    def get_cache_key(self, request, view):
        user = getattr(request, "user", None)
        if not isinstance(user, TenantPrincipal):
            return None
        return self.cache_format % {"scope": self.scope, "ident": user.api_key.pk}
