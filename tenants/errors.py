"""Refusals of the tenants app: each class carries the stable `code` and HTTP `status` the API answers with.

Without a detail, the message is the class docstring.
"""

from __future__ import annotations

from openplatform.core.api import ApiError


class TenantsError(ApiError):
    code = "tenants_error"


class AuthorizerUnavailable(TenantsError):
    """The authorizer is revoked or needs re-authorization; no token can be had for it."""

    code = "authorizer_unavailable"
    status = 409


class ReauthorizationRequired(AuthorizerUnavailable):
    """WeChat no longer accepts this authorizer's refresh token: the merchant must authorize again."""

    code = "reauthorization_required"


class InvalidState(TenantsError):
    """The authorization link's state is forged, expired or names no active tenant."""

    code = "invalid_state"


class AuthorizerBoundElsewhere(TenantsError):
    """This WeChat account is already bound to another merchant; an operator must move it."""

    code = "authorizer_bound_elsewhere"
    status = 409


class UnknownPermissionSet(TenantsError):
    """`category_id_list` names a permission set WeChat does not publish."""

    code = "unknown_permission_set"


class WeChatUnavailable(TenantsError):
    """WeChat refused or is unreachable."""

    code = "wechat_unavailable"
    status = 503


class TransferNotPossible(TenantsError):
    """The transfer request is no longer pending, or the account changed since it was made."""

    code = "transfer_not_possible"
    status = 409
