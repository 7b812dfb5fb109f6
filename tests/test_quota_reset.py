"""45009 has a way out (issue 12, point 4): operators reset an authorizer's or the component's API quota
from the admin, see how many of the month's 10 resets are used, and retry the uploads that failed with
45009 in bulk. Against the simulator, which counts resets per account per calendar month (Beijing time)
and answers 48006 past 10 (docs/wechat-protocol.md §11)."""

from __future__ import annotations

from datetime import UTC, datetime
from html import unescape

import pytest
from django.conf import settings as django_settings
from django.contrib.auth.models import Permission, User

from openplatform.component.models import QuotaReset
from openplatform.component.quota import quota_reset_usage
from openplatform.component.token import component_access_token_get
from openplatform.wechat.client import WeChatClient
from tenants.services.tokens import authorizer_access_token_get
from tests.fixtures import expire_access_token, image_bytes, sim_count
from uploads.models import Upload
from uploads.services.process import upload_process

pytestmark = pytest.mark.django_db

COMPONENT_APPID = django_settings.WECHAT_COMPONENT_APPID
UPLOADIMG = "/cgi-bin/media/uploadimg"
CLEAR_QUOTA = "/cgi-bin/clear_quota"
CLEAR_QUOTA_V2 = "/cgi-bin/component/clear_quota/v2"
AUTHORIZER_TOKEN = "/cgi-bin/component/api_authorizer_token"
AUTHORIZERS = "/admin/tenants/authorizer/"
UPLOADS = "/admin/uploads/upload/"
COMPONENT_QUOTA = "/admin/openplatform/componentaccesstoken/clear-quota/"


def action(client, changelist: str, name: str, pks, **extra):
    return client.post(changelist, {"action": name, "_selected_action": [str(pk) for pk in pks], **extra},
                       follow=True)


def messages_of(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]


def quota_used(component, appid: str, path: str = UPLOADIMG) -> int:
    """What the simulator has counted today against `appid`'s quota on `path`."""
    return sum(q["used"] for q in component.state()["quota_used"] if q["appid"] == appid and q["path"] == path)


def clear_authorizer_quota(client, authorizer):
    return action(client, AUTHORIZERS, "clear_api_quota", [authorizer.pk], apply="1")


def run(upload) -> str:
    """Run the upload's task body in this process (as a worker would on the message asserted before)."""
    outcome = upload_process(upload_id=upload.pk).status
    upload.refresh_from_db()
    return outcome


def column(html: str, appid: str) -> str:
    """The changelist row of `appid`, as text."""
    row = next(r for r in html.split("<tr") if f">{appid}<" in r)
    return unescape(row)


# -- an authorizer's quota -------------------------------------------------------------------------------


def test_clearing_an_authorizers_quota_lets_its_45009_uploads_through_when_retried(
    admin_client, authorizer, make_tenant, make_authorizer, component, make_upload,
    django_capture_on_commit_callbacks, published_tasks,
):
    other = make_authorizer(make_tenant("globex"))
    component.configure(daily_limit=2)
    done = [make_upload(authorizer, image_bytes("PNG", size=(10 + i, 10))) for i in range(2)]
    quota_failed = [make_upload(authorizer, image_bytes("PNG", size=(20 + i, 10))) for i in range(2)]
    other_failed = make_upload(authorizer, image_bytes("PNG", size=(30, 10)))
    theirs = make_upload(other, image_bytes("PNG", size=(40, 10)))
    assert [run(u) for u in done] == ["succeeded", "succeeded"]
    assert [run(u) for u in quota_failed] == ["failed", "failed"]
    component.configure(daily_limit=100)
    component.inject_fault(UPLOADIMG, "errcode", count=1, errcode=48001)
    assert run(other_failed) == "failed"  # failed, but not with 45009
    component.inject_fault(UPLOADIMG, "errcode", count=1, errcode=45009)
    assert run(theirs) == "failed"  # another account's 45009
    component.configure(daily_limit=2)
    # the recorded message says what an operator can do
    assert {u.errcode for u in quota_failed} == {45009}
    assert all("Clear this account's API quota" in u.errmsg and "Retry its uploads that failed with 45009"
               in u.errmsg and "00:00 Beijing time" in u.errmsg for u in quota_failed)
    assert quota_used(component, authorizer.appid) == 2

    # The action first shows how many of the month's resets each account has used.
    confirm = admin_client.post(AUTHORIZERS, {"action": "clear_api_quota", "_selected_action": [authorizer.pk]})
    assert confirm.status_code == 200
    assert "0 of 10 this month" in column(confirm.content.decode(), authorizer.appid)
    assert sim_count(component, CLEAR_QUOTA) == 0  # nothing sent before the operator confirms

    cleared = clear_authorizer_quota(admin_client, authorizer)

    assert messages_of(cleared) == [
        f"{authorizer.appid}: API quota cleared; resets used: 1 of 10 this month. Its uploads that failed with "
        "45009 can now be retried (action \"Retry its uploads that failed with 45009\")."
    ]
    assert quota_used(component, authorizer.appid) == 0  # the simulator's quota is reset
    (call,) = component.calls(CLEAR_QUOTA)
    assert (call["http_status"], call["errcode"], call["json"]) == (200, 0, {"appid": authorizer.appid})
    reset = QuotaReset.objects.get()
    assert (reset.appid, reset.kind, reset.endpoint, reset.requested_by, reset.succeeded, reset.errcode) == (
        authorizer.appid, "authorizer", CLEAR_QUOTA, "admin", True, None)
    listing = admin_client.get(AUTHORIZERS).content.decode()
    assert "1 of 10 this month" in column(listing, authorizer.appid)
    assert "0 of 10 this month" in column(listing, other.appid)

    # Retry its uploads that failed with 45009: exactly those two are queued again and enqueued.
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        retried = action(admin_client, AUTHORIZERS, "retry_uploads_failed_for_quota", [authorizer.pk])

    assert messages_of(retried) == [f"2 upload(s) of {authorizer.appid} that failed with 45009 queued again"]
    assert len(callbacks) == 2
    assert published_tasks == [("uploads.upload_image", [str(u.pk)]) for u in quota_failed]
    statuses = dict(Upload.objects.values_list("pk", "status"))
    assert [statuses[u.pk] for u in quota_failed] == ["queued", "queued"]
    assert statuses[other_failed.pk] == statuses[theirs.pk] == "failed"
    # when the worker runs them: the quota is back, they succeed
    assert [run(u) for u in quota_failed] == ["succeeded", "succeeded"]
    assert all(u.url for u in quota_failed)


def test_the_eleventh_reset_in_a_month_is_refused_with_48006_and_the_admin_says_so(
    admin_client, authorizer, component
):
    for n in range(1, 11):
        response = clear_authorizer_quota(admin_client, authorizer)
        assert messages_of(response)[0].startswith(
            f"{authorizer.appid}: API quota cleared; resets used: {n} of 10 this month.")

    refused = clear_authorizer_quota(admin_client, authorizer)

    (message,) = messages_of(refused)
    assert message.startswith(f"WeChat refused to reset the API quota of {authorizer.appid} (48006)")
    assert "used up" in message and "1st of next month" in message
    assert [m.level_tag for m in refused.context["messages"]] == ["error"]
    assert sim_count(component, CLEAR_QUOTA) == 11
    assert QuotaReset.objects.filter(succeeded=True).count() == 10
    assert QuotaReset.objects.get(succeeded=False).errcode == 48006
    assert "10 of 10 this month" in column(admin_client.get(AUTHORIZERS).content.decode(), authorizer.appid)
    usage = quota_reset_usage(appid=authorizer.appid)
    assert (usage.used, usage.remaining, usage.exhausted) == (10, 0, True)


def test_resets_made_elsewhere_are_shown_as_spent_once_wechat_answers_48006(admin_client, authorizer, component):
    """The account's own console draws on the same 10: our records say 0, WeChat says none are left."""
    client = WeChatClient(api_base=component.url)
    for _ in range(10):
        client.clear_quota(access_token=authorizer.get_access_token(), appid=authorizer.appid)
    listing = admin_client.get(AUTHORIZERS).content.decode()
    assert "0 of 10 this month" in column(listing, authorizer.appid)

    refused = clear_authorizer_quota(admin_client, authorizer)

    assert "(48006)" in messages_of(refused)[0]
    shown = column(admin_client.get(AUTHORIZERS).content.decode(), authorizer.appid)
    assert "10 of 10 this month (WeChat says used up; 0 from this console)" in shown


def test_a_revoked_account_has_no_token_to_reset_its_quota_with(admin_client, authorizer, component):
    component.revoke(authorizer.appid)
    from tenants.services.authorization import authorizer_revoke

    authorizer_revoke(authorizer=authorizer, reason="test")

    response = clear_authorizer_quota(admin_client, authorizer)

    assert messages_of(response) == [
        f"{authorizer.appid}: quota not reset: authorizer {authorizer.appid} is revoked: no token to reset its quota with"
    ]
    assert sim_count(component, CLEAR_QUOTA) == 0 and not QuotaReset.objects.exists()


def test_resets_are_counted_per_calendar_month_in_beijing_time(db):
    appid = "wxmonthcount00001"

    def reset(at: str, **fields) -> None:
        QuotaReset.objects.create(appid=appid, kind="authorizer", endpoint=CLEAR_QUOTA,
                                  requested_at=datetime.fromisoformat(at), **{"succeeded": True, **fields})

    reset("2026-05-31T15:59:59+00:00")  # 23:59:59 on 31 May in Beijing: May
    reset("2026-05-31T16:00:00+00:00")  # 00:00 on 1 June in Beijing: June
    reset("2026-06-30T15:59:59+00:00")  # the last second of June in Beijing
    reset("2026-06-10T00:00:00+00:00", succeeded=False, errcode=-1)  # refused: not a reset
    QuotaReset.objects.create(appid="wxsomeoneelse0001", kind="authorizer", endpoint=CLEAR_QUOTA,
                              requested_at=datetime(2026, 6, 10, tzinfo=UTC), succeeded=True)

    june = quota_reset_usage(appid=appid, now=datetime(2026, 6, 30, 15, 59, 59, tzinfo=UTC))
    may = quota_reset_usage(appid=appid, now=datetime(2026, 5, 31, 15, 59, 59, tzinfo=UTC))
    july = quota_reset_usage(appid=appid, now=datetime(2026, 6, 30, 16, 0, 0, tzinfo=UTC))

    assert (june.used, str(june)) == (2, "2 of 10 this month")
    assert may.used == 1
    assert july.used == 0


def test_only_operators_allowed_to_record_a_reset_get_the_actions(client, authorizer, component):
    staff = User.objects.create_user("viewer", password="x", is_staff=True)
    staff.user_permissions.add(*Permission.objects.filter(codename__in=[
        "view_authorizer", "change_authorizer", "view_componentaccesstoken"]))
    client.force_login(staff)

    assert "clear_api_quota" not in client.get(AUTHORIZERS).content.decode()
    assert client.get(COMPONENT_QUOTA).status_code == 403
    assert client.post(COMPONENT_QUOTA).status_code == 403

    staff.user_permissions.add(Permission.objects.get(codename="add_quotareset"))
    staff = User.objects.get(pk=staff.pk)  # permissions are cached on the instance
    client.force_login(staff)
    assert "clear_api_quota" in client.get(AUTHORIZERS).content.decode()
    assert client.get(COMPONENT_QUOTA).status_code == 200
    assert sim_count(component, CLEAR_QUOTA_V2) == 0


# -- the component's quota -------------------------------------------------------------------------------


def test_the_components_quota_is_cleared_from_the_dashboard_link_and_its_45009_uploads_retried(
    admin_client, authorizer, component, make_upload, django_capture_on_commit_callbacks, published_tasks
):
    """api_authorizer_token is on the component's quota: once it is spent, no token, no upload."""
    component_access_token_get()  # the component token is at hand (it is not metered again)
    component.configure(daily_limit=1)
    expire_access_token(authorizer)
    authorizer_access_token_get(authorizer=authorizer)  # a new token: the component's one call of the day
    expire_access_token(authorizer)
    failed = make_upload(authorizer, image_bytes("PNG", size=(12, 10)))
    waiting = make_upload(authorizer, image_bytes("PNG", size=(13, 10)))
    assert run(failed) == "failed"
    assert failed.errcode == 45009 and failed.errmsg.startswith("access token: ")
    assert "component's daily api_authorizer_token quota" in failed.errmsg
    assert "clear the component's API quota" in failed.errmsg
    assert quota_used(component, COMPONENT_APPID, AUTHORIZER_TOKEN) == 1

    index = admin_client.get("/admin/").content.decode()
    assert f'href="{COMPONENT_QUOTA}"' in index
    page = admin_client.get(COMPONENT_QUOTA)
    assert page.status_code == 200 and "0 of 10 this month" in page.content.decode()
    assert sim_count(component, CLEAR_QUOTA_V2) == 0

    cleared = admin_client.post(COMPONENT_QUOTA, follow=True)

    assert messages_of(cleared) == [
        f"{COMPONENT_APPID}: the component's API quota is cleared; resets used: 1 of 10 this month"]
    assert "1 of 10 this month" in cleared.content.decode()
    assert quota_used(component, COMPONENT_APPID, AUTHORIZER_TOKEN) == 0
    reset = QuotaReset.objects.get()
    assert (reset.appid, reset.kind, reset.endpoint, reset.succeeded) == (
        COMPONENT_APPID, "component", CLEAR_QUOTA_V2, True)
    tokens = admin_client.get("/admin/openplatform/componentaccesstoken/").content.decode()
    assert "1 of 10 this month" in tokens

    # Bulk retry from the uploads list: only the 45009 failure of the selection is sent again.
    with django_capture_on_commit_callbacks(execute=True):
        retried = action(admin_client, UPLOADS, "retry_failed_for_quota", [failed.pk, waiting.pk])
    assert messages_of(retried) == ["1 selected upload(s) did not fail with 45009: left alone",
                                    "1 upload(s) that failed with 45009 queued again"]
    assert published_tasks == [("uploads.upload_image", [str(failed.pk)])]
    assert run(failed) == "succeeded", failed.errmsg


def test_the_components_eleventh_reset_in_a_month_answers_48006(admin_client, component, ticket):
    for n in range(1, 11):
        response = admin_client.post(COMPONENT_QUOTA, follow=True)
        assert messages_of(response) == [
            f"{COMPONENT_APPID}: the component's API quota is cleared; resets used: {n} of 10 this month"]

    refused = admin_client.post(COMPONENT_QUOTA, follow=True)

    (message,) = messages_of(refused)
    assert message.startswith(f"WeChat refused to reset the API quota of {COMPONENT_APPID} (48006)")
    assert "10 of 10 this month" in refused.content.decode()
    assert sim_count(component, CLEAR_QUOTA_V2) == 11
    assert list(QuotaReset.objects.order_by("requested_at").values_list("succeeded", "errcode"))[-2:] == [
        (True, None), (False, 48006)]


def test_bulk_retry_from_the_uploads_list_leaves_purged_and_other_failures_alone(
    admin_client, authorizer, component, make_upload, django_capture_on_commit_callbacks, published_tasks
):
    from uploads.models import UploadBlob

    uploads = [make_upload(authorizer, image_bytes("PNG", size=(50 + i, 10))) for i in range(3)]
    component.inject_fault(UPLOADIMG, "errcode", count=2, errcode=45009)
    component.inject_fault(UPLOADIMG, "errcode", count=1, errcode=40005)
    assert [run(u) for u in uploads] == ["failed"] * 3
    purged, kept, other = uploads
    UploadBlob.objects.filter(upload=purged).delete()

    with django_capture_on_commit_callbacks(execute=True):
        response = action(admin_client, UPLOADS, "retry_failed_for_quota", [u.pk for u in uploads])

    assert messages_of(response) == [
        "1 selected upload(s) did not fail with 45009: left alone",
        f"{purged.pk}: the image bytes are no longer stored (retention); ask the merchant to upload again",
        "1 upload(s) that failed with 45009 queued again",
    ]
    assert published_tasks == [("uploads.upload_image", [str(kept.pk)])]
    assert dict(Upload.objects.values_list("pk", "status")) == {purged.pk: "failed", kept.pk: "queued",
                                                                 other.pk: "failed"}
