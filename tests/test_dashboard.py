"""The operator's dashboard on the admin index: counts, errcode meanings, ticket age, attention list.

The dashboard in a real browser (rendered, styled, a screenshot's colours) is in tests/test_browser.py.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from openplatform.ops.dashboard import dashboard_get
from tests.operations_seed import SECRETS, make_authorizer_row, make_upload_row, seed_operations
from uploads.models import Upload

pytestmark = pytest.mark.django_db


def _section(html: str, element_id: str) -> str:
    """The markup of the element with that id, up to the next dashboard section."""
    start = html.index(f'id="{element_id}"')
    following = [html.find(marker, start + 1) for marker in ('id="op-', 'id="content-main"')]
    end = min(i for i in following if i != -1)
    return html[start:end]


def test_dashboard_shows_the_last_24_hours_with_links_into_the_admin(admin_client, django_assert_max_num_queries):
    # Given a day of operations
    seeded = seed_operations()

    # When the operator opens the admin index
    # (session, user, the dashboard's eight, the index's recent actions)
    with django_assert_max_num_queries(12):
        response = admin_client.get("/admin/")

    # Then the dashboard is above the default app list
    assert response.status_code == 200
    html = response.content.decode()
    assert html.index('id="operator-dashboard"') < html.index('id="content-main"')
    assert 'class="app-uploads' in html and 'class="app-tenants' in html

    uploads = _section(html, "op-uploads")
    for status, count in {"queued": 1, "uploading": 1, "succeeded": 5, "failed": 5, "rejected": 1}.items():
        tile = re.search(rf'data-status="{status}">\s*<span class="op-number">(\d+)</span>', uploads)
        assert tile and int(tile.group(1)) == count, status
        assert f"status__exact={status}" in uploads
    assert "45.5%" in uploads  # 5 succeeded of 11 finished
    assert "13 uploads created since" in uploads

    errcodes = _section(html, "op-errcodes")
    assert errcodes.index(">45009<") < errcodes.index(">48001<")  # most frequent first
    assert "daily API quota reached" in errcodes
    assert "the account itself lacks this API" in errcodes  # 48001, told apart from 61007 (issue 12)
    assert "40001" not in errcodes  # two days old

    ticket = _section(html, "op-ticket")
    assert "op-warning" in ticket and "45 min" in ticket and "Over 30 minutes" in ticket

    attention = _section(html, "op-attention")
    assert "Authorizers that need attention (4)" in attention
    groups = {key: _section(html, f"op-attention-{key}") for key in
              ("reauthorization_required", "revoked", "missing_permission", "repeated_failures")}
    assert seeded.reauth.appid in groups["reauthorization_required"]
    assert "/admin/tenants/authorizer/?status__exact=reauthorization_required" in groups["reauthorization_required"]
    assert f"/admin/tenants/authorizer/{seeded.reauth.pk}/change/" in groups["reauthorization_required"]
    assert seeded.revoked.appid in groups["revoked"]
    assert seeded.revoked_long_ago.appid not in html
    assert seeded.no_permission.appid in groups["missing_permission"]
    assert "granted 2, 3; needs any of 1, 8, 9, 11, 18, 37, 100" in groups["missing_permission"]
    assert seeded.healthy.appid in groups["repeated_failures"] and "3 failed uploads" in groups["repeated_failures"]
    assert seeded.no_permission.appid not in groups["repeated_failures"]  # only 2 failures
    assert "/admin/uploads/upload/?status__exact=failed" in groups["repeated_failures"]

    for secret in SECRETS:
        assert secret not in html


def test_every_dashboard_link_opens_the_changelist_filtered_to_the_rows_counted(admin_client):
    # Given a day of operations and the dashboard computed from it
    seed_operations()
    dashboard = dashboard_get()
    expected = {row.url: row.count for row in dashboard.by_status}
    expected.update({row.url: row.count for row in dashboard.top_errcodes})
    item = next(g for g in dashboard.attention if g.key == "repeated_failures").items[0]
    expected[item.url] = 3
    expected[next(g for g in dashboard.attention if g.key == "reauthorization_required").url] = 1

    # When each link is followed, then the changelist shows exactly the rows counted
    for url, count in expected.items():
        response = admin_client.get(url)
        assert response.status_code == 200, url  # an unknown lookup would redirect with ?e=1
        assert response.context["cl"].result_count == count, (url, parse_qs(urlsplit(url).query))


def test_dashboard_runs_a_fixed_number_of_queries_whatever_the_data():
    seeded = seed_operations()
    with CaptureQueriesContext(connection) as small:
        dashboard_get()

    # Given ten more authorizers (half of them without an upload permission set), each failing 4 times
    for i in range(10):
        authorizer = make_authorizer_row(seeded.acme, f"wxextra{i:09d}", func_info=[] if i % 2 else [1])
        for _ in range(4):
            make_upload_row(authorizer, Upload.Status.FAILED, created=seeded.now, errcode=-1)
    with CaptureQueriesContext(connection) as large:
        dashboard = dashboard_get()

    # Then the same number of queries ran, and the new rows are all there
    assert len(large.captured_queries) == len(small.captured_queries) <= 9
    groups = {group.key: group for group in dashboard.attention}
    assert len(groups["repeated_failures"].items) == 11
    assert len(groups["missing_permission"].items) == 6


def test_staff_without_view_permissions_get_the_plain_index(client, django_user_model):
    user = django_user_model.objects.create_user("clerk", password="pw-clerk-123", is_staff=True)
    client.force_login(user)
    seed_operations()
    response = client.get("/admin/")
    assert response.status_code == 200
    assert 'id="operator-dashboard"' not in response.content.decode()


def test_a_fresh_ticket_is_not_a_warning_and_an_empty_day_says_so(admin_client, settings):
    from django.utils import timezone

    from openplatform.component.tickets import component_ticket_store

    component_ticket_store(component_appid=settings.WECHAT_COMPONENT_APPID, ticket="t", pushed_at=timezone.now())
    html = admin_client.get("/admin/").content.decode()
    assert "op-warning" not in _section(html, "op-ticket")
    assert "No WeChat errors in the last 24 hours." in html
    assert "Authorizers that need attention (0)" in html
