"""Task paths only a real worker reaches (issue 12, point 9), each run by a `celery -A openplatform worker`
process on a private Redis, against the simulator and the test database:

- `tenants.process_component_event` retrying itself (countdown 1, 2, 4 ... s) on a retryable WeChat
  error from api_query_auth, and recording the error once its retries are spent;
- `tenants.refresh_due_authorizer_tokens` splitting the due accounts into batch tasks;
- `uploads.upload_image` on the threads pool, where no time limit stops a run: a run left with too
  little of its lease for an upload call (a slow token refresh ate it) puts the upload back unsent, and
  the next run sends it once (this replaced the `SoftTimeLimitExceeded` path when uploads moved to the
  I/O pool, issue 10);
- `tenants.sweep_component_events` re-enqueuing an authorization event stored while the broker was down.

Celery's own log lines ("Task <name>[<id>] retry: ...", "... succeeded in ...s: <result>") are the
record of which tasks ran and how often; the simulator's counters are the record of what reached WeChat.
"""

from __future__ import annotations

import re
import time
from datetime import timedelta

import pytest
from django.conf import settings as django_settings
from django.utils import timezone

from openplatform.component.models import ComponentEvent
from tenants.models import Authorizer
from tests.fixtures import image_bytes, sim_count
from tests.worker import wait_until
from uploads.models import Upload, UploadAttempt

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

APPID = django_settings.WECHAT_COMPONENT_APPID
QUERY_AUTH = "/cgi-bin/component/api_query_auth"
AUTHORIZER_TOKEN = "/cgi-bin/component/api_authorizer_token"
UPLOADIMG = "/cgi-bin/media/uploadimg"
LEASE_SECONDS = 8  # a run starts an upload call with at least 2 x 3 s + 1 s of it left (process.py)
BATCH_SIZE = 10


@pytest.fixture(scope="module")
def worker_env() -> dict[str, str]:
    return {
        "UPLOAD_LEASE_SECONDS": str(LEASE_SECONDS),
        "WECHAT_HTTP_TIMEOUT": "3",
        # No retry inside the HTTP client: every task run makes exactly one call, so runs can be counted.
        "WECHAT_HTTP_MAX_RETRIES": "0",
        "AUTHORIZER_REFRESH_BATCH_SIZE": str(BATCH_SIZE),
        "AUTHORIZER_REFRESH_SPREAD_SECONDS": "2",
    }


class WorkerLog:
    """The worker's log from the start of the test on (the module's worker is shared by its tests)."""

    def __init__(self, worker) -> None:
        self.worker = worker
        self.offset = len(worker.log())

    def text(self) -> str:
        return self.worker.log()[self.offset:]

    def lines(self, task: str, what: str) -> list[str]:
        return [line for line in self.text().splitlines() if f"Task {task}[" in line and what in line]

    def succeeded(self, task: str) -> list[str]:
        """The results of the runs of `task` that succeeded (the text after "succeeded in N s: ")."""
        return [re.sub(r"^.* succeeded in [0-9.]+s: ", "", line) for line in self.lines(task, " succeeded in ")]


@pytest.fixture
def log(jobs_worker) -> WorkerLog:
    return WorkerLog(jobs_worker)


@pytest.fixture
def upload_log(celery_worker) -> WorkerLog:
    return WorkerLog(celery_worker)


def push_authorization(component) -> dict:
    """The merchant authorizes: the simulator pushes the `authorized` event to our live events URL."""
    grant = component.authorize(APPID, push_event=True)
    assert grant["event"]["status_code"] == 200, grant["event"]
    return grant


def wait_exchanged(appid: str, worker, log: WorkerLog, timeout: float = 60) -> Authorizer:
    def exchanged() -> bool:
        worker.ensure_running()
        return ComponentEvent.objects.filter(authorizer_appid=appid, processed_at__isnull=False).exists()

    try:
        wait_until(exchanged, timeout=timeout, interval=0.1, message=f"the authorization of {appid} to be exchanged")
    except AssertionError:
        raise AssertionError(f"not exchanged\n--- worker log ---\n{log.text()[-6000:]}") from None
    return Authorizer.objects.get(appid=appid)


# -- tenants.process_component_event ----------------------------------------------------------------------


def test_the_event_task_retries_a_retryable_wechat_error_with_its_own_countdown(
    live_component, jobs_worker, log
):
    component = live_component
    component.inject_fault(QUERY_AUTH, "http_status", count=1, status=500)
    component.inject_fault(QUERY_AUTH, "errcode", count=1, errcode=-1)

    grant = push_authorization(component)
    authorizer = wait_exchanged(grant["authorizer_appid"], jobs_worker, log)

    # three runs: HTTP 500, then -1 (each retried by the task after 1 s, then 2 s), then the exchange
    assert sim_count(component, QUERY_AUTH) == 3
    retries = log.lines("tenants.process_component_event", " retry: Retry in ")
    assert [re.search(r"Retry in (\d+)s", line).group(1) for line in retries] == ["1", "2"]
    assert len(log.lines("tenants.process_component_event", " succeeded in ")) == 1
    event = ComponentEvent.objects.get(authorizer_appid=authorizer.appid)
    assert event.error == "" and event.get_auth_code() is None
    assert authorizer.status == Authorizer.Status.AUTHORIZED and authorizer.get_refresh_token() == grant["refresh_token"]


def test_the_event_task_records_the_error_once_its_retries_are_spent_and_leaves_the_code_to_the_sweeper(
    live_component, jobs_worker, log
):
    component = live_component
    component.inject_fault(QUERY_AUTH, "errcode", count=6, errcode=-1)  # the first run and its 5 retries

    grant = push_authorization(component)

    wait_until(lambda: len(log.lines("tenants.process_component_event", " succeeded in ")) == 1,
               timeout=60, interval=0.2, message="the event task's last run (after 1+2+4+8+16 s of retries)")
    assert sim_count(component, QUERY_AUTH) == 6
    retries = log.lines("tenants.process_component_event", " retry: Retry in ")
    assert [re.search(r"Retry in (\d+)s", line).group(1) for line in retries] == ["1", "2", "4", "8", "16"]
    event = ComponentEvent.objects.get(authorizer_appid=grant["authorizer_appid"])
    assert event.processed_at is None and event.get_auth_code() == grant["auth_code"]  # kept for the sweeper
    assert "errcode=-1" in event.error
    assert not Authorizer.objects.filter(appid=grant["authorizer_appid"]).exists()


# -- tenants.sweep_component_events -----------------------------------------------------------------------


def test_an_event_stored_while_the_broker_was_down_is_re_enqueued_by_the_sweeper_and_exchanged(
    live_component, jobs_worker, worker_broker, log
):
    from tenants.tasks import sweep_component_events

    if not worker_broker.can_restart:
        pytest.skip("needs the redis-server binary to stop and restart a private broker")
    component = live_component
    worker_broker.stop()
    try:
        grant = push_authorization(component)  # stored and acknowledged; its enqueue fails
    finally:
        worker_broker.start()
    jobs_worker.ensure_running()  # a supervisor restarts a worker that died on the reconnect
    event = ComponentEvent.objects.get(authorizer_appid=grant["authorizer_appid"])
    assert event.processed_at is None and event.get_auth_code() == grant["auth_code"]
    time.sleep(2)
    assert sim_count(component, QUERY_AUTH) == 0  # no message reached the worker
    # Past the sweeper's grace (the event may still be in the queue before that): as if its beat ran later.
    ComponentEvent.objects.filter(pk=event.pk).update(received_at=timezone.now() - timedelta(minutes=5))

    sweep_component_events.delay()  # the beat's message: the worker runs the sweep

    authorizer = wait_exchanged(grant["authorizer_appid"], jobs_worker, log)
    assert log.succeeded("tenants.sweep_component_events") == ["1"]
    assert len(log.lines("tenants.process_component_event", " succeeded in ")) == 1
    assert sim_count(component, QUERY_AUTH) == 1
    assert authorizer.get_refresh_token() == grant["refresh_token"]


# -- tenants.refresh_due_authorizer_tokens ----------------------------------------------------------------


def test_the_refresh_job_splits_due_authorizers_into_batches_that_refresh_each_once(
    component, ticket, jobs_worker, log
):
    from tenants.tasks import refresh_due_authorizer_tokens

    count = 3 * BATCH_SIZE + 5
    rows = []
    for _ in range(count):  # as if each merchant had authorized us, without a token yet (due at once)
        grant = component.authorize(APPID)
        row = Authorizer(component_appid=APPID, appid=grant["authorizer_appid"],
                         account_type=Authorizer.AccountType.OFFICIAL_ACCOUNT, func_info=[1, 11])
        row.set_refresh_token(grant["refresh_token"])
        rows.append(row)
    Authorizer.objects.bulk_create(rows)

    refresh_due_authorizer_tokens.delay()

    def all_refreshed() -> bool:
        jobs_worker.ensure_running()
        return Authorizer.objects.filter(token_generation__gte=1).count() == count

    wait_until(all_refreshed, timeout=60, interval=0.2, message=f"{count} tokens to be refreshed")
    wait_until(lambda: len(log.succeeded("tenants.refresh_authorizer_tokens_batch")) == 4, timeout=10,
               message="the batch tasks' log lines")
    assert log.succeeded("tenants.refresh_due_authorizer_tokens") == [str(count)]
    batches = log.succeeded("tenants.refresh_authorizer_tokens_batch")
    assert sorted(batches) == sorted(["{'refreshed': 10, 'skipped': 0, 'failed': 0}"] * 3
                                     + ["{'refreshed': 5, 'skipped': 0, 'failed': 0}"])
    assert sim_count(component, AUTHORIZER_TOKEN) == count  # each account refreshed once
    assert set(Authorizer.objects.values_list("token_generation", flat=True)) == {1}
    tokens = {a.appid: a.get_access_token() for a in Authorizer.objects.all()}
    for appid, token in tokens.items():
        assert token and component.authorizer(appid)["access_token"] == token


# -- uploads.upload_image on the threads pool: the lease, not a time limit, bounds a run ------------------------


def test_a_run_left_too_little_lease_for_its_call_puts_the_upload_back_unsent_and_the_next_sends_it(
    authorizer, component, make_upload, celery_worker, upload_log
):
    # The token has expired and WeChat's token endpoint answers after 2.5 s (inside its 3 s timeout): the
    # run that claimed the upload (8 s lease) is left with about 5.5 s, under the 7 s an upload call needs.
    Authorizer.objects.filter(pk=authorizer.pk).update(access_token_expires_at=timezone.now() - timedelta(seconds=1))
    component.inject_fault(AUTHORIZER_TOKEN, "delay", count=1, seconds=2.5)
    upload = make_upload(authorizer, image_bytes("PNG", size=(33, 21)))  # committed: its task is enqueued

    wait_until(lambda: Upload.objects.filter(pk=upload.pk, status__in=Upload.FINAL_STATUSES).exists(),
               timeout=60, interval=0.1, message="the upload to finish")

    upload.refresh_from_db()
    assert upload.status == Upload.Status.SUCCEEDED, upload.errmsg
    # The first run sent nothing and counted no attempt; the next one sent the image once.
    assert sim_count(component, UPLOADIMG) == 1
    attempts = list(UploadAttempt.objects.filter(upload=upload).order_by("number"))
    assert [(a.number, a.outcome) for a in attempts] == [(1, "succeeded")]
    assert sim_count(component, AUTHORIZER_TOKEN) == 1  # the refresh the first run paid for was kept
    retries = upload_log.lines("uploads.upload_image", " retry: Retry in ")
    assert len(retries) == 1, upload_log.text()
