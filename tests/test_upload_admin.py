"""The operator's upload console: filters, read-only records, attempts inline, preview, retry."""

from __future__ import annotations

import pytest
from django.utils import timezone

from tests.fixtures import image_bytes, sim_count
from uploads.models import Upload, UploadAttempt, UploadBlob
from uploads.services.process import upload_process

UPLOADIMG = "/cgi-bin/media/uploadimg"
CHANGELIST = "/admin/uploads/upload/"


def _run_again(upload):
    Upload.objects.filter(pk=upload.pk).update(next_attempt_at=timezone.now())
    return upload_process(upload_id=upload.pk)


@pytest.fixture
def failed_upload(authorizer, component, make_upload, settings):
    settings.UPLOAD_MAX_ATTEMPTS = 2
    upload = make_upload(authorizer, image_bytes("PNG", size=(40, 30)))
    component.inject_fault(UPLOADIMG, "errcode", count=2, errcode=-1)
    upload_process(upload_id=upload.pk)
    _run_again(upload)
    upload.refresh_from_db()
    assert upload.status == Upload.Status.FAILED
    return upload


def test_changelist_filters_by_status_errcode_and_tenant(admin_client, failed_upload, make_upload, authorizer):
    ok = make_upload(authorizer, image_bytes("JPEG"))
    upload_process(upload_id=ok.pk)

    everything = admin_client.get(CHANGELIST)
    failed = admin_client.get(CHANGELIST, {"status__exact": "failed"})
    by_errcode = admin_client.get(CHANGELIST, {"errcode": "-1"})
    by_tenant = admin_client.get(CHANGELIST, {"tenant__id__exact": authorizer.tenant_id})

    assert everything.status_code == failed.status_code == by_errcode.status_code == by_tenant.status_code == 200
    assert str(failed_upload.pk) in failed.content.decode() and str(ok.pk) not in failed.content.decode()
    assert str(failed_upload.pk) in by_errcode.content.decode() and str(ok.pk) not in by_errcode.content.decode()
    assert str(ok.pk) in by_tenant.content.decode()


def test_change_page_shows_attempts_preview_and_no_token(admin_client, failed_upload, authorizer):
    page = admin_client.get(f"{CHANGELIST}{failed_upload.pk}/change/")

    html = page.content.decode()
    assert page.status_code == 200
    assert "data:image/png;base64," in html  # preview while the bytes are kept
    assert html.count("transient") >= 2  # both attempts inline
    authorizer.refresh_from_db()
    assert authorizer.get_access_token() not in html
    assert authorizer.get_refresh_token() not in html


def test_records_cannot_be_added_or_deleted_from_the_admin(admin_client, failed_upload):
    assert admin_client.get(f"{CHANGELIST}add/").status_code == 403
    assert admin_client.get(f"{CHANGELIST}{failed_upload.pk}/delete/").status_code == 403


def _take_queued_messages() -> list[tuple[str, list]]:
    """Take every message waiting in the Celery queue of the test broker (Redis, or in-memory without
    it; no worker consumes it here): (task name, args), in order."""
    from openplatform.celery import app

    # The queue the router gives the upload task (the I/O pool's, settings.CELERY_TASK_ROUTES).
    queue = app.amqp.router.route({}, "uploads.upload_image")["queue"].name
    taken = []
    with app.connection_for_read() as conn:
        while (message := conn.default_channel.basic_get(queue, no_ack=True)) is not None:
            taken.append((message.headers["task"], list(message.decode()[0])))
    return taken


def test_retry_action_sends_a_failed_upload_again_as_a_new_attempt_on_the_same_record(
    admin_client, failed_upload, component, django_capture_on_commit_callbacks, published_tasks
):
    """The retry gets a fresh attempt budget: the earlier failures do not count against it."""
    from openplatform.celery import app

    app.control.purge()  # messages earlier tests left on the test broker
    _take_queued_messages()
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = admin_client.post(
            CHANGELIST, {"action": "retry_failed", "_selected_action": [str(failed_upload.pk)]}, follow=True
        )
    assert response.status_code == 200
    failed_upload.refresh_from_db()
    assert failed_upload.status == Upload.Status.QUEUED and failed_upload.finished_at is None
    # the task is enqueued once, after the commit, and the message is on the broker
    assert len(callbacks) == 1
    assert published_tasks == [("uploads.upload_image", [str(failed_upload.pk)])]
    ((name, args),) = _take_queued_messages()
    assert (name, args) == ("uploads.upload_image", [str(failed_upload.pk)])

    # when a worker runs that message
    assert app.tasks[name].apply(args=args).get() == "succeeded"

    failed_upload.refresh_from_db()
    assert failed_upload.status == Upload.Status.SUCCEEDED and failed_upload.url
    outcomes = list(UploadAttempt.objects.filter(upload=failed_upload).order_by("number").values_list("outcome", flat=True))
    assert outcomes == ["transient", "transient", "succeeded"]
    assert sim_count(component, UPLOADIMG) == 3


def test_retry_is_refused_for_uploads_that_did_not_fail_or_lost_their_bytes(
    admin_client, failed_upload, make_upload, authorizer
):
    ok = make_upload(authorizer, image_bytes("JPEG"))
    upload_process(upload_id=ok.pk)
    UploadBlob.objects.filter(upload=failed_upload).delete()

    response = admin_client.post(
        CHANGELIST, {"action": "retry_failed", "_selected_action": [str(failed_upload.pk), str(ok.pk)]}, follow=True
    )

    assert response.status_code == 200
    failed_upload.refresh_from_db()
    ok.refresh_from_db()
    assert failed_upload.status == Upload.Status.FAILED
    assert ok.status == Upload.Status.SUCCEEDED
    messages = [str(m) for m in response.context["messages"]]
    assert any("no longer stored" in m for m in messages)
    assert any("only failed uploads" in m for m in messages)
