"""A verified push to the events URL, stored by the component (docs/wechat-protocol.md §1, §3).

The view (tenants/views_wechat.py) checks the signature and decrypts; `component_push_store` then
keeps what came: a `component_verify_ticket` in the ticket table, anything else as a `ComponentEvent`
(the authorization code encrypted), not yet processed. Applying an authorization event to an account
is the tenants' side: tenants/events.py.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from openplatform.component.config import ComponentConfig
from openplatform.component.models import ComponentEvent
from openplatform.component.tickets import component_ticket_store

TICKET = "component_verify_ticket"
#: The account authorized us, or changed what it granted: the code must be exchanged (api_query_auth).
AUTHORIZATION_GRANTED = ("authorized", "updateauthorized")
REVOKED = "unauthorized"
#: A code lives about an hour (docs/wechat-protocol.md §3, §5); nothing WeChat says makes it longer.
AUTH_CODE_MAX_LIFETIME = timedelta(hours=1)


class PushRefused(Exception):
    """A push that decrypted but is not one we can keep (a 400 to WeChat; the message says what is missing)."""


def component_push_store(*, config: ComponentConfig, fields: dict[str, str]) -> ComponentEvent | None:
    """Store a verified push: a ticket (returns None) or an event (returned, unprocessed).

    Raises `PushRefused`, before storing anything, when a field its InfoType needs is missing.
    """
    appid = fields.get("AppId", "")
    if appid and appid != config.appid:
        raise PushRefused("unknown component")
    info_type = fields.get("InfoType", "")
    if info_type == TICKET:
        ticket = fields.get("ComponentVerifyTicket", "")
        if not ticket:
            raise PushRefused("missing ComponentVerifyTicket")
        component_ticket_store(component_appid=config.appid, ticket=ticket, pushed_at=component_push_time(fields))
        return None

    event = ComponentEvent(
        component_appid=config.appid,
        info_type=info_type[:64] or "(none)",
        authorizer_appid=fields.get("AuthorizerAppid", "")[:64],
        pushed_at=component_push_time(fields),
    )
    if info_type in AUTHORIZATION_GRANTED:
        code = fields.get("AuthorizationCode", "")
        if not code or not event.authorizer_appid:
            raise PushRefused("missing AuthorizationCode or AuthorizerAppid")
        event.set_auth_code(code)
        event.auth_code_expires_at = component_auth_code_expiry(fields, received_at=event.received_at)
    elif info_type == REVOKED and not event.authorizer_appid:
        raise PushRefused("missing AuthorizerAppid")
    event.save()
    return event


def component_push_time(fields: dict[str, str]) -> datetime:
    """CreateTime of the push (WeChat's clock); now if it is missing or unreadable."""
    try:
        return datetime.fromtimestamp(int(fields.get("CreateTime", "")), tz=UTC)
    except (ValueError, OverflowError, OSError):
        return datetime.now(tz=UTC)


def component_auth_code_expiry(fields: dict[str, str], *, received_at: datetime) -> datetime:
    """When the pushed code dies, on our clock: AuthorizationCodeExpiredTime's lifetime counted from
    receipt, at most an hour.

    Whether the field is an absolute time or a duration is unconfirmed (docs/wechat-protocol.md §3;
    fixtures use CreateTime + 3600): a unix time is made relative to CreateTime, so a skew between
    WeChat's clock and ours neither kills a live code nor extends a dead one by more than the skew.
    """
    limit = int(AUTH_CODE_MAX_LIFETIME.total_seconds())
    try:
        value = int(fields.get("AuthorizationCodeExpiredTime", ""))
    except ValueError:
        return received_at + AUTH_CODE_MAX_LIFETIME
    if value > 1_000_000_000:  # a unix time
        try:
            value -= int(fields.get("CreateTime", ""))
        except ValueError:
            value = int(value - received_at.timestamp())
    return received_at + timedelta(seconds=max(0, min(value, limit)))
