"""The operator's dashboard on the admin index: what happened in the last 24 hours, what needs attention.

A selector: reads only, a fixed number of queries (eight) whatever the number of tenants, authorizers
and uploads. Every figure links into the admin changelist filtered to the rows behind it.

Like `urls.py`, this sits on top of every app (it reads tenants and uploads); nothing imports it but
the admin index template tag.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from urllib.parse import urlencode

from django.db.models import Count
from django.urls import reverse
from django.utils import timezone

from openplatform.component.config import component_config
from openplatform.component.models import TICKET_STALE_AFTER
from openplatform.component.tickets import component_ticket_age
from openplatform.wechat.errors import ERRCODE_MEANINGS
from openplatform.wechat.permissions import UPLOADIMG_REQUIRED_ANY_OF, can_upload_images
from tenants.models import Authorizer, AuthorizerTransferRequest
from uploads.models import Upload
from webhooks.models import WebhookDelivery, WebhookEndpoint
from webhooks.selectors import webhook_endpoints_needing_attention

WINDOW = timedelta(hours=24)
#: An authorizer revoked within this long is still worth an operator's look (was it on purpose?).
RECENTLY_REVOKED = timedelta(days=7)
#: This many failed uploads for one authorizer within the window make it an attention item.
REPEATED_FAILURES = 3
TOP_ERRCODES = 8
#: Rows shown per attention group; the group's link leads to all of them.
ATTENTION_LIMIT = 20


@dataclass(frozen=True)
class StatusCount:
    status: str
    label: str
    count: int
    url: str


@dataclass(frozen=True)
class ErrcodeCount:
    errcode: int
    meaning: str
    count: int
    url: str


@dataclass(frozen=True)
class AttentionItem:
    appid: str
    name: str
    tenant: str
    detail: str
    url: str


@dataclass
class AttentionGroup:
    key: str
    title: str
    url: str
    items: list[AttentionItem] = field(default_factory=list)
    #: True when more rows exist than are listed (follow `url` for all of them).
    truncated: bool = False
    #: What the operator does about the group's items, shown under its title.
    hint: str = ""


@dataclass(frozen=True)
class TicketState:
    component_appid: str
    age_seconds: int | None

    @property
    def configured(self) -> bool:
        return bool(self.component_appid)

    @property
    def stale(self) -> bool:
        """No ticket at all, or the newest is older than TICKET_STALE_AFTER (WeChat pushes every 10 minutes)."""
        return self.configured and (self.age_seconds is None or self.age_seconds > TICKET_STALE_AFTER.total_seconds())

    @property
    def stale_after_minutes(self) -> int:
        return int(TICKET_STALE_AFTER.total_seconds() // 60)

    @property
    def age_display(self) -> str:
        if self.age_seconds is None:
            return "no ticket received"
        minutes, seconds = divmod(self.age_seconds, 60)
        hours, minutes = divmod(minutes, 60)
        if hours:
            return f"{hours} h {minutes} min"
        if minutes >= 10:
            return f"{minutes} min"
        return f"{minutes} min {seconds} s" if minutes else f"{seconds} s"


@dataclass
class Dashboard:
    since: datetime
    by_status: list[StatusCount]
    total: int
    success_rate: float | None
    top_errcodes: list[ErrcodeCount]
    ticket: TicketState
    attention: list[AttentionGroup]
    all_uploads_url: str
    #: Disabled webhook endpoints and endpoints with deliveries failed (retries over) in the window.
    webhooks: AttentionGroup | None = None

    @property
    def success_percent(self) -> float | None:
        return None if self.success_rate is None else round(self.success_rate * 100, 1)

    @property
    def attention_count(self) -> int:
        return sum(len(group.items) for group in self.attention)


def _changelist(model, **params) -> str:
    url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
    return f"{url}?{urlencode(params)}" if params else url


def _change(model, pk) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_change", args=[pk])


def dashboard_get(*, now: datetime | None = None) -> Dashboard:
    now = now or timezone.now()
    since = now - WINDOW
    # The changelist's "created_at" date filter takes the same bound, so each link shows the rows counted.
    window = {"created_at__gte": since.replace(microsecond=0).isoformat()}
    recent = Upload.objects.filter(created_at__gte=since)

    counts = dict(recent.values_list("status").annotate(n=Count("pk")).order_by())  # query 1
    by_status = [
        StatusCount(status, label, counts.get(status, 0), _changelist(Upload, status__exact=status, **window))
        for status, label in Upload.Status.choices
    ]
    finished = sum(counts.get(s, 0) for s in Upload.FINAL_STATUSES)
    success_rate = counts.get(Upload.Status.SUCCEEDED, 0) / finished if finished else None

    errcode_rows = (  # query 2
        recent.exclude(errcode__isnull=True)
        .exclude(errcode=0)
        .values_list("errcode")
        .annotate(n=Count("pk"))
        .order_by("-n", "errcode")[:TOP_ERRCODES]
    )
    top_errcodes = [
        ErrcodeCount(code, ERRCODE_MEANINGS.get(code, "not a documented errcode"), n,
                     _changelist(Upload, errcode=code, **window))
        for code, n in errcode_rows
    ]

    appid = component_config().appid
    age = component_ticket_age(component_appid=appid) if appid else None  # query 3
    ticket = TicketState(appid, None if age is None else max(0, int(age.total_seconds())))

    return Dashboard(
        since=since,
        by_status=by_status,
        total=sum(counts.values()),
        success_rate=success_rate,
        top_errcodes=top_errcodes,
        ticket=ticket,
        attention=_attention(now=now, since=since, window=window),  # queries 4-8
        all_uploads_url=_changelist(Upload, **window),
        webhooks=_webhooks(since=since),  # query 8
    )


def _webhooks(*, since: datetime) -> AttentionGroup:
    group = AttentionGroup(
        "webhooks", "Webhook endpoints disabled, or with deliveries failed in 24 h",
        _changelist(WebhookDelivery, status__exact=WebhookDelivery.Status.FAILED),
    )
    items, group.truncated = webhook_endpoints_needing_attention(since=since, limit=ATTENTION_LIMIT)
    group.items = [
        AttentionItem(appid=_shorten(item.url, 80), name="" if item.enabled else "disabled", tenant=item.tenant,
                      detail=_shorten(item.detail),
                      url=_changelist(WebhookDelivery, endpoint__id__exact=item.endpoint_id,
                                      status__exact=WebhookDelivery.Status.FAILED) if item.enabled
                      else _change(WebhookEndpoint, item.endpoint_id))
        for item in items
    ]
    return group


def _attention(*, now: datetime, since: datetime, window: dict[str, str]) -> list[AttentionGroup]:
    reauth = AttentionGroup(
        "reauthorization_required",
        "Re-authorization required",
        _changelist(Authorizer, status__exact=Authorizer.Status.REAUTHORIZATION_REQUIRED),
    )
    revoked = AttentionGroup(
        "revoked", f"Revoked in the last {RECENTLY_REVOKED.days} days",
        _changelist(Authorizer, status__exact=Authorizer.Status.REVOKED),
    )
    no_permission = AttentionGroup(
        "missing_permission",
        "Authorized without an upload permission set",
        _changelist(Authorizer, status__exact=Authorizer.Status.AUTHORIZED),
    )
    failing = AttentionGroup(
        "repeated_failures",
        f"{REPEATED_FAILURES} or more failed uploads in 24 h",
        _changelist(Upload, status__exact=Upload.Status.FAILED, **window),
    )
    columns = ("pk", "appid", "nick_name", "tenant__slug", "func_info")

    # Queries 4 and 5, newest change first.
    reauth_rows = Authorizer.objects.reauthorization_required().order_by("-updated_at")
    for row in reauth_rows.values(*columns, "last_error")[: ATTENTION_LIMIT + 1]:
        _append(reauth, row, _shorten(row["last_error"]) or "the merchant must authorize again")
    revoked_rows = Authorizer.objects.revoked().filter(revoked_at__gte=now - RECENTLY_REVOKED).order_by("-revoked_at")
    for row in revoked_rows.values(*columns, "revoked_at")[: ATTENTION_LIMIT + 1]:
        _append(revoked, row, f"revoked {row['revoked_at']:%Y-%m-%d %H:%M} UTC")

    # Query 6: authorized accounts; the permission-set check is the same Python rule the upload task
    # applies (func_info is a JSON list, and JSON containment is not portable to SQLite). One small row
    # per authorized account.
    required = ", ".join(str(i) for i in UPLOADIMG_REQUIRED_ANY_OF)
    for row in Authorizer.objects.authorized().order_by("appid").values(*columns):
        if not can_upload_images(row["func_info"] or []):
            granted = ", ".join(str(i) for i in row["func_info"] or []) or "none"
            _append(no_permission, row, f"granted {granted}; needs any of {required}")

    # Query 7: authorizers with repeated failures in the window.
    failures = (
        Upload.objects.failed().filter(created_at__gte=since)
        .values("authorizer_id", "authorizer__appid", "authorizer__nick_name", "tenant__slug")
        .annotate(n=Count("pk"))
        .filter(n__gte=REPEATED_FAILURES)
        .order_by("-n", "authorizer__appid")[: ATTENTION_LIMIT + 1]
    )
    for row in failures:
        _add(failing, AttentionItem(
            appid=row["authorizer__appid"],
            name=row["authorizer__nick_name"],
            tenant=row["tenant__slug"] or "",
            detail=f"{row['n']} failed uploads",
            url=_changelist(
                Upload, status__exact=Upload.Status.FAILED, authorizer__id__exact=row["authorizer_id"], **window
            ),
        ))

    # Query 8: accounts authorized through another tenant's link while revoked for their own, waiting
    # for the operator's "move" (or "decline") action on the transfer request (docs/architecture.md §3.3).
    transfers = AttentionGroup(
        "transfer_requested", "Transfer requested",
        _changelist(AuthorizerTransferRequest, state__exact=AuthorizerTransferRequest.State.PENDING),
        hint=("Nothing was stored for the old merchant. In the list, select the request and run \"Move the "
              "account to the requesting merchant\" (its queued uploads are rejected, its history stays its "
              "own), or \"Decline\"."),
    )
    pending = AuthorizerTransferRequest.objects.filter(state=AuthorizerTransferRequest.State.PENDING)
    for row in pending.order_by("-requested_at").values(
        "pk", "appid", "authorizer__nick_name", "from_tenant__slug", "to_tenant__slug", "requested_at"
    )[: ATTENTION_LIMIT + 1]:
        _add(transfers, AttentionItem(
            appid=row["appid"],
            name=row["authorizer__nick_name"],
            tenant=row["from_tenant__slug"],
            detail=(f"authorized through {row['to_tenant__slug']}'s link on {row['requested_at']:%Y-%m-%d %H:%M} UTC "
                    f"while revoked for {row['from_tenant__slug']}: move it, or decline"),
            url=_change(AuthorizerTransferRequest, row["pk"]),
        ))
    return [transfers, reauth, revoked, no_permission, failing]


def _add(group: AttentionGroup, item: AttentionItem) -> None:
    """Append up to ATTENTION_LIMIT items; past it, mark the group truncated."""
    if len(group.items) == ATTENTION_LIMIT:
        group.truncated = True
    else:
        group.items.append(item)


def _append(group: AttentionGroup, row: dict, detail: str) -> None:
    """An authorizer row (values of appid, nick_name, tenant__slug, pk) as an item of `group`."""
    _add(group, AttentionItem(
        appid=row["appid"],
        name=row["nick_name"],
        tenant=row["tenant__slug"] or "",
        detail=detail,
        url=_change(Authorizer, row["pk"]),
    ))


def _shorten(text: str, limit: int = 140) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
