"""Domain errors of the tenants app, each with a stable code for API responses."""

from __future__ import annotations


class TenantsError(Exception):
    code = "tenants_error"

    def __init__(self, detail: str = "") -> None:
        self.detail = detail or self.__class__.__doc__ or self.code
        super().__init__(self.detail)


class AuthorizerUnavailable(TenantsError):
    """The authorizer is revoked or needs re-authorization; no token can be had for it."""

    code = "authorizer_unavailable"


class ReauthorizationRequired(AuthorizerUnavailable):
    """WeChat no longer accepts this authorizer's refresh token: the merchant must authorize again."""

    code = "reauthorization_required"


class InvalidState(TenantsError):
    """The authorization link's state is forged, expired or names no active tenant."""

    code = "invalid_state"


class AuthorizerBoundElsewhere(TenantsError):
    """This WeChat account is already bound to another merchant; an operator must move it."""

    code = "authorizer_bound_elsewhere"
