"""Request helpers shared by every layer that answers HTTP (tenants' WeChat-facing views, the ops console)."""

from __future__ import annotations


def client_address(request) -> str:
    """The client's address as the throttles see it: REMOTE_ADDR, or X-Forwarded-For's entry appended
    by the outermost of TRUSTED_PROXY_COUNT trusted proxies (DRF's rule, one rule for the whole app).

    Works on a Django `HttpRequest` as well as on a DRF `Request` (both carry `META`).
    """
    from rest_framework.throttling import BaseThrottle

    return BaseThrottle().get_ident(request)
