"""Resetting API quotas (45009's way out) and counting the month's resets.

An account that reached a daily API quota answers 45009 until 00:00 Beijing time, unless its quota is
reset: `clear_quota` with the account's own token, or `component/clear_quota/v2` with the component's
AppSecret (the only way when `api_component_token` itself answers 45009). Both draw on one budget per
account, CLEAR_QUOTA_MONTHLY_LIMIT resets per calendar month in Beijing time, and answer 48006 past it
(docs/wechat-protocol.md §11). Every reset asked for here is recorded as a `QuotaReset`, whatever WeChat
answered, so the admin can show how much of the budget is used.

The tenants' side resets an authorizer's quota (tenants/services/quota.py); the component's own is here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone

from django.db.models import Count, Exists, OuterRef, Subquery, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from openplatform.component.api import component_api
from openplatform.component.config import ComponentConfig, component_config
from openplatform.component.models import QuotaReset
from openplatform.wechat.client import CLEAR_QUOTA_MONTHLY_LIMIT
from openplatform.wechat.errors import ClearQuotaExhausted, WeChatError

#: WeChat's day and month are Beijing's (UTC+8, no daylight saving time): docs/wechat-protocol.md §11.
BEIJING = dt_timezone(timedelta(hours=8))

CLEAR_QUOTA_PATH = "/cgi-bin/clear_quota"
COMPONENT_CLEAR_QUOTA_PATH = "/cgi-bin/component/clear_quota/v2"


def beijing_month_start(now: datetime | None = None) -> datetime:
    """The start of the current calendar month in Beijing time (an aware datetime)."""
    local = (now or timezone.now()).astimezone(BEIJING)
    return local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


@dataclass(frozen=True)
class QuotaResetUsage:
    """How much of an account's monthly reset budget is used, as far as this service knows."""

    appid: str
    #: Resets WeChat accepted this month through this service.
    recorded: int
    #: WeChat answered 48006 this month: the budget is spent, whatever `recorded` says (the account's
    #: own console draws on the same budget).
    exhausted: bool
    limit: int = CLEAR_QUOTA_MONTHLY_LIMIT

    @property
    def used(self) -> int:
        return self.limit if self.exhausted else min(self.recorded, self.limit)

    @property
    def remaining(self) -> int:
        return self.limit - self.used

    def __str__(self) -> str:
        text = f"{self.used} of {self.limit} this month"
        if self.exhausted and self.recorded < self.limit:
            text += f" (WeChat says used up; {self.recorded} from this console)"
        return text


def _next_month_start(start: datetime) -> datetime:
    return (start + timedelta(days=32)).replace(day=1)


def _this_month(appid, now: datetime | None):
    start = beijing_month_start(now)
    return QuotaReset.objects.filter(appid=appid, requested_at__gte=start, requested_at__lt=_next_month_start(start))


def quota_reset_usage(*, appid: str, now: datetime | None = None) -> QuotaResetUsage:
    month = _this_month(appid, now)
    return QuotaResetUsage(
        appid=appid,
        recorded=month.filter(succeeded=True).count(),
        exhausted=month.filter(errcode__in=ClearQuotaExhausted.errcodes).exists(),
    )


def quota_reset_annotations(appid_ref: OuterRef | str = "appid", *, now: datetime | None = None) -> dict:
    """Annotations (`quota_resets_recorded`, `quota_resets_exhausted`) giving each row of a list its
    account's usage in the list's own query: pass `OuterRef` of the field holding the appid."""
    ref = OuterRef(appid_ref) if isinstance(appid_ref, str) else appid_ref
    month = _this_month(ref, now)
    recorded = month.filter(succeeded=True).order_by().values("appid").annotate(n=Count("pk")).values("n")
    return {
        "quota_resets_recorded": Coalesce(Subquery(recorded), Value(0)),
        "quota_resets_exhausted": Exists(month.filter(errcode__in=ClearQuotaExhausted.errcodes)),
    }


def quota_reset_usage_of(row, appid: str) -> QuotaResetUsage:
    """The usage of a row annotated with `quota_reset_annotations` (or looked up when it was not)."""
    if hasattr(row, "quota_resets_recorded"):
        return QuotaResetUsage(appid, row.quota_resets_recorded, row.quota_resets_exhausted)
    return quota_reset_usage(appid=appid)


def quota_reset_record(
    *, appid: str, kind: str, endpoint: str, requested_by: str, call: Callable[[], None]
) -> QuotaResetUsage:
    """Run `call` (one reset at WeChat) and record what WeChat answered; the usage after it.

    WeChat's refusal (`ClearQuotaExhausted` for 48006) is recorded, then raised.
    """
    record = QuotaReset(appid=appid, kind=kind, endpoint=endpoint, requested_by=requested_by[:150])
    try:
        call()
    except WeChatError as exc:
        record.errcode, record.errmsg = exc.errcode, exc.describe()[:2000]
        record.save()
        raise
    record.succeeded = True
    record.save()
    return quota_reset_usage(appid=appid)


def quota_reset_exhausted_message(appid: str) -> str:
    """What to tell an operator when WeChat answers 48006."""
    return (
        f"WeChat refused to reset the API quota of {appid} (48006): its {CLEAR_QUOTA_MONTHLY_LIMIT} resets "
        "for this calendar month are used up (resets made on the account's own console count too). "
        "The daily quota comes back at 00:00 Beijing time; resets are available again on the 1st of "
        "next month (Beijing time)."
    )


def component_quota_clear(*, requested_by: str, config: ComponentConfig | None = None) -> QuotaResetUsage:
    """Reset the component's own API quota with its AppSecret (component/clear_quota/v2): works even
    when api_component_token answers 45009, since no component token is needed. Recorded."""
    config = config or component_config()
    return quota_reset_record(
        appid=config.appid,
        kind=QuotaReset.Kind.COMPONENT,
        endpoint=COMPONENT_CLEAR_QUOTA_PATH,
        requested_by=requested_by,
        call=lambda: component_api(config=config).clear_quota(),
    )
