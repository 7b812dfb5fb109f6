"""Deduplication: bytes that already succeeded for the same authorizer reuse that URL at once.

The simulator's uploadimg counter is the ground truth for "no WeChat call".
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from tests.fixtures import image_bytes, media_file, noise_bytes, sim_count
from uploads.models import Upload, UploadAttempt, UploadBlob
from uploads.services.process import upload_process
from webhooks.models import WebhookEvent

UPLOADIMG = "/cgi-bin/media/uploadimg"


def post(client, data: bytes, appid: str, *, path: str = "/api/v1/uploads/", headers=None, **fields):
    # Form fields before the file: a `fit` after `media` could no longer raise the body's limit.
    response = client.post(path, {"authorizer_appid": appid, **fields, "media": media_file(data)},
                           format="multipart", headers=headers or {})
    assert response.status_code == 202, response.content
    return response.json()


def uploaded(client, data: bytes, authorizer, **fields) -> dict:
    """Accepted and, if it was queued, sent by the task: the upload's final JSON."""
    body = post(client, data, authorizer.appid, **fields)
    if body["status"] == "queued":
        upload_process(upload_id=body["id"])
    return client.get(f"/api/v1/uploads/{body['id']}/").json()


def test_a_repeat_succeeds_at_once_with_the_same_url_and_no_wechat_call(api_client, authorizer, component):
    data = image_bytes("PNG", color=(10, 20, 30))
    first = uploaded(api_client, data, authorizer)
    assert first["status"] == "succeeded" and first["reused_from"] is None
    calls = sim_count(component, UPLOADIMG)

    again = post(api_client, data, authorizer.appid)

    assert again["status"] == "succeeded" and again["id"] != first["id"]
    assert (again["url"], again["reused_from"], again["sha256"]) == (first["url"], first["id"], first["sha256"])
    assert again["finished_at"] and again["errcode"] == 0 and again["permission_check"]["passed"] is True
    assert sim_count(component, UPLOADIMG) == calls
    (attempt,) = UploadAttempt.objects.filter(upload_id=again["id"])
    assert (attempt.outcome, str(attempt.reused_upload_id), attempt.number) == ("reused", first["id"], 1)
    assert not UploadBlob.objects.filter(upload_id=again["id"]).exists()  # nothing left to send
    # the webhook as for any success, with the upload as the API shows it
    event = WebhookEvent.objects.filter(type="upload.succeeded", data__id=again["id"]).get()
    assert event.data == api_client.get(f"/api/v1/uploads/{again['id']}/").json()
    # and the task, if it ran anyway, has nothing to do
    assert upload_process(upload_id=again["id"]).status == "succeeded"
    assert sim_count(component, UPLOADIMG) == calls


def test_a_repeat_of_a_repeat_names_the_first_upload(api_client, authorizer, component):
    data = image_bytes("PNG", color=(11, 21, 31))
    first = uploaded(api_client, data, authorizer)
    post(api_client, data, authorizer.appid)
    third = post(api_client, data, authorizer.appid)
    assert third["reused_from"] == first["id"]
    assert sim_count(component, UPLOADIMG) == 1


def test_a_repeat_accepted_while_the_first_was_queued_reuses_it_when_its_task_runs(
    api_client, authorizer, component, django_assert_max_num_queries
):
    data = image_bytes("PNG", color=(19, 29, 39))
    first = post(api_client, data, authorizer.appid)
    second = post(api_client, data, authorizer.appid)  # the first has not been sent yet
    fresh = post(api_client, data, authorizer.appid, dedupe="false")
    assert first["status"] == second["status"] == fresh["status"] == "queued"
    assert upload_process(upload_id=first["id"]).status == "succeeded"

    with django_assert_max_num_queries(8):  # the task's budget: the check rides on the load
        assert upload_process(upload_id=second["id"]).status == "succeeded"

    assert sim_count(component, UPLOADIMG) == 1
    body = api_client.get(f"/api/v1/uploads/{second['id']}/").json()
    assert (body["reused_from"], body["url"], body["attempts"]) == (
        first["id"], Upload.objects.get(pk=first["id"]).url, 1)
    (attempt,) = UploadAttempt.objects.filter(upload_id=second["id"])
    assert (attempt.outcome, str(attempt.reused_upload_id)) == ("reused", first["id"])
    assert WebhookEvent.objects.get(type="upload.succeeded", data__id=second["id"]).data == body
    # `dedupe=false` is honoured by the task too
    assert upload_process(upload_id=fresh["id"]).status == "succeeded"
    assert sim_count(component, UPLOADIMG) == 2


@pytest.mark.parametrize("where", ["form", "query"])
def test_dedupe_false_forces_a_fresh_upload(api_client, authorizer, component, where):
    data = image_bytes("PNG", color=(12, 22, 32))
    first = uploaded(api_client, data, authorizer)

    if where == "form":
        fresh = post(api_client, data, authorizer.appid, dedupe="false")
    else:
        fresh = post(api_client, data, authorizer.appid, path="/api/v1/uploads/?dedupe=false")

    assert fresh["status"] == "queued" and fresh["reused_from"] is None
    assert upload_process(upload_id=fresh["id"]).status == "succeeded"
    assert sim_count(component, UPLOADIMG) == 2
    assert Upload.objects.get(pk=fresh["id"]).reused_from_id is None and first["reused_from"] is None


def test_never_across_authorizers(api_client, authorizer, make_authorizer, tenant, make_tenant, make_api_client,
                                  component):
    data = image_bytes("PNG", color=(13, 23, 33))
    uploaded(api_client, data, authorizer)
    sibling = make_authorizer(tenant)
    other_tenant = make_tenant("globex")
    other_client = make_api_client(other_tenant)

    assert post(api_client, data, sibling.appid)["status"] == "queued"
    assert post(other_client, data, make_authorizer(other_tenant).appid)["status"] == "queued"


def test_only_within_the_window_and_not_when_turned_off(api_client, authorizer, component, settings):
    data = image_bytes("PNG", color=(14, 24, 34))
    first = uploaded(api_client, data, authorizer)

    settings.UPLOAD_DEDUPE_DAYS = 0
    assert post(api_client, data, authorizer.appid)["status"] == "queued"

    settings.UPLOAD_DEDUPE_DAYS = 30
    Upload.objects.exclude(pk=first["id"]).delete()
    Upload.objects.filter(pk=first["id"]).update(finished_at=timezone.now() - timedelta(days=30, minutes=1))
    assert post(api_client, data, authorizer.appid)["status"] == "queued"
    Upload.objects.filter(pk=first["id"]).update(finished_at=timezone.now() - timedelta(days=29))
    assert post(api_client, data, authorizer.appid)["reused_from"] == first["id"]


def test_failed_uploads_are_not_reused_and_an_account_that_may_not_upload_gets_no_reuse(
    api_client, authorizer, component
):
    data = image_bytes("PNG", color=(15, 25, 35))
    component.inject_fault(UPLOADIMG, "errcode", errcode=48001)
    assert uploaded(api_client, data, authorizer)["status"] == "failed"
    assert post(api_client, data, authorizer.appid)["status"] == "queued"

    ok = image_bytes("PNG", color=(16, 26, 36))
    uploaded(api_client, ok, authorizer)
    authorizer.func_info = [2, 3]  # permission sets withdrawn: a fresh upload would be rejected
    authorizer.save()
    repeat = post(api_client, ok, authorizer.appid)
    assert repeat["status"] == "queued"
    assert upload_process(upload_id=repeat["id"]).status == "rejected"


def test_the_bytes_compared_are_those_after_fit(api_client, authorizer, component):
    big = noise_bytes("JPEG", size=(1100, 1100), seed=5, quality=100)
    assert len(big) > 1_048_576
    first = uploaded(api_client, big, authorizer, fit="true")
    assert first["status"] == "succeeded" and first["fitted"] is True

    again = post(api_client, big, authorizer.appid, fit="true")

    assert again["reused_from"] == first["id"] and again["sha256"] == first["sha256"]
    assert sim_count(component, UPLOADIMG) == 1


def test_the_same_idempotency_key_with_and_without_dedupe_is_a_conflict(api_client, authorizer):
    data = image_bytes("PNG", color=(17, 27, 37))
    post(api_client, data, authorizer.appid, headers={"Idempotency-Key": "k"})
    same = post(api_client, data, authorizer.appid, headers={"Idempotency-Key": "k"}, dedupe="true")
    assert same["status"] == "queued"
    conflict = api_client.post("/api/v1/uploads/", {"media": media_file(data), "authorizer_appid": authorizer.appid,
                                                    "dedupe": "false"}, format="multipart",
                               headers={"Idempotency-Key": "k"})
    assert (conflict.status_code, conflict.json()["code"]) == (409, "idempotency_conflict")


def test_a_bad_dedupe_value_is_refused(api_client, authorizer):
    response = api_client.post("/api/v1/uploads/", {"media": media_file(image_bytes()), "authorizer_appid":
                                                    authorizer.appid, "dedupe": "maybe"}, format="multipart")
    assert (response.status_code, response.json()["code"]) == (400, "invalid")


def _count(action) -> int:
    with CaptureQueriesContext(connection) as ctx:
        action()
    return len(ctx.captured_queries)


def test_the_accept_path_stays_within_its_query_budget_with_dedupe_on(
    api_client, authorizer, component, bulk_uploads, make_authorizer, tenant, django_assert_max_num_queries,
    record_property, capsys,
):
    repeat = image_bytes("PNG", color=(18, 28, 38))
    uploaded(api_client, repeat, authorizer)
    counter = iter(range(1, 10_000))

    def miss():
        post(api_client, image_bytes("PNG", color=(next(counter), 3, 3)), authorizer.appid)

    def hit():
        assert post(api_client, repeat, authorizer.appid)["status"] == "succeeded"

    def off():
        post(api_client, image_bytes("PNG", color=(next(counter), 4, 4)), authorizer.appid, dedupe="false")

    small = (_count(miss), _count(hit), _count(off))
    bulk_uploads(authorizer, 300)  # history, many with the same bytes as each other
    for _ in range(3):
        make_authorizer(tenant)
    with django_assert_max_num_queries(4):  # the key; authorizer + dedupe lookup + INSERT in one (in a savepoint)
        large_miss = _count(miss)
    with django_assert_max_num_queries(9):
        large_hit = _count(hit)
    large = (large_miss, large_hit, _count(off))

    assert small == large
    assert large_miss == large[2]  # the dedupe lookup rides on the insert's statement (uploads/services/pg.py)
    record_property("accept_queries_dedupe_miss", large_miss)
    record_property("accept_queries_dedupe_hit", large_hit)
    record_property("accept_queries_dedupe_off", large[2])
    with capsys.disabled():
        print(f"\n[queries] accept: dedupe off {large[2]}, on and new bytes {large_miss}, on and a repeat {large_hit}")
