"""End to end: the REST API in this process, a real Celery worker process on Redis, the simulator.

Every test polls the database for final states against a deadline; what the simulator saw is the
ground truth for what reached "WeChat".
"""

from __future__ import annotations

import signal
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from tests.fixtures import image_bytes, media_file, sim_count
from tests.worker import WORKER_DB_APPLICATION_NAME, wait_until
from uploads.models import Upload, UploadAttempt
from uploads.tasks import sweep_stuck_uploads

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

UPLOADIMG = "/cgi-bin/media/uploadimg"
AUTHORIZER_TOKEN = "/cgi-bin/component/api_authorizer_token"
FINAL = set(Upload.FINAL_STATUSES)


def submit(client, authorizer, data: bytes, name: str = "image.png") -> str:
    response = client.post(
        "/api/v1/uploads/", {"media": media_file(data, name), "authorizer_appid": authorizer.appid},
        format="multipart",
    )
    assert response.status_code == 202, response.content
    return response.json()["id"]


def wait_final(ids: list[str], worker, timeout: float = 60) -> dict[str, Upload]:
    def all_final() -> bool:
        worker.ensure_running()  # the supervisor: a worker that died on a broker reconnect is restarted
        return Upload.objects.filter(pk__in=ids, status__in=FINAL).count() == len(ids)

    try:
        wait_until(all_final, timeout=timeout, interval=0.1, message=f"{len(ids)} uploads to finish")
    except AssertionError:
        states = list(Upload.objects.filter(pk__in=ids).values_list("status", "attempts", "errmsg"))
        raise AssertionError(f"not final: {states}\n--- worker log ---\n{worker.log()[-6000:]}") from None
    return {str(u.pk): u for u in Upload.objects.filter(pk__in=ids)}


def distinct_png(i: int) -> bytes:
    return image_bytes("PNG", size=(40 + i, 30), color=(i * 7 % 256, 80, 160))


def test_png_and_jpeg_reach_wechat_with_the_current_token(celery_worker, api_client, authorizer, component):
    ids = [submit(api_client, authorizer, image_bytes("PNG")),
           submit(api_client, authorizer, image_bytes("JPEG"), name="photo.jpg")]

    uploads = wait_final(ids, celery_worker)

    authorizer.refresh_from_db()
    seen = {u["sha256"]: u for u in component.uploads()}
    for upload in uploads.values():
        assert upload.status == "succeeded", upload.errmsg
        sent = seen[upload.sha256]
        assert sent["url"] == upload.url
        assert sent["part_name"] == "media"
        assert sent["access_token"] == authorizer.get_access_token()
        assert sent["authorizer_appid"] == authorizer.appid
    assert {s["content_type"] for s in seen.values()} == {"image/png", "image/jpeg"}
    assert api_client.get(f"/api/v1/uploads/{ids[0]}/").json()["url"] == uploads[ids[0]].url


def test_busy_500_and_timeout_are_retried_until_success(celery_worker, api_client, authorizer, component):
    # The next three calls fail in turn: -1 (system busy), HTTP 500, then no answer within the timeout.
    component.inject_fault(UPLOADIMG, "errcode", count=1, errcode=-1)
    component.inject_fault(UPLOADIMG, "http_status", count=1, status=500)
    component.inject_fault(UPLOADIMG, "delay", count=1, seconds=5)  # the worker's timeout is 4 s

    (upload,) = wait_final([submit(api_client, authorizer, image_bytes())], celery_worker).values()

    assert upload.status == "succeeded", upload.errmsg
    outcomes = list(UploadAttempt.objects.filter(upload=upload).order_by("number")
                    .values_list("outcome", "errcode", "http_status"))
    assert outcomes == [("transient", -1, 200), ("transient", None, 500), ("transient", None, None),
                        ("succeeded", 0, 200)]
    # The call we gave up on is still answered (and recorded) by the simulator 5 s after it began: wait
    # for it, so that it lands in this test's records and not in the next test's.
    wait_until(lambda: len(component.uploads()) == 4, timeout=10, message="the timed-out call to end")


def test_one_in_five_calls_failing_still_finishes_everything_and_records_match(
    celery_worker, api_client, authorizer, component
):
    component.set_failure_rate(UPLOADIMG, 0.2, ["errcode", {"kind": "http_status", "status": 502}], seed=7)
    ids = [submit(api_client, authorizer, distinct_png(i)) for i in range(20)]

    uploads = wait_final(ids, celery_worker, timeout=90)

    assert {u.status for u in uploads.values()} == {"succeeded"}
    shas = {u.sha256 for u in uploads.values()}
    seen = [s for s in component.uploads() if s["sha256"] in shas]
    answered = {(s["sha256"], s["url"]) for s in seen if s["url"]}
    assert {(u.sha256, u.url) for u in uploads.values()} <= answered
    # Every call WeChat saw is an attempt on our records, and the other way round.
    assert UploadAttempt.objects.filter(upload__in=ids).count() == len(seen)


def test_tokens_invalidated_mid_run_cost_one_refresh(celery_worker, api_client, authorizer, component):
    wait_final([submit(api_client, authorizer, distinct_png(0))], celery_worker)
    component.invalidate_tokens(authorizer.appid)
    before = sim_count(component, AUTHORIZER_TOKEN)

    uploads = wait_final([submit(api_client, authorizer, distinct_png(i)) for i in range(1, 6)], celery_worker)

    assert {u.status for u in uploads.values()} == {"succeeded"}
    assert sim_count(component, AUTHORIZER_TOKEN) - before == 1
    authorizer.refresh_from_db()
    shas = {u.sha256 for u in uploads.values()}
    answered = [s for s in component.uploads() if s["sha256"] in shas and s["url"]]
    assert len(answered) == 5
    assert {s["access_token"] for s in answered} == {authorizer.get_access_token()}


def test_the_worker_holds_one_database_connection_per_thread_kept_across_tasks(
    celery_worker, worker_concurrency, api_client, authorizer, component
):
    """deploy/OPERATIONS.md, "PostgreSQL connections": a worker holds one connection per thread, at most
    --concurrency, and keeps it across tasks (not one per task)."""
    from django.db import connection

    def worker_backends() -> set[int]:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                           "AND application_name = %s", [WORKER_DB_APPLICATION_NAME])
            return {pid for (pid,) in cursor.fetchall()}

    component.set_latency(UPLOADIMG, 0.2)  # every thread busy at once
    ids = [submit(api_client, authorizer, distinct_png(i)) for i in range(12)]
    seen: set[int] = set()
    most = 0

    def sample_until_final() -> bool:
        nonlocal most
        backends = worker_backends()
        seen.update(backends)
        most = max(most, len(backends))
        return Upload.objects.filter(pk__in=ids, status__in=FINAL).count() == len(ids)

    wait_until(sample_until_final, timeout=60, interval=0.05, message="12 uploads to finish")

    assert most == worker_concurrency
    # 12 tasks on at most 2 x the threads' connections: CONN_MAX_AGE may renew each one once meanwhile.
    assert len(seen) <= 2 * worker_concurrency < len(ids)


def test_a_worker_killed_mid_upload_does_not_lose_the_upload(celery_worker, api_client, authorizer, component):
    component.set_latency(UPLOADIMG, 3)
    upload_id = submit(api_client, authorizer, image_bytes())
    # The request has reached the simulator, which answers only after 3 s.
    wait_until(lambda: sim_count(component, UPLOADIMG) == 1, timeout=20, message="the upload to reach WeChat")

    # SIGKILL: no cleanup, no result, no ack. The threads pool runs uploads inside the worker process,
    # so a crash or the OOM killer takes the whole worker; the supervisor (wait_final) starts a new one.
    assert celery_worker.kill() == -signal.SIGKILL
    restarts = celery_worker.restarts
    component.set_latency(UPLOADIMG, 0)

    (upload,) = wait_final([upload_id], celery_worker, timeout=60).values()

    assert upload.status == "succeeded", upload.errmsg
    attempts = list(UploadAttempt.objects.filter(upload=upload).order_by("number"))
    assert [a.outcome for a in attempts] == ["lost", "succeeded"]
    # The unacknowledged message came back to the restarted worker, which took the upload over.
    assert celery_worker.restarts == restarts + 1 and attempts[1].started_at >= celery_worker.started_at
    sent = [s for s in component.uploads() if s["sha256"] == upload.sha256]
    assert len(sent) == 2 and upload.url in {s["url"] for s in sent}


def test_uploads_submitted_while_the_broker_is_down_finish_once_it_is_back(
    celery_worker, worker_broker, api_client, authorizer, component
):
    if not worker_broker.can_restart:
        pytest.skip("needs the redis-server binary to stop and restart a private broker")
    worker_broker.stop()
    try:
        started = time.monotonic()
        ids = [submit(api_client, authorizer, distinct_png(i)) for i in range(3)]
        accept_seconds = time.monotonic() - started
        assert set(Upload.objects.filter(pk__in=ids).values_list("status", flat=True)) == {"queued"}
    finally:
        worker_broker.start()
    celery_worker.ensure_running()  # a supervisor restarts a worker that died on the reconnect
    # The sweeper's cutoff (queued and past due for minutes) is reached: as if its beat ran later.
    Upload.objects.filter(pk__in=ids).update(next_attempt_at=timezone.now() - timedelta(minutes=5))
    assert sweep_stuck_uploads() == 3

    uploads = wait_final(ids, celery_worker, timeout=90)

    assert {u.status for u in uploads.values()} == {"succeeded"}
    assert accept_seconds < 15, f"accepting 3 uploads with the broker down took {accept_seconds:.1f}s"
    assert sim_count(component, UPLOADIMG) == 3


def test_two_tenants_uploads_use_their_own_accounts_and_stay_apart(
    celery_worker, api_client, authorizer, make_tenant, make_api_client, make_authorizer, component
):
    globex = make_tenant("globex")
    globex_client, globex_account = make_api_client(globex), make_authorizer(globex)

    ours = submit(api_client, authorizer, distinct_png(1))
    theirs = submit(globex_client, globex_account, distinct_png(2))
    uploads = wait_final([ours, theirs], celery_worker)

    by_sha = {s["sha256"]: s for s in component.uploads()}
    assert by_sha[uploads[ours].sha256]["authorizer_appid"] == authorizer.appid
    assert by_sha[uploads[theirs].sha256]["authorizer_appid"] == globex_account.appid
    assert api_client.get(f"/api/v1/uploads/{theirs}/").status_code == 404
    assert globex_client.get(f"/api/v1/uploads/{ours}/").status_code == 404
    assert [r["id"] for r in api_client.get("/api/v1/uploads/").json()["results"]] == [ours]
    assert [r["id"] for r in globex_client.get("/api/v1/uploads/").json()["results"]] == [theirs]
