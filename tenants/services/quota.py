"""Resetting an authorizer's API quota (45009's way out): `clear_quota` with the account's own token.

The budget and the record are the component's (openplatform/component/quota.py): 10 resets per account
per calendar month, Beijing time, then 48006 (docs/wechat-protocol.md §11).
"""

from __future__ import annotations

from openplatform.component.config import wechat_client
from openplatform.component.models import QuotaReset
from openplatform.component.quota import CLEAR_QUOTA_PATH, QuotaResetUsage, quota_reset_record
from openplatform.wechat.errors import TokenInvalid
from tenants.errors import AuthorizerUnavailable
from tenants.models import Authorizer
from tenants.services.tokens import authorizer_access_token_get, authorizer_access_token_refresh_after_failure


def authorizer_quota_clear(*, authorizer: Authorizer, requested_by: str) -> QuotaResetUsage:
    """Reset the authorizer's API quota (uploadimg's among them) with its token; recorded.

    Raises `AuthorizerUnavailable` (no token can be had: nothing is sent), the token service's
    `WeChatError` when the token cannot be had (nothing is sent, nothing recorded), or WeChat's refusal
    of the reset after it is recorded (`ClearQuotaExhausted` for 48006).
    """
    if authorizer.status != Authorizer.Status.AUTHORIZED:
        raise AuthorizerUnavailable(f"authorizer {authorizer.appid} is {authorizer.status}: no token to reset its quota with")
    lease = authorizer_access_token_get(authorizer=authorizer)
    client = wechat_client()

    def clear() -> None:
        nonlocal lease
        try:
            client.clear_quota(access_token=lease.token, appid=authorizer.appid)
        except TokenInvalid:  # expire that token only if still current; one refresh, one retry
            lease = authorizer_access_token_refresh_after_failure(authorizer=authorizer, failed_generation=lease.generation)
            client.clear_quota(access_token=lease.token, appid=authorizer.appid)

    return quota_reset_record(
        appid=authorizer.appid,
        kind=QuotaReset.Kind.AUTHORIZER,
        endpoint=CLEAR_QUOTA_PATH,
        requested_by=requested_by,
        call=clear,
    )
