"""The token service under failure (issue 12, points 7, 8 and 10): the refresh lease.

- 7: the token endpoint hangs (latency beyond the client's timeout), answers HTTP 500, answers -1, while
  32 callers (threads and processes) or 32 uploads wait: every caller ends with the new token, the old
  one while it is still good, or a retryable error that a retry resolves; one caller asks WeChat; no
  waiter waits longer than TOKEN_REFRESH_WAIT_SECONDS.
- 8: a worker SIGKILLed after WeChat issued the new token (and a new refresh token, with rotation on)
  but before it stored them: its lease runs out, the next run refreshes (61023 recovery once the old
  refresh token's grace is over), and no upload is lost.
- 10: 16 workers report the same stale generation at once: one refresh; older reports never expire a
  newer token.

Against the simulator over real HTTP (its call log is what WeChat saw) and, where processes race, real
PostgreSQL. docs/architecture.md §3.2 and §4 describe the design.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
import requests
from django.conf import settings as django_settings
from django.db import connection, transaction
from django.utils import timezone

from openplatform.component.models import ComponentAccessToken
from openplatform.core.tokens import TokenRefreshPending
from openplatform.wechat.errors import TransientError
from tenants.models import Authorizer
from tenants.services.tokens import (
    authorizer_access_token_get,
    authorizer_access_token_refresh_ahead,
)
from tests.fixtures import expire_access_token, image_bytes, sim_count
from tests.token_callers import call, sha
from uploads.models import Upload, UploadAttempt
from uploads.services.process import upload_process

APPID = django_settings.WECHAT_COMPONENT_APPID
ROOT = Path(__file__).resolve().parent.parent
AUTHORIZER_TOKEN = "/cgi-bin/component/api_authorizer_token"
COMPONENT_TOKEN = "/cgi-bin/component/api_component_token"
AUTHORIZER_INFO = "/cgi-bin/component/api_get_authorizer_info"
UPLOADIMG = "/cgi-bin/media/uploadimg"

# The bounds these tests run with (settings, and the same in every child process's environment).
WAIT = 2.0  # TOKEN_REFRESH_WAIT_SECONDS
TIMEOUT = 3.0  # WECHAT_HTTP_TIMEOUT
RETRIES = 1  # WECHAT_HTTP_MAX_RETRIES: the holder's one call is 1 + RETRIES requests
LEASE = 15.0  # TOKEN_REFRESH_LEASE_SECONDS: longer than the holder's calls
HANG = 4.0  # the token endpoint's latency when it "hangs": beyond the client's timeout
#: How long a WeChat call takes otherwise in the races: long enough that every caller (30 threads and
#: 2 processes starting on a loaded machine) meets the refresh in progress, well inside WAIT.
MOMENT = 1.0
#: Scheduling noise on a loaded 2-core machine (34 threads and processes starting at once).
SLACK = 1.5
#: The one caller that asks WeChat: every try times out, with the client's backoff between tries.
HOLDER_BOUND = (RETRIES + 1) * TIMEOUT + 0.5 + SLACK
BOUNDED_ENV = {
    "TOKEN_REFRESH_WAIT_SECONDS": str(WAIT),
    "TOKEN_REFRESH_LEASE_SECONDS": str(LEASE),
    "WECHAT_HTTP_TIMEOUT": str(TIMEOUT),
    "WECHAT_HTTP_MAX_RETRIES": str(RETRIES),
}

pytestmark = pytest.mark.django_db(transaction=True)


def wait_for(predicate, timeout: float = 15, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def drain(simulator, path: str = AUTHORIZER_TOKEN) -> None:
    """Wait until every request the simulator received on `path` has been answered (and logged).

    A request the client gave up on (timeout) still runs to its end in the simulator, issuing a token;
    waiting for it keeps the assertions (and the next test) clear of it.
    """
    wait_for(lambda: simulator.counters().get(path, 0) == len(simulator.calls(path)), what=f"{path} to drain")


def errcodes(simulator, path: str = AUTHORIZER_TOKEN) -> list:
    return [c["errcode"] if c["http_status"] == 200 else c["http_status"] for c in simulator.calls(path)]


def token_answers(simulator, token: str) -> int:
    """What WeChat says to a call made with `token` (openapi/quota/get takes any access token)."""
    response = requests.post(
        f"{simulator.url}/cgi-bin/openapi/quota/get", params={"access_token": token},
        json={"cgi_path": UPLOADIMG}, timeout=5,
    )
    return response.json().get("errcode", 0)


@pytest.fixture
def bounded(component, settings):
    """The component, with short bounds: waits, client timeout, retries, lease."""
    settings.TOKEN_REFRESH_WAIT_SECONDS = WAIT
    settings.TOKEN_REFRESH_LEASE_SECONDS = LEASE
    settings.WECHAT_HTTP_TIMEOUT = TIMEOUT
    settings.WECHAT_HTTP_MAX_RETRIES = RETRIES
    yield component
    component.set_latency(AUTHORIZER_TOKEN, 0)
    component.clear_faults()
    drain(component)


# -- racing callers: threads and processes released at one moment ----------------------------------------


def _child_env(simulator, extra: dict[str, str]) -> dict[str, str]:
    db = connection.settings_dict
    auth = db["USER"] + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="tests.settings",
        DATABASE_URL=f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}",
        WECHAT_API_BASE=simulator.url,
        WECHAT_MP_BASE=simulator.url,
        WECHAT_OPEN_BASE=simulator.url,
        PYTHONPATH=str(ROOT),
        **extra,
    )
    return env


def _start_children(simulator, calls: list[tuple[str, int, str]], env: dict[str, str]) -> list[subprocess.Popen]:
    """One process per call, each set up and waiting for "go" (started together, then awaited)."""
    children = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.token_callers", action, str(pk), arg],
            cwd=ROOT, env=_child_env(simulator, env),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for action, pk, arg in calls
    ]
    for child in children:
        line = child.stdout.readline()
        if line.strip() != "ready":
            for other in children:
                other.kill()
            raise AssertionError(f"child did not start: {line!r} {child.stderr.read()[-2000:]}")
    return children


def race(
    simulator, calls: list[tuple[str, int, str]], *, processes: int, env: dict[str, str], overlap: bool = True
) -> list[dict]:
    """Every call's result; the first `processes` calls run in OS processes of their own, the rest in threads.

    Fails unless every caller answered and, with `overlap`, all of them overlapped: each had started
    before the first one ended (what is tested is callers that meet a refresh in progress, not callers
    one by one).
    """
    children = _start_children(simulator, calls[:processes], env)
    in_threads = calls[processes:]
    barrier = threading.Barrier(len(in_threads) + 1)
    results: list[dict] = []
    errors: list[BaseException] = []

    def run(action: str, pk: int, arg: str) -> None:
        try:
            connection.ensure_connection()  # before the barrier: the callers start together
            barrier.wait(timeout=30)
            results.append(call(action, pk, arg))
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=c) for c in in_threads]
    for thread in threads:
        thread.start()
    barrier.wait(timeout=30)
    for child in children:
        child.stdin.write("go\n")
        child.stdin.flush()
    for thread in threads:
        thread.join(90)
    assert not [t for t in threads if t.is_alive()], "a caller thread did not finish"
    for child in children:
        out, err = child.communicate(timeout=90)
        assert child.returncode == 0, err[-3000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert not errors, errors[:3]
    assert len(results) == len(calls)
    if not overlap:
        return results
    first_end = min(r["ended"] for r in results)
    late = [r["started"] - first_end for r in results if r["started"] >= first_end]
    assert not late, f"{len(late)} caller(s) started only after the first had ended: no race"
    return results


def durations(results: list[dict]) -> list[float]:
    return sorted(r["ended"] - r["started"] for r in results)


def set_token_state(authorizer: Authorizer, state: str) -> None:
    """"still_good": inside the refresh margin but with 120 s left; "expired": past its expiry."""
    if state == "expired":
        expire_access_token(authorizer)
    else:
        Authorizer.objects.filter(pk=authorizer.pk).update(access_token_expires_at=timezone.now() + timedelta(seconds=120))
        authorizer.refresh_from_db()


def break_token_endpoint(simulator, fault: str) -> None:
    if fault == "hang":
        simulator.set_latency(AUTHORIZER_TOKEN, HANG)
        return
    # A failure that takes a moment, as a real one does, so every caller meets the refresh in progress.
    simulator.set_latency(AUTHORIZER_TOKEN, MOMENT)
    if fault == "http_500":
        simulator.inject_fault(AUTHORIZER_TOKEN, "http_status", count=100, status=500)
    else:
        simulator.inject_fault(AUTHORIZER_TOKEN, "errcode", count=100, errcode=-1)


def mend_token_endpoint(simulator) -> None:
    """WeChat answers again (taking a moment, so the retrying callers meet one refresh in progress)."""
    simulator.clear_faults()
    simulator.set_latency(AUTHORIZER_TOKEN, 0)
    drain(simulator)
    simulator.set_latency(AUTHORIZER_TOKEN, MOMENT)


HOLDER_ERRORS = {"hang": ("NetworkError", "ReadTimeout"), "http_500": ("TransientError", "http_status=500"),
                 "errcode_-1": ("TransientError", "errcode=-1")}


# -- 7: a failing token endpoint while 32 callers wait ---------------------------------------------------


@pytest.mark.postgres
@pytest.mark.parametrize("fault", ["hang", "http_500", "errcode_-1"])
@pytest.mark.parametrize("token", ["still_good", "expired"])
def test_failing_token_endpoint_while_32_callers_wait(bounded, authorizer, fault, token):
    component = bounded
    old, generation = authorizer.get_access_token(), authorizer.token_generation
    set_token_state(authorizer, token)
    break_token_endpoint(component, fault)

    # when 30 threads and 2 processes ask for the token at the same moment
    results = race(component, [("get", authorizer.pk, "")] * 32, processes=2, env=BOUNDED_ENV)

    # then one caller asked WeChat (its one call: 1 + RETRIES requests); nobody else did
    drain(component)
    assert sim_count(component, AUTHORIZER_TOKEN) == RETRIES + 1
    # and nobody waited past the bound but that caller, whose call its own timeout bounded
    waits = durations(results)
    assert waits[-2] <= WAIT + SLACK, waits
    assert waits[-1] <= HOLDER_BOUND, waits
    # the old token is left in place, the failure recorded, the lease released
    stored = Authorizer.objects.get(pk=authorizer.pk)
    assert (stored.get_access_token(), stored.token_generation) == (old, generation)
    assert stored.status == Authorizer.Status.AUTHORIZED and stored.refresh_token_ciphertext
    holder_error, recorded = HOLDER_ERRORS[fault]
    assert recorded in stored.last_error
    assert (stored.refresh_lease_owner, stored.refresh_lease_until) == ("", None)

    if token == "still_good":
        # every caller uses the old token, which WeChat still accepts
        assert {r.get("digest") for r in results} == {sha(old)}, results[:3]
        assert token_answers(component, old) == 0
        return

    # expired: the caller that asked gets WeChat's error, the others a "refresh pending"; all retryable
    assert all(r.get("retryable") is True for r in results), results[:3]
    assert sorted(r["error"] for r in results) == sorted([holder_error] + ["TokenRefreshPending"] * 31)
    # and a retry resolves it: one more call, one new token for everybody
    mend_token_endpoint(component)
    retried = race(component, [("get", authorizer.pk, "")] * 32, processes=2, env=BOUNDED_ENV)
    stored.refresh_from_db()
    assert {r.get("digest") for r in retried} == {sha(stored.get_access_token())}
    assert {r.get("generation") for r in retried} == {generation + 1}
    assert sim_count(component, AUTHORIZER_TOKEN) == RETRIES + 2
    assert errcodes(component)[-1] == 0
    assert stored.last_error == ""


@pytest.mark.postgres
@pytest.mark.parametrize("token", ["still_good", "expired"])
def test_32_uploads_meeting_a_hung_token_endpoint_all_end_and_none_fails(bounded, authorizer, make_upload, token):
    component = bounded
    uploads = [make_upload(authorizer, image_bytes("PNG", color=(i, 40, 40))) for i in range(32)]
    old, generation = authorizer.get_access_token(), authorizer.token_generation
    set_token_state(authorizer, token)
    component.set_latency(AUTHORIZER_TOKEN, HANG)

    # when 30 worker threads and 2 worker processes run the 32 upload tasks at once
    runs = [("upload", 0, str(u.pk)) for u in uploads]
    results = race(component, runs, processes=2, env=BOUNDED_ENV)

    drain(component)
    assert sim_count(component, AUTHORIZER_TOKEN) == RETRIES + 1  # one run asked WeChat
    waits = durations(results)
    assert waits[-2] <= WAIT + SLACK + 1.0, waits  # + the upload itself
    assert waits[-1] <= HOLDER_BOUND + 1.0, waits
    assert not Upload.objects.filter(status=Upload.Status.FAILED).exists()

    if token == "still_good":
        # every upload went out with the old token, at once
        assert {r["status"] for r in results} == {"succeeded"}
        sent = component.uploads()
        assert len(sent) == 32 and {s["access_token"] for s in sent} == {old} and {s["errcode"] for s in sent} == {0}
        return

    # expired: every upload is requeued; only the run that asked WeChat spent an attempt
    assert {r["status"] for r in results} == {"queued"} and all(r["retry_in"] for r in results)
    assert sim_count(component, UPLOADIMG) == 0
    attempts = sorted(Upload.objects.values_list("attempts", flat=True))
    assert attempts == [0] * 31 + [1]
    (spent,) = UploadAttempt.objects.all()
    assert spent.outcome == UploadAttempt.Outcome.TRANSIENT and "ReadTimeout" in spent.errmsg
    waiting = Upload.objects.filter(attempts=0).first()
    assert "waiting for the access token" in waiting.errmsg

    # and once WeChat answers again, the retries send every upload with one new token
    mend_token_endpoint(component)
    Upload.objects.update(next_attempt_at=timezone.now())
    retried = race(component, runs, processes=2, env=BOUNDED_ENV)
    assert {r["status"] for r in retried} == {"succeeded"}
    stored = Authorizer.objects.get(pk=authorizer.pk)
    assert stored.token_generation == generation + 1
    assert sim_count(component, AUTHORIZER_TOKEN) == RETRIES + 2
    assert {s["access_token"] for s in component.uploads()} == {stored.get_access_token()}
    assert Upload.objects.filter(status=Upload.Status.SUCCEEDED).count() == 32


# -- the lease, one caller at a time (SQLite too) --------------------------------------------------------


def _lease_elsewhere(authorizer: Authorizer, *, seconds: float) -> None:
    """Another worker's lease on the refresh (negative seconds: one that ran out on it)."""
    Authorizer.objects.filter(pk=authorizer.pk).update(
        refresh_lease_owner="worker-elsewhere:4242:0123456789ab",
        refresh_lease_until=timezone.now() + timedelta(seconds=seconds),
    )
    authorizer.refresh_from_db()


def test_a_caller_meeting_a_refresh_in_progress_waits_the_bound_then_serves_the_still_good_token(
    authorizer, component, settings
):
    settings.TOKEN_REFRESH_WAIT_SECONDS = 0.4
    set_token_state(authorizer, "still_good")
    old = authorizer.get_access_token()
    _lease_elsewhere(authorizer, seconds=60)
    before = component.counters()

    started = time.monotonic()
    lease = authorizer_access_token_get(authorizer=authorizer)
    waited = time.monotonic() - started

    assert lease.token == old
    assert 0.4 <= waited < 0.4 + SLACK
    assert component.counters() == before  # nobody asked WeChat


def test_a_caller_meeting_a_refresh_in_progress_on_an_expired_token_gets_a_retryable_error(
    authorizer, component, settings
):
    settings.TOKEN_REFRESH_WAIT_SECONDS = 0.4
    set_token_state(authorizer, "expired")
    _lease_elsewhere(authorizer, seconds=60)
    before = component.counters()

    started = time.monotonic()
    with pytest.raises(TokenRefreshPending) as caught:
        authorizer_access_token_get(authorizer=authorizer)
    waited = time.monotonic() - started

    assert isinstance(caught.value, TransientError) and caught.value.retryable
    assert caught.value.retry_after > 0
    assert 0.4 <= waited < 0.4 + SLACK
    assert component.counters() == before


def test_a_lease_that_ran_out_on_its_owner_is_taken_over(authorizer, component, caplog):
    set_token_state(authorizer, "expired")
    _lease_elsewhere(authorizer, seconds=-1)  # its worker was killed mid-refresh

    with caplog.at_level(logging.WARNING, logger="openplatform.core.tokens"):
        lease = authorizer_access_token_get(authorizer=authorizer)

    stored = Authorizer.objects.get(pk=authorizer.pk)
    assert lease.token == stored.get_access_token() == component.authorizer(authorizer.appid)["access_token"]
    assert sim_count(component, AUTHORIZER_TOKEN) == 1
    assert (stored.refresh_lease_owner, stored.refresh_lease_until) == ("", None)
    assert any("ran out without a result; taking it over" in r.getMessage() for r in caplog.records)


def test_the_holders_own_failure_serves_a_still_good_token_on_use_but_the_beat_hears_of_it(
    authorizer, component, settings
):
    settings.WECHAT_HTTP_MAX_RETRIES = 0
    set_token_state(authorizer, "still_good")
    old = authorizer.get_access_token()
    component.inject_fault(AUTHORIZER_TOKEN, "http_status", count=2, status=502)

    assert authorizer_access_token_get(authorizer=authorizer).token == old  # an upload goes on with it
    with pytest.raises(TransientError):  # the beat's refresh reports the failure
        authorizer_access_token_refresh_ahead(authorizer=Authorizer.objects.get(pk=authorizer.pk))

    stored = Authorizer.objects.get(pk=authorizer.pk)
    assert stored.get_access_token() == old and "502" in stored.last_error
    assert (stored.refresh_lease_owner, stored.refresh_lease_until) == ("", None)
    assert errcodes(component) == [502, 502]


def test_an_upload_waiting_for_another_workers_refresh_is_requeued_without_spending_attempts(
    authorizer, component, make_upload, settings
):
    settings.TOKEN_REFRESH_WAIT_SECONDS = 0.1
    settings.UPLOAD_MAX_ATTEMPTS = 2
    upload = make_upload(authorizer)
    set_token_state(authorizer, "expired")
    _lease_elsewhere(authorizer, seconds=60)

    # more runs than the upload's whole attempt budget, all while the other worker's refresh runs
    outcomes = []
    for _ in range(4):
        Upload.objects.filter(pk=upload.pk).update(next_attempt_at=timezone.now())
        outcomes.append(upload_process(upload_id=upload.pk))

    upload.refresh_from_db()
    assert [o.status for o in outcomes] == ["queued"] * 4 and all(o.retry_in > 0 for o in outcomes)
    assert upload.status == Upload.Status.QUEUED and upload.attempts == 0
    assert "waiting for the access token" in upload.errmsg
    assert not UploadAttempt.objects.filter(upload=upload).exists()
    assert sim_count(component, AUTHORIZER_TOKEN) == 0 and sim_count(component, UPLOADIMG) == 0

    # the other worker's lease runs out (it died): the next run refreshes and sends
    _lease_elsewhere(authorizer, seconds=-1)
    Upload.objects.filter(pk=upload.pk).update(next_attempt_at=timezone.now())
    assert upload_process(upload_id=upload.pk).status == "succeeded"
    assert sim_count(component, AUTHORIZER_TOKEN) == 1


@pytest.mark.postgres
def test_a_holder_whose_lease_ran_out_does_not_overwrite_the_worker_that_took_over(
    authorizer, component, settings, caplog
):
    # given a lease shorter than the WeChat call, so a second worker takes over while the first still waits
    settings.TOKEN_REFRESH_LEASE_SECONDS = 0.5
    settings.TOKEN_REFRESH_WAIT_SECONDS = 5
    set_token_state(authorizer, "expired")
    generation = authorizer.token_generation
    component.set_latency(AUTHORIZER_TOKEN, 1.5)
    results: dict[str, str] = {}

    def worker(name: str) -> None:
        try:
            results[name] = authorizer_access_token_get(authorizer=Authorizer.objects.get(pk=authorizer.pk)).token
        finally:
            connection.close()

    with caplog.at_level(logging.WARNING, logger="openplatform.core.tokens"):
        first = threading.Thread(target=worker, args=("first",))
        first.start()
        wait_for(lambda: Authorizer.objects.exclude(refresh_lease_owner="").filter(pk=authorizer.pk).exists())
        first_owner = Authorizer.objects.get(pk=authorizer.pk).refresh_lease_owner
        time.sleep(0.6)  # its lease runs out while its call is still in flight
        settings.TOKEN_REFRESH_LEASE_SECONDS = 10  # the second worker's lasts
        second = threading.Thread(target=worker, args=("second",))
        second.start()
        first.join(15)
        second.join(15)

    # then both asked WeChat, but only the one holding the lease stored its token: one new generation,
    # and the first worker serves the second's token (WeChat's newest)
    assert errcodes(component) == [0, 0]
    stored = Authorizer.objects.get(pk=authorizer.pk)
    assert stored.token_generation == generation + 1
    assert stored.get_access_token() == component.authorizer(authorizer.appid)["access_token"]
    assert results == {"first": stored.get_access_token(), "second": stored.get_access_token()}
    messages = [r.getMessage() for r in caplog.records]
    assert any(f"lease of {first_owner} ran out" in m for m in messages), messages
    assert any("result discarded: its lease was lost" in m for m in messages), messages


# -- 8: a worker killed mid-refresh ----------------------------------------------------------------------


def _backends_waiting_for_a_lock() -> list[int]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
            " AND wait_event_type = 'Lock'"
        )
        return [pid for (pid,) in cursor.fetchall()]


def _other_backends() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")
        return cursor.fetchone()[0]


@pytest.mark.postgres
@pytest.mark.parametrize("past_grace", [False, True], ids=["within_refresh_token_grace", "past_refresh_token_grace"])
def test_a_worker_killed_after_wechat_issued_new_tokens_loses_nothing(
    authorizer, component, make_upload, past_grace, caplog
):
    # given WeChat rotates refresh tokens, an expired access token, and two queued uploads
    component.configure(rotate_refresh_tokens=True)
    grace = component.configure()["token_grace_seconds"]
    expire_access_token(authorizer)
    old_access, old_refresh = authorizer.get_access_token(), authorizer.get_refresh_token()
    generation = authorizer.token_generation
    killed, untouched = make_upload(authorizer), make_upload(authorizer, image_bytes("JPEG"))
    component.set_latency(AUTHORIZER_TOKEN, 1.0)  # time to hold the row before the worker stores the answer

    # when a worker process runs the first upload: it takes the refresh lease and asks WeChat ...
    (child,) = _start_children(component, [("upload", 0, str(killed.pk))], {
        # a short upload lease (settings require more than 2 x WECHAT_HTTP_TIMEOUT + 1 s: the I/O pool's bound)
        "TOKEN_REFRESH_LEASE_SECONDS": "3", "TOKEN_REFRESH_WAIT_SECONDS": "20", "UPLOAD_LEASE_SECONDS": "6",
        "WECHAT_HTTP_TIMEOUT": "2", "WECHAT_HTTP_MAX_RETRIES": "0",
    })
    child.stdin.write("go\n")
    child.stdin.flush()
    wait_for(lambda: Authorizer.objects.exclude(refresh_lease_owner="").filter(pk=authorizer.pk).exists(),
             what="the worker's lease")
    with transaction.atomic():
        # ... the row is held here so the worker cannot store WeChat's answer ...
        Authorizer.objects.select_for_update().get(pk=authorizer.pk)
        wait_for(lambda: errcodes(component) == [0], what="WeChat to issue the token")
        wait_for(lambda: len(_backends_waiting_for_a_lock()) == 1, what="the worker to wait to store it")
        # ... and it is killed right there, with the new tokens in hand
        os.kill(child.pid, signal.SIGKILL)
        child.communicate(timeout=10)
        assert child.returncode == -signal.SIGKILL
    wait_for(lambda: _other_backends() == 0, what="the killed worker's connection to end")

    # then WeChat has issued a new access token and a new refresh token that nobody stored
    sim = component.authorizer(authorizer.appid)
    stored = Authorizer.objects.get(pk=authorizer.pk)
    assert sim["access_token"] != old_access and sim["refresh_token"] != old_refresh
    assert (stored.get_access_token(), stored.get_refresh_token(), stored.token_generation) == (
        old_access, old_refresh, generation)
    assert stored.refresh_lease_owner  # the dead worker's lease, running out
    if past_grace:
        # the superseded refresh token works for `token_grace_seconds` (300 s) after the rotation, then 61023
        component.advance_clock(grace + 1)

    # when the leases have run out and the upload's task runs again (redelivery or the sweeper)
    upload_row = Upload.objects.get(pk=killed.pk)
    ends = max(stored.refresh_lease_until, upload_row.lease_until)
    time.sleep(max(0.0, (ends - timezone.now()).total_seconds()) + 0.1)
    with caplog.at_level(logging.WARNING, logger="openplatform.core.tokens"):
        outcome = upload_process(upload_id=killed.pk)

    # then it takes over, refreshes with no operator action, and both uploads go out
    assert outcome.status == "succeeded"
    assert [a.outcome for a in UploadAttempt.objects.filter(upload=killed).order_by("number")] == ["lost", "succeeded"]
    assert upload_process(upload_id=untouched.pk).status == "succeeded"
    if past_grace:
        assert errcodes(component) == [0, 61023, 0]  # recovered through api_get_authorizer_info
        assert sim_count(component, AUTHORIZER_INFO) == 2  # onboarding + the recovery
    else:
        assert errcodes(component) == [0, 0]  # the stale refresh token was still in its grace
        assert sim_count(component, AUTHORIZER_INFO) == 1
    stored.refresh_from_db()
    sim = component.authorizer(authorizer.appid)
    assert stored.status == Authorizer.Status.AUTHORIZED and stored.last_error == ""
    assert stored.get_refresh_token() == sim["refresh_token"] and stored.get_access_token() == sim["access_token"]
    assert stored.token_generation == generation + 1
    assert (stored.refresh_lease_owner, stored.refresh_lease_until) == ("", None)
    assert [u["errcode"] for u in component.uploads()] == [0, 0]
    assert any("ran out without a result; taking it over" in r.getMessage() for r in caplog.records)


# -- 10: many-way compare-and-expire ---------------------------------------------------------------------


@pytest.mark.postgres
def test_16_workers_reporting_the_same_stale_generation_cause_one_refresh(authorizer, component):
    # given the current token (generation g) refused by WeChat, and a token endpoint that takes a moment
    g = authorizer_access_token_get(authorizer=authorizer).generation
    component.invalidate_tokens(authorizer.appid, errcode=40001)
    component.set_latency(AUTHORIZER_TOKEN, MOMENT)

    # when 12 threads and 4 processes report generation g at once
    results = race(component, [("after_failure", authorizer.pk, str(g))] * 16, processes=4, env={})

    # then one refresh, and every worker has the new token
    stored = Authorizer.objects.get(pk=authorizer.pk)
    assert sim_count(component, AUTHORIZER_TOKEN) == 1
    assert {(r.get("digest"), r.get("generation")) for r in results} == {(sha(stored.get_access_token()), g + 1)}

    # when 16 late reports arrive together, for g (now replaced) and for g - 1 (older still); each is
    # answered from the row at once, so they need not overlap
    late = [("after_failure", authorizer.pk, str(g - i % 2)) for i in range(16)]
    results = race(component, late, processes=4, env={}, overlap=False)

    # then none of them expires the newer token
    assert sim_count(component, AUTHORIZER_TOKEN) == 1
    assert {(r.get("digest"), r.get("generation")) for r in results} == {(sha(stored.get_access_token()), g + 1)}
    assert Authorizer.objects.get(pk=authorizer.pk).token_generation == g + 1
    assert token_answers(component, stored.get_access_token()) == 0


@pytest.mark.postgres
def test_16_workers_reporting_the_same_stale_component_generation_cause_one_refresh(authorizer, component):
    g = ComponentAccessToken.objects.get(component_appid=APPID).generation
    component.invalidate_tokens(APPID, errcode=40001)
    component.set_latency(COMPONENT_TOKEN, MOMENT)
    before = sim_count(component, COMPONENT_TOKEN)

    results = race(component, [("component_after_failure", 0, str(g))] * 16, processes=4, env={})
    row = ComponentAccessToken.objects.get(component_appid=APPID)
    assert sim_count(component, COMPONENT_TOKEN) - before == 1
    assert {(r.get("digest"), r.get("generation")) for r in results} == {(sha(row.get_access_token()), g + 1)}

    late = [("component_after_failure", 0, str(g - i % 2)) for i in range(16)]
    results = race(component, late, processes=4, env={}, overlap=False)
    assert sim_count(component, COMPONENT_TOKEN) - before == 1
    assert {(r.get("digest"), r.get("generation")) for r in results} == {(sha(row.get_access_token()), g + 1)}
