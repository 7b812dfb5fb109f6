"""A verified push to the events URL, stored by the component (docs/wechat-protocol.md §1, §3).

The view (tenants/views_wechat.py) checks the signature and decrypts; `component_push_store` then
keeps what came: a `component_verify_ticket` in the ticket table, anything else as a `ComponentEvent`
(the authorization code encrypted), not yet processed. Applying an authorization event to an account
is the tenants' side: tenants/events.py.

Replays. A signed push stays valid forever (the signature covers no expiry), so both events URLs also
refuse one whose query `timestamp` is too far from now (`push_timestamp_fresh`), and remember the
pushes they accepted (`push_replay_claim`): an identical one (same `timestamp`, `nonce` and
`msg_signature`, so the same signed body) is acknowledged and not processed again. WeChat's own
retries of a push it did not see answered in time look the same, and get the same answer.
"""

from __future__ import annotations

import hashlib
import time
from datetime import UTC, datetime, timedelta

from django.core.cache import cache

from openplatform.component.config import ComponentConfig
from openplatform.component.models import ComponentEvent
from openplatform.component.tickets import component_ticket_store

TICKET = "component_verify_ticket"
#: The account authorized us, or changed what it granted: the code must be exchanged (api_query_auth).
AUTHORIZATION_GRANTED = ("authorized", "updateauthorized")
REVOKED = "unauthorized"
#: A code lives about an hour (docs/wechat-protocol.md §3, §5); nothing WeChat says makes it longer.
AUTH_CODE_MAX_LIFETIME = timedelta(hours=1)
#: An accepted push is remembered at least this long (the contract's 15 minutes), and at least as long
#: as its timestamp keeps it acceptable (twice the allowed age: it may come from a clock ahead of ours).
PUSH_REPLAY_MEMORY_SECONDS = 15 * 60


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


def push_timestamp_fresh(timestamp: str, *, max_age_seconds: int, now: float | None = None) -> bool:
    """Whether a push's query `timestamp` (unix seconds) is within `max_age_seconds` of now, either way.

    `max_age_seconds` 0: no check (published test vectors carry fixed old timestamps).
    """
    if max_age_seconds <= 0:
        return True
    if not (timestamp.isascii() and timestamp.isdigit()) or len(timestamp) > 20:
        return False
    return abs((time.time() if now is None else now) - int(timestamp)) <= max_age_seconds


def push_replay_claim(*, timestamp: str, nonce: str, msg_signature: str, max_age_seconds: int) -> str | None:
    """Remember a verified push before processing it; None when an identical one was accepted recently.

    Returns the memory's key: `push_replay_release(key)` forgets it again when the push is then refused
    or fails, so that WeChat's retry of it is processed. The shared cache (CACHE_URL) makes the memory
    the same for every web process; cache.add() is atomic, so two identical pushes arriving at once are
    processed once.
    """
    digest = hashlib.sha256("\n".join((timestamp, nonce, msg_signature)).encode("utf-8", "surrogatepass")).hexdigest()
    key = f"wechat-push-seen:{digest}"
    ttl = max(PUSH_REPLAY_MEMORY_SECONDS, 2 * max_age_seconds)
    return key if cache.add(key, 1, timeout=ttl) else None


def push_replay_release(key: str) -> None:
    cache.delete(key)
