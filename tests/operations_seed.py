"""A day of operations, seeded straight into the database, for the dashboard and /metrics tests.

These tests read aggregates over history (failures, revocations, an old ticket), which no short run of
the real flow produces; the rows are written as the services would have left them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from openplatform.component.models import ComponentAccessToken, ComponentVerifyTicket
from openplatform.component.tickets import component_ticket_store
from tenants.models import Authorizer, Tenant
from uploads.models import Upload

#: Raw secrets stored (encrypted) by the seed; no page or scrape may show them.
SECRETS = (
    "seed-access-token-DO-NOT-SHOW-1",
    "seed-refresh-token-DO-NOT-SHOW-2",
    "seed-component-token-DO-NOT-SHOW-3",
    "seed-verify-ticket-DO-NOT-SHOW-4",
)
TICKET_AGE = timedelta(minutes=45)


@dataclass
class Seeded:
    now: datetime
    acme: Tenant
    globex: Tenant
    healthy: Authorizer  # can upload; 3 failed (45009) in 24 h -> repeated failures
    no_permission: Authorizer  # authorized with permission sets {2, 3}: cannot upload
    reauth: Authorizer
    revoked: Authorizer  # revoked 2 days ago
    revoked_long_ago: Authorizer  # revoked 30 days ago: not "recent"


def make_authorizer_row(tenant, appid, **fields) -> Authorizer:
    return Authorizer.objects.create(
        tenant=tenant, component_appid=settings.WECHAT_COMPONENT_APPID, appid=appid, **fields
    )


def make_upload_row(authorizer, status, *, created, errcode=None, errmsg="") -> Upload:
    final = status in Upload.FINAL_STATUSES
    return Upload.objects.create(
        tenant=authorizer.tenant,
        authorizer=authorizer,
        sha256="0" * 64,
        size=1000,
        original_size=1000,
        content_type="image/png",
        status=status,
        errcode=errcode,
        errmsg=errmsg,
        created_at=created,
        finished_at=created + timedelta(seconds=2) if final else None,
    )


def seed_operations() -> Seeded:
    """Last 24 h: 1 queued, 1 uploading, 5 succeeded, 5 failed (3x 45009, 2x 48001), 1 rejected;
    plus one failed (40001) two days ago, outside every window. Newest ticket 45 minutes old."""
    now = timezone.now()
    acme = Tenant.objects.create(slug="acme", name="Acme")
    globex = Tenant.objects.create(slug="globex", name="Globex")
    healthy = make_authorizer_row(acme, "wxhealthy0000001", nick_name="Acme News", func_info=[1, 11], refresh_count=4)
    healthy.set_access_token(SECRETS[0])
    healthy.set_refresh_token(SECRETS[1])
    healthy.access_token_expires_at = now + timedelta(hours=1)
    healthy.save()
    no_permission = make_authorizer_row(globex, "wxnoperm00000001", nick_name="Globex Shop", func_info=[2, 3], refresh_count=2)
    reauth = make_authorizer_row(
        acme,
        "wxreauth00000001",
        nick_name="Acme Mini",
        status=Authorizer.Status.REAUTHORIZATION_REQUIRED,
        last_error="WeChat refused the refresh token (61023); the merchant must authorize again",
    )
    revoked = make_authorizer_row(
        globex, "wxrevoked0000001", nick_name="Globex Old", status=Authorizer.Status.REVOKED,
        revoked_at=now - timedelta(days=2),
    )
    revoked_long_ago = make_authorizer_row(
        globex, "wxrevoked0000002", nick_name="Globex Ancient", status=Authorizer.Status.REVOKED,
        revoked_at=now - timedelta(days=30),
    )

    recent = now - timedelta(hours=1)
    make_upload_row(healthy, Upload.Status.QUEUED, created=now - timedelta(minutes=5))
    make_upload_row(healthy, Upload.Status.UPLOADING, created=now - timedelta(minutes=2))
    for _ in range(5):
        make_upload_row(healthy, Upload.Status.SUCCEEDED, created=recent)
    for _ in range(3):
        make_upload_row(healthy, Upload.Status.FAILED, created=recent, errcode=45009, errmsg="reach max api daily quota limit")
    for _ in range(2):
        make_upload_row(no_permission, Upload.Status.FAILED, created=recent, errcode=48001, errmsg="api unauthorized")
    make_upload_row(revoked, Upload.Status.REJECTED, created=recent, errmsg="the account revoked its authorization")
    make_upload_row(healthy, Upload.Status.FAILED, created=now - timedelta(days=2), errcode=40001, errmsg="invalid credential")

    ticket = component_ticket_store(
        component_appid=settings.WECHAT_COMPONENT_APPID, ticket=SECRETS[3], pushed_at=now - TICKET_AGE
    )
    ComponentVerifyTicket.objects.filter(pk=ticket.pk).update(received_at=now - TICKET_AGE)
    token = ComponentAccessToken(
        component_appid=settings.WECHAT_COMPONENT_APPID,
        expires_at=now + timedelta(seconds=3600),
        refresh_count=7,
        generation=7,
    )
    token.set_access_token(SECRETS[2])
    token.save()
    return Seeded(now, acme, globex, healthy, no_permission, reauth, revoked, revoked_long_ago)
