"""django-csp's middleware, with the site's policy header built once instead of on every response.

django-csp builds the header from CONTENT_SECURITY_POLICY for each response (a dataclass copied to a
dict, every directive joined again): about 0.1 ms of a merchant API request's CPU (docs/architecture.md
§7, "Cost"). Our policy is static (no nonce, no per-view decorator), so the text is the same every time.
A response that carries a per-view policy (django-csp's decorators) or a request whose nonce was used
still goes through django-csp's own code; the cache is dropped when a test overrides either setting.
"""

from __future__ import annotations

import http.client
from functools import cache

from csp.constants import HEADER, HEADER_REPORT_ONLY
from csp.middleware import CheckableLazyObject
from csp.middleware import CSPMiddleware as _DjangoCSPMiddleware
from csp.utils import build_policy
from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

_PER_RESPONSE = ("_csp_config", "_csp_update", "_csp_replace", "_csp_config_ro", "_csp_update_ro", "_csp_replace_ro")


@cache
def _headers() -> tuple[tuple[str, str, tuple[str, ...], str], ...]:
    """(header, its value, excluded path prefixes, the response attribute that exempts it) for each policy
    that builds to a non-empty header: what django-csp computes for a response without overrides."""
    out = []
    for header, setting, report_only, exempt in ((HEADER, "CONTENT_SECURITY_POLICY", False, "_csp_exempt"),
                                                 (HEADER_REPORT_ONLY, "CONTENT_SECURITY_POLICY_REPORT_ONLY", True,
                                                  "_csp_exempt_ro")):
        value = build_policy(report_only=report_only)
        if value:
            prefixes = tuple((getattr(settings, setting, None) or {}).get("EXCLUDE_URL_PREFIXES", None) or ())
            out.append((header, value, prefixes, exempt))
    return tuple(out)


@receiver(setting_changed)
def _policy_changed(*, setting: str, **kwargs) -> None:
    if setting in ("CONTENT_SECURITY_POLICY", "CONTENT_SECURITY_POLICY_REPORT_ONLY"):
        _headers.cache_clear()


class CSPMiddleware(_DjangoCSPMiddleware):
    def process_response(self, request, response):
        if getattr(request, "_csp_nonce", None) is not None or any(
            getattr(response, name, None) is not None for name in _PER_RESPONSE
        ):
            return super().process_response(request, response)  # a nonce or a per-view policy
        if settings.DEBUG and response.status_code in (http.client.INTERNAL_SERVER_ERROR, http.client.NOT_FOUND):
            return response  # Django's debug pages, as django-csp leaves them
        for header, value, prefixes, exempt in _headers():
            if header not in response and getattr(response, exempt, False) is False and not (
                prefixes and request.path_info.startswith(prefixes)
            ):
                response[header] = value
        # As django-csp does: a nonce asked for after the header is written is an error, not a silent gap.
        request.csp_nonce = CheckableLazyObject(self._csp_nonce_post_response)
        return response
