"""The upload task's state machine (uploads.services.process), run in-process against the simulator.

The simulator's counters and upload log are the ground truth of what WeChat saw. Each test runs the
task body directly: deterministic, and a retry is "make it due, run it again".
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from openplatform.wechat.permissions import UPLOADIMG_REQUIRED_ANY_OF
from tenants.models import Authorizer
from tenants.services.authorization import authorizer_revoke
from tests.fixtures import expire_access_token, image_bytes, media_file, sim_count
from uploads.models import Upload, UploadAttempt, UploadBlob
from uploads.services.process import upload_process
from uploads.tasks import purge_image_bytes, sweep_stuck_uploads

UPLOADIMG = "/cgi-bin/media/uploadimg"
AUTHORIZER_TOKEN = "/cgi-bin/component/api_authorizer_token"


def run_again(upload: Upload):
    """The backoff has elapsed: make the upload due now and run the task body once more."""
    Upload.objects.filter(pk=upload.pk).update(next_attempt_at=timezone.now())
    return upload_process(upload_id=upload.pk)


def wait_for(predicate, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def attempts_of(upload: Upload) -> list[UploadAttempt]:
    return list(UploadAttempt.objects.filter(upload=upload).order_by("number"))


# -- success and early exits ----------------------------------------------------------------------------------


def test_success_records_the_url_and_one_attempt_with_the_current_token(authorizer, component, make_upload):
    upload = make_upload(authorizer, image_bytes("JPEG"))

    outcome = upload_process(upload_id=upload.pk)

    upload.refresh_from_db()
    authorizer.refresh_from_db()
    assert outcome.status == "succeeded" and outcome.retry_in is None
    assert upload.status == Upload.Status.SUCCEEDED
    assert upload.url.startswith("http://mmbiz.qpic.cn/")
    assert upload.errcode == 0 and upload.errmsg == ""
    assert upload.finished_at is not None and upload.lease_until is None
    assert upload.attempts == 1
    assert upload.permission_check == {
        "required_any_of": list(UPLOADIMG_REQUIRED_ANY_OF), "granted": [1, 11], "passed": True,
    }
    (attempt,) = attempts_of(upload)
    assert (attempt.number, attempt.outcome, attempt.http_status, attempt.errcode) == (1, "succeeded", 200, 0)
    assert attempt.token_generation == authorizer.token_generation
    (seen,) = component.uploads()
    assert seen["authorizer_appid"] == authorizer.appid
    assert seen["access_token"] == authorizer.get_access_token()
    assert (seen["part_name"], seen["filename"], seen["content_type"]) == ("media", "image.jpg", "image/jpeg")
    assert seen["sha256"] == upload.sha256 and seen["url"] == upload.url


def test_png_is_sent_with_a_png_filename(authorizer, component, make_upload):
    upload = make_upload(authorizer, image_bytes("PNG"))

    assert upload_process(upload_id=upload.pk).status == "succeeded"

    (seen,) = component.uploads()
    assert (seen["filename"], seen["content_type"]) == ("image.png", "image/png")


def test_already_final_upload_returns_at_once_without_calling_wechat(
    authorizer, component, make_upload, django_assert_max_num_queries
):
    upload = make_upload(authorizer)
    assert upload_process(upload_id=upload.pk).status == "succeeded"
    calls = component.counters()

    with django_assert_max_num_queries(3):
        outcome = upload_process(upload_id=upload.pk)

    assert outcome.status == "succeeded" and outcome.retry_in is None
    assert component.counters() == calls
    assert len(attempts_of(upload)) == 1


def test_missing_upload_is_reported_not_raised(db):
    import uuid

    assert upload_process(upload_id=uuid.uuid4()).status == "missing"


# -- rejected before sending ----------------------------------------------------------------------------------


def test_revoked_authorizer_is_rejected_and_nothing_is_sent(authorizer, component, make_upload):
    upload = make_upload(authorizer)
    authorizer_revoke(authorizer=authorizer)  # its on-commit listeners do not run here: the task decides
    before = component.counters()

    outcome = upload_process(upload_id=upload.pk)

    upload.refresh_from_db()
    assert outcome.status == upload.status == Upload.Status.REJECTED
    assert "revoked" in upload.errmsg and "nothing was sent" in upload.errmsg
    assert upload.attempts == 0 and not attempts_of(upload)
    assert component.counters() == before


def test_failed_permission_set_check_is_rejected_recorded_and_nothing_is_sent(
    tenant, make_authorizer, component, make_upload
):
    user_management_only = make_authorizer(tenant, func_info=[2])
    upload = make_upload(user_management_only)

    outcome = upload_process(upload_id=upload.pk)

    upload.refresh_from_db()
    assert outcome.status == upload.status == Upload.Status.REJECTED
    assert upload.permission_check == {
        "required_any_of": list(UPLOADIMG_REQUIRED_ANY_OF), "granted": [2], "passed": False,
    }
    assert "11" in upload.errmsg  # tells the merchant which set to grant
    assert sim_count(component, UPLOADIMG) == 0
    assert sim_count(component, AUTHORIZER_TOKEN) == 0


def test_unauthorized_event_rejects_queued_uploads_and_leaves_finished_ones(
    authorizer, component, make_upload, django_capture_on_commit_callbacks
):
    done = make_upload(authorizer, image_bytes(color=(9, 9, 9)))
    assert upload_process(upload_id=done.pk).status == "succeeded"
    queued = [make_upload(authorizer, image_bytes(color=(i, 0, 0))) for i in range(3)]

    with django_capture_on_commit_callbacks(execute=True):
        authorizer_revoke(authorizer=authorizer)

    for upload in queued:
        upload.refresh_from_db()
        assert upload.status == Upload.Status.REJECTED
        assert upload.finished_at is not None and "revoked" in upload.errmsg
        assert upload_process(upload_id=upload.pk).status == "rejected"
    done.refresh_from_db()
    assert done.status == Upload.Status.SUCCEEDED
    assert sim_count(component, UPLOADIMG) == 1


@pytest.mark.django_db(transaction=True)
def test_authorizer_revoked_while_its_upload_is_in_flight_fails_it_clearly(authorizer, component, make_upload):
    upload = make_upload(authorizer)
    component.set_latency(UPLOADIMG, 1.0)
    results = {}

    def delivery():
        try:
            results["outcome"] = upload_process(upload_id=upload.pk)
        finally:
            connection.close()

    worker = threading.Thread(target=delivery)
    worker.start()
    wait_for(lambda: sim_count(component, UPLOADIMG) == 1)  # the request is at WeChat
    component.revoke(authorizer.appid)  # the merchant unauthorizes; WeChat drops the tokens...
    authorizer_revoke(authorizer=authorizer)  # ...and the `unauthorized` event reaches us
    worker.join(timeout=30)

    upload.refresh_from_db()
    assert results["outcome"].status == upload.status == Upload.Status.FAILED
    assert upload.errcode == 40001 and "revoked" in upload.errmsg
    assert sim_count(component, UPLOADIMG) == 1  # no second try with a dead authorization


# -- tokens ---------------------------------------------------------------------------------------------------


def test_token_invalidated_mid_run_is_refreshed_once_and_the_upload_succeeds(authorizer, component, make_upload):
    upload = make_upload(authorizer)
    first_generation = authorizer.token_generation
    component.invalidate_tokens(authorizer.appid)  # WeChat now answers 40001 to the stored token

    outcome = upload_process(upload_id=upload.pk)

    upload.refresh_from_db()
    assert outcome.status == "succeeded"
    assert sim_count(component, AUTHORIZER_TOKEN) == 1
    refused, sent = attempts_of(upload)
    assert (refused.number, refused.outcome, refused.errcode) == (1, "token_invalid", 40001)
    assert refused.token_generation == first_generation
    assert (sent.number, sent.outcome, sent.token_generation) == (2, "succeeded", first_generation + 1)
    assert upload.attempts == 2
    tokens = [u["access_token"] for u in component.uploads()]
    assert len(tokens) == 2 and tokens[0] != tokens[1]


def test_token_refused_again_after_the_refresh_fails_without_a_loop(authorizer, component, make_upload):
    upload = make_upload(authorizer)
    component.inject_fault(UPLOADIMG, "errcode", count=5, errcode=40001)

    outcome = upload_process(upload_id=upload.pk)

    upload.refresh_from_db()
    assert outcome.status == upload.status == Upload.Status.FAILED
    assert upload.errcode == 40001 and "refreshed token" in upload.errmsg
    assert sim_count(component, UPLOADIMG) == 2
    assert sim_count(component, AUTHORIZER_TOKEN) == 1


def test_expired_stored_token_is_refreshed_before_sending(authorizer, component, make_upload):
    upload = make_upload(authorizer)
    expire_access_token(authorizer)

    assert upload_process(upload_id=upload.pk).status == "succeeded"

    assert sim_count(component, AUTHORIZER_TOKEN) == 1
    assert [a.outcome for a in attempts_of(upload)] == ["succeeded"]


def test_token_endpoint_down_counts_as_attempts_so_the_upload_still_ends(
    authorizer, component, make_upload, settings
):
    settings.UPLOAD_MAX_ATTEMPTS = 3
    upload = make_upload(authorizer)
    expire_access_token(authorizer)
    component.inject_fault(AUTHORIZER_TOKEN, "errcode", count=50, errcode=-1)

    outcomes = [upload_process(upload_id=upload.pk)] + [run_again(upload) for _ in range(2)]

    upload.refresh_from_db()
    assert [o.status for o in outcomes] == ["queued", "queued", "failed"]
    assert upload.status == Upload.Status.FAILED and "gave up after 3 attempts" in upload.errmsg
    assert [a.outcome for a in attempts_of(upload)] == ["transient"] * 3
    assert sim_count(component, UPLOADIMG) == 0


def test_missing_ticket_requeues_the_upload_until_a_ticket_arrives(authorizer, component, make_upload):
    """61005/61006 or no ticket at all heal with the next push (every 10 minutes): retry, don't fail."""
    from django.conf import settings as dj_settings

    from openplatform.component.models import ComponentAccessToken, ComponentVerifyTicket
    from openplatform.component.tickets import component_ticket_store

    upload = make_upload(authorizer)
    expire_access_token(authorizer)
    ComponentVerifyTicket.objects.all().delete()
    ComponentAccessToken.objects.all().delete()

    first = upload_process(upload_id=upload.pk)

    upload.refresh_from_db()
    assert first.status == "queued" and first.retry_in is not None
    assert "component_verify_ticket" in upload.errmsg
    assert [a.outcome for a in attempts_of(upload)] == ["transient"]
    assert sim_count(component, UPLOADIMG) == 0

    ticket = component.issue_ticket(dj_settings.WECHAT_COMPONENT_APPID)
    component_ticket_store(component_appid=dj_settings.WECHAT_COMPONENT_APPID, ticket=ticket,
                           pushed_at=timezone.now())
    assert run_again(upload).status == "succeeded"
    assert [a.outcome for a in attempts_of(upload)] == ["transient", "succeeded"]


# -- transient errors -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "params", "errcode"), [
    ("errcode", {"errcode": -1}, -1),
    ("errcode", {"errcode": 45011}, 45011),
    ("http_status", {"status": 500}, None),
    ("http_status", {"status": 502}, None),
    ("not_json", {}, None),
    ("delay", {"seconds": 1.5}, None),  # beyond the client's timeout (0.5 s here)
])
def test_transient_error_requeues_with_backoff_then_succeeds(
    authorizer, component, make_upload, settings, kind, params, errcode
):
    settings.WECHAT_HTTP_TIMEOUT = 0.5
    upload = make_upload(authorizer)
    component.inject_fault(UPLOADIMG, kind, count=1, **params)

    first = upload_process(upload_id=upload.pk)

    upload.refresh_from_db()
    assert first.status == "queued" and first.retry_in > 0
    assert upload.status == Upload.Status.QUEUED and upload.lease_until is None
    assert upload.next_attempt_at > timezone.now()
    assert upload.errcode == errcode and upload.errmsg
    if errcode == 45011:  # the minute quota: wait at least a minute
        assert first.retry_in >= 60
    # Not due yet: a delivery now is told to come back, and WeChat is not called.
    calls = sim_count(component, UPLOADIMG)
    early = upload_process(upload_id=upload.pk)
    assert early.status == "queued" and early.retry_in >= 1
    assert sim_count(component, UPLOADIMG) == calls

    second = run_again(upload)

    upload.refresh_from_db()
    assert second.status == upload.status == Upload.Status.SUCCEEDED
    assert [a.outcome for a in attempts_of(upload)] == ["transient", "succeeded"]
    assert upload.attempts == 2
    if kind == "delay":  # the call we gave up on ends (and is recorded) later: not in the next test's records
        wait_for(lambda: len(component.uploads()) == 2)


def test_a_retry_resends_identical_bytes(authorizer, component, make_upload):
    upload = make_upload(authorizer, image_bytes("JPEG", size=(300, 200)))
    component.inject_fault(UPLOADIMG, "http_status", count=1, status=503)

    upload_process(upload_id=upload.pk)
    run_again(upload)

    first, second = component.uploads()
    assert first["http_status"] == 503 and second["url"]
    assert first["sha256"] == second["sha256"] == upload.sha256
    assert first["size"] == second["size"] == upload.size


def test_transient_errors_up_to_max_attempts_fail_the_upload(authorizer, component, make_upload, settings):
    settings.UPLOAD_MAX_ATTEMPTS = 3
    upload = make_upload(authorizer)
    component.inject_fault(UPLOADIMG, "errcode", count=10, errcode=-1)

    outcomes = [upload_process(upload_id=upload.pk), run_again(upload), run_again(upload)]

    upload.refresh_from_db()
    assert [o.status for o in outcomes] == ["queued", "queued", "failed"]
    assert upload.status == Upload.Status.FAILED and upload.errcode == -1
    assert "gave up after 3 attempts" in upload.errmsg
    assert upload.finished_at is not None and upload.next_attempt_at is None
    assert sim_count(component, UPLOADIMG) == 3
    assert run_again(upload).status == "failed"
    assert sim_count(component, UPLOADIMG) == 3


# -- permanent errors -----------------------------------------------------------------------------------------


def test_daily_quota_fails_with_a_clear_message(authorizer, component, make_upload):
    component.configure(daily_limit=1)
    first, second = make_upload(authorizer), make_upload(authorizer, image_bytes("JPEG"))
    assert upload_process(upload_id=first.pk).status == "succeeded"

    outcome = upload_process(upload_id=second.pk)

    second.refresh_from_db()
    assert outcome.status == second.status == Upload.Status.FAILED
    assert second.errcode == 45009
    assert "quota" in second.errmsg and "Beijing" in second.errmsg
    assert [a.outcome for a in attempts_of(second)] == ["failed"]


@pytest.mark.parametrize(("errcode", "meaning"), [
    (40005, "invalid file type"),
    (40009, "invalid image size"),
    (41005, "media data missing"),
    (44001, "empty media data"),
    (45001, "media size out of limit"),
])
def test_payload_errors_from_wechat_fail_with_errcode_and_errmsg(
    authorizer, component, make_upload, errcode, meaning
):
    upload = make_upload(authorizer)
    component.inject_fault(UPLOADIMG, "errcode", count=1, errcode=errcode)

    outcome = upload_process(upload_id=upload.pk)

    upload.refresh_from_db()
    assert outcome.status == upload.status == Upload.Status.FAILED
    assert upload.errcode == errcode
    assert str(errcode) in upload.errmsg and meaning in upload.errmsg
    assert sim_count(component, UPLOADIMG) == 1  # never retried


def test_wechat_refusing_the_permission_fails_with_a_hint(authorizer, component, make_upload):
    # Our record still says [1, 11]; WeChat has since been told otherwise (no updateauthorized yet).
    component.reauthorize(authorizer.appid, func_info=[2])
    upload = make_upload(authorizer)

    outcome = upload_process(upload_id=upload.pk)

    upload.refresh_from_db()
    assert outcome.status == upload.status == Upload.Status.FAILED
    # 61007: the account no longer grants the set to the platform (48001 is the account lacking the API)
    assert upload.errcode == 61007
    assert upload.permission_check["passed"] is True  # our check passed; WeChat disagreed
    assert "11" in upload.errmsg and "re-authorize" in upload.errmsg


def test_an_account_that_lacks_the_api_itself_fails_saying_reauthorizing_does_not_help(
    authorizer, component, make_upload
):
    component.set_account_lacks_api(authorizer.appid)
    upload = make_upload(authorizer)

    outcome = upload_process(upload_id=upload.pk)

    upload.refresh_from_db()
    assert outcome.status == upload.status == Upload.Status.FAILED
    assert upload.errcode == 48001
    assert upload.permission_check["passed"] is True
    assert "lacks this API" in upload.errmsg and "re-authorizing does not help" in upload.errmsg


def test_purged_bytes_fail_the_upload_clearly(authorizer, component, make_upload):
    upload = make_upload(authorizer)
    UploadBlob.objects.filter(upload=upload).delete()

    outcome = upload_process(upload_id=upload.pk)

    upload.refresh_from_db()
    assert outcome.status == "failed" and "no longer stored" in upload.errmsg
    assert sim_count(component, UPLOADIMG) == 0


# -- claims and leases ----------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_second_delivery_during_a_live_lease_waits_and_does_not_call_wechat(authorizer, component, make_upload):
    upload = make_upload(authorizer)
    component.set_latency(UPLOADIMG, 1.5)
    results = {}

    def first_delivery():
        try:
            results["first"] = upload_process(upload_id=upload.pk)
        finally:
            connection.close()

    worker = threading.Thread(target=first_delivery)
    worker.start()
    deadline = time.monotonic() + 10
    while Upload.objects.get(pk=upload.pk).status != Upload.Status.UPLOADING:
        assert time.monotonic() < deadline, "the first delivery never claimed the upload"
        time.sleep(0.02)

    second = upload_process(upload_id=upload.pk)
    worker.join(timeout=30)

    assert second.status == "uploading" and second.retry_in >= 1
    assert results["first"].status == "succeeded"
    assert sim_count(component, UPLOADIMG) == 1
    assert len(attempts_of(upload)) == 1


def test_an_expired_lease_is_taken_over_and_the_lost_run_is_recorded(authorizer, component, make_upload):
    upload = make_upload(authorizer)
    # A worker claimed it and died: the row says "uploading" and the lease has run out.
    Upload.objects.filter(pk=upload.pk).update(
        status=Upload.Status.UPLOADING, lease_until=timezone.now() - timedelta(seconds=1)
    )

    outcome = upload_process(upload_id=upload.pk)

    upload.refresh_from_db()
    assert outcome.status == upload.status == Upload.Status.SUCCEEDED
    assert [(a.number, a.outcome) for a in attempts_of(upload)] == [(1, "lost"), (2, "succeeded")]
    assert upload.attempts == 2


def test_a_run_that_keeps_killing_its_worker_ends_failed(authorizer, component, make_upload, settings):
    settings.UPLOAD_MAX_ATTEMPTS = 2
    upload = make_upload(authorizer)
    Upload.objects.filter(pk=upload.pk).update(
        status=Upload.Status.UPLOADING, attempts=1, lease_until=timezone.now() - timedelta(seconds=1)
    )
    UploadAttempt.objects.create(upload=upload, number=1, started_at=timezone.now(), duration_ms=0,
                                 outcome=UploadAttempt.Outcome.LOST)

    outcome = upload_process(upload_id=upload.pk)

    upload.refresh_from_db()
    assert outcome.status == upload.status == Upload.Status.FAILED
    assert "lost" in upload.errmsg
    assert sim_count(component, UPLOADIMG) == 0


@pytest.mark.django_db(transaction=True)
def test_a_run_that_outlived_its_lease_does_not_overwrite_the_new_owner(authorizer, component, make_upload):
    upload = make_upload(authorizer)
    component.inject_fault(UPLOADIMG, "delay", count=1, seconds=1.5)  # only the first call hangs
    results = {}

    def hung_delivery():
        try:
            results["hung"] = upload_process(upload_id=upload.pk)
        finally:
            connection.close()

    worker = threading.Thread(target=hung_delivery)
    worker.start()
    deadline = time.monotonic() + 10
    while Upload.objects.get(pk=upload.pk).status != Upload.Status.UPLOADING:
        assert time.monotonic() < deadline, "the first delivery never claimed the upload"
        time.sleep(0.02)
    # Its lease runs out while it waits for WeChat (as if the worker had stalled); another delivery takes over.
    Upload.objects.filter(pk=upload.pk).update(lease_until=timezone.now() - timedelta(seconds=1))

    takeover = upload_process(upload_id=upload.pk)
    worker.join(timeout=30)

    upload.refresh_from_db()
    assert takeover.status == upload.status == Upload.Status.SUCCEEDED
    assert results["hung"].status == "succeeded"  # it reports the owner's result instead of writing its own
    assert [(a.number, a.outcome) for a in attempts_of(upload)] == [(1, "lost"), (2, "succeeded")]
    assert sim_count(component, UPLOADIMG) == 2
    assert upload.url == component.uploads()[0]["url"]  # the takeover's call was answered first


def test_no_upload_call_is_started_that_could_outlast_the_lease(authorizer, component, make_upload, settings):
    """No time limit stops a run on the threads pool: a call that could still be in flight when the lease
    ends (and another run takes over and sends again) is not started; the upload goes back to the queue."""
    settings.UPLOAD_LEASE_SECONDS = 6
    settings.WECHAT_HTTP_TIMEOUT = 2  # a call needs 2 x 2 + 1 = 5 s of the lease
    upload = make_upload(authorizer)
    expire_access_token(authorizer)
    component.set_latency(AUTHORIZER_TOKEN, 1.5)  # the refresh leaves 4.5 s of the lease

    first = upload_process(upload_id=upload.pk)

    upload.refresh_from_db()
    assert first.status == "queued" and first.retry_in > 0
    assert upload.status == Upload.Status.QUEUED and upload.lease_until is None
    assert "lease" in upload.errmsg and upload.attempts == 0
    assert sim_count(component, UPLOADIMG) == 0 and attempts_of(upload) == []
    assert sim_count(component, AUTHORIZER_TOKEN) == 1

    # The next run has the token at hand and its whole lease: it sends.
    assert run_again(upload).status == "succeeded"
    assert [a.outcome for a in attempts_of(upload)] == ["succeeded"]
    assert sim_count(component, UPLOADIMG) == 1 and sim_count(component, AUTHORIZER_TOKEN) == 1


# -- scheduled jobs -------------------------------------------------------------------------------------------


def test_sweeper_reenqueues_stuck_queued_and_uploading_uploads_only(authorizer, bulk_uploads, published_tasks):
    now = timezone.now()
    (lost_message,) = bulk_uploads(authorizer, 1, status="queued", next_attempt_at=now - timedelta(minutes=10))
    (never_sent,) = bulk_uploads(authorizer, 1, status="queued", next_attempt_at=None,
                                 created_at=now - timedelta(minutes=10))
    (dead_worker,) = bulk_uploads(authorizer, 1, status="uploading", lease_until=now - timedelta(seconds=5))
    bulk_uploads(authorizer, 1, status="queued", next_attempt_at=now + timedelta(seconds=30))  # backing off
    bulk_uploads(authorizer, 1, status="queued", next_attempt_at=now)  # its message is on its way
    bulk_uploads(authorizer, 1, status="uploading", lease_until=now + timedelta(seconds=60))  # running
    bulk_uploads(authorizer, 3, status="succeeded", next_attempt_at=now - timedelta(hours=1))

    count = sweep_stuck_uploads()

    assert count == 3
    assert sorted(published_tasks) == sorted(
        ("uploads.upload_image", [str(u.pk)]) for u in (lost_message, never_sent, dead_worker)
    )


def test_retention_purges_bytes_of_old_final_uploads_and_keeps_the_records(
    authorizer, bulk_uploads, settings, api_client
):
    settings.UPLOAD_BYTES_RETENTION_DAYS = 7
    now = timezone.now()
    old = bulk_uploads(authorizer, 3, status="succeeded", finished_at=now - timedelta(days=8))
    old += bulk_uploads(authorizer, 1, status="rejected", finished_at=now - timedelta(days=30))
    recent = bulk_uploads(authorizer, 2, status="failed", finished_at=now - timedelta(days=2))
    pending = bulk_uploads(authorizer, 1, status="queued", created_at=now - timedelta(days=30))

    assert purge_image_bytes() == 4
    assert purge_image_bytes() == 0  # idempotent

    assert not UploadBlob.objects.filter(upload__in=old).exists()
    assert UploadBlob.objects.filter(upload__in=recent + pending).count() == 3
    for upload in old:
        upload.refresh_from_db()
        assert upload.bytes_purged_at is not None and upload.sha256 and upload.status in {"succeeded", "rejected"}
        assert api_client.get(f"/api/v1/uploads/{upload.pk}/").status_code == 200


# -- queries --------------------------------------------------------------------------------------------------


def _count_queries(action) -> int:
    with CaptureQueriesContext(connection) as ctx:
        action()
    return len(ctx.captured_queries)


def test_accept_path_runs_a_fixed_number_of_queries(
    api_client, tenant, make_tenant, make_authorizer, authorizer, bulk_uploads, django_assert_max_num_queries,
    record_property,
):
    def accept(key: str = ""):
        headers = {"Idempotency-Key": key} if key else {}
        response = api_client.post("/api/v1/uploads/", {
            "media": media_file(image_bytes(color=(len(key), 1, 2))), "authorizer_appid": authorizer.appid,
        }, format="multipart", headers=headers)
        assert response.status_code == 202, response.content

    bulk_uploads(authorizer, 10)
    small = _count_queries(accept)
    small_keyed = _count_queries(lambda: accept("k1"))
    other = make_tenant("globex")
    for _ in range(3):
        make_authorizer(other)
        make_authorizer(tenant)
    bulk_uploads(authorizer, 200)
    bulk_uploads(make_authorizer(other), 200)
    # The API key; then one statement finds the authorizer (and a reusable earlier upload) and INSERTs the
    # upload and its bytes (in this test's transaction inside a savepoint: SAVEPOINT and RELEASE are the
    # other two).
    with django_assert_max_num_queries(4):
        large = _count_queries(accept)
    large_keyed = _count_queries(lambda: accept("k2"))

    record_property("accept_queries", large)
    record_property("accept_queries_with_idempotency_key", large_keyed)
    assert small == large
    assert small_keyed == large_keyed == large + 1


def test_task_runs_a_fixed_number_of_queries(
    authorizer, component, make_upload, bulk_uploads, django_assert_max_num_queries, record_property
):
    bulk_uploads(authorizer, 10, status="queued")
    small = make_upload(authorizer)
    small_count = _count_queries(lambda: upload_process(upload_id=small.pk))

    bulk_uploads(authorizer, 200, status="queued")
    large = make_upload(authorizer, image_bytes("JPEG"))
    # On PostgreSQL: the claim that reads everything, and the result's one statement (in this test's
    # transaction, inside a savepoint: SAVEPOINT and RELEASE are the other two).
    with django_assert_max_num_queries(4):
        large_count = _count_queries(lambda: upload_process(upload_id=large.pk))

    record_property("task_queries", large_count)
    assert small_count == large_count
    assert Upload.objects.get(pk=large.pk).status == "succeeded"


def test_task_with_a_token_refresh_still_runs_a_bounded_number_of_queries(
    authorizer, component, make_upload, django_assert_max_num_queries, record_property
):
    upload = make_upload(authorizer)
    component.invalidate_tokens(authorizer.appid)

    # the refresh takes a lease, calls WeChat with no transaction open, and stores under a compare
    with django_assert_max_num_queries(24):
        count = _count_queries(lambda: upload_process(upload_id=upload.pk))

    record_property("task_queries_with_token_refresh", count)
    assert Authorizer.objects.get(pk=authorizer.pk).token_generation == authorizer.token_generation + 1


@pytest.mark.django_db(transaction=True)  # the run's own transactions, as in a worker
def test_a_result_lost_to_several_dropped_connections_in_a_row_is_still_saved_and_the_image_sent_once(
    authorizer, component, make_upload
):
    """The connection drops while the run saves WeChat's answer, and again on the first fresh connection
    (a failover that takes a moment): the result is written on a later one, within the run, so the
    lease never runs out on an image WeChat already has."""
    from django.db import OperationalError

    upload = make_upload(authorizer)
    drops = []

    def drop_the_result_write_twice(execute, sql, params, many, context):
        # the statement that writes the result (SET "url" = ...): one statement on PostgreSQL, the UPDATE elsewhere
        if 'UPDATE "UPLOADS_UPLOAD"' in sql.upper() and '"URL" =' in sql.upper() and len(drops) < 2:
            drops.append(sql)
            raise OperationalError("server closed the connection unexpectedly")
        return execute(sql, params, many, context)

    with connection.execute_wrapper(drop_the_result_write_twice):
        outcome = upload_process(upload_id=upload.pk)

    assert len(drops) == 2
    upload.refresh_from_db()
    assert outcome.status == upload.status == Upload.Status.SUCCEEDED and upload.url
    assert list(UploadAttempt.objects.filter(upload=upload).values_list("outcome", flat=True)) == ["succeeded"]
    assert sim_count(component, "/cgi-bin/media/uploadimg") == 1
