"""The operator console's admin site: two-factor sign-in for staff when `ADMIN_REQUIRE_2FA` is on.

With the setting on, the login form also asks for a TOTP code (django-otp) and a session counts as
staff only once a registered device has verified it; `manage.py admin_2fa_enroll <username>` gives an
operator their device. With it off (the default under DEBUG, so `make run` keeps its one-step login),
the site behaves as Django's own. Password guessing is throttled and locked out by django-axes
(settings.py, "Admin console").
"""

from __future__ import annotations

import ipaddress

from django.conf import settings
from django.contrib.admin import AdminSite
from django.http import Http404
from django_otp.admin import OTPAdminAuthenticationForm

from openplatform.core.http import client_address


class OperatorAdminSite(AdminSite):
    site_header = "WeChat Open Platform: operator console"
    site_title = "Operator console"

    @property
    def login_form(self):
        return OTPAdminAuthenticationForm if settings.ADMIN_REQUIRE_2FA else None

    @property
    def login_template(self):
        return "otp/admin111/login.html" if settings.ADMIN_REQUIRE_2FA else None

    def has_permission(self, request) -> bool:
        allowed = super().has_permission(request)
        if settings.ADMIN_REQUIRE_2FA:
            return allowed and request.user.is_verified()
        return allowed


class AdminNetworkMiddleware:
    """With ADMIN_ALLOWED_NETWORKS set, the admin answers 404 to every other address (login page included)."""

    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request):
        if settings.ADMIN_ALLOWED_NETWORKS and request.path_info.startswith("/" + settings.ADMIN_URL):
            if not admin_address_allowed(client_address(request), settings.ADMIN_ALLOWED_NETWORKS):
                raise Http404
        return self.get_response(request)


def admin_address_allowed(address: str, networks: list[str]) -> bool:
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return False
    return any(ip in ipaddress.ip_network(network.strip(), strict=False) for network in networks if network.strip())
