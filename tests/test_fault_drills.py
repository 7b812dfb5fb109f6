"""Fault drills (docs/architecture.md §7, issue #6): bursts of uploads through the REST API and a real Celery worker,
with a fault injected mid-burst. After each drill, within a deadline:

- every accepted upload is final, and with these faults every one of them succeeded (none lost);
- our records match what the simulator ("WeChat") saw: every upload's URL is among the simulator's
  successful records for its bytes (each drill's images are unique, so sha256 identifies the upload),
  the simulator saw nothing we did not send, and the duplicates (simulator's successful uploads minus
  our succeeded uploads) are within what the design allows for that fault.

When a duplicate can happen, and why. uploadimg has no idempotency key: WeChat stores whatever reaches
it. Our side can only avoid *re-sending* when it knows the first send's result. A send is repeated
only after a call whose outcome we could not learn:

1. Worker killed (drill 1): a run killed after its request left the process. WeChat (the simulator)
   still answers and stores the image; nobody reads the answer. The lease runs out, the next run takes
   over, records the lost run as an attempt with outcome `lost` ("WeChat may or may not have
   received the image") and sends again. So duplicates <= number of `lost` attempts, per upload; an
   upload without a `lost` attempt is on WeChat exactly once. A run killed before its request left
   costs a `lost` attempt but no duplicate; killing an idle worker costs nothing.
2. Broker restarted (drill 2): 0. The broker only carries "look at upload X"; the claim (a conditional
   UPDATE with a lease) makes redelivered, re-enqueued or duplicated messages harmless, and every run
   still writes its result to the database, which stays up. Restarted once keeping its data (unacked
   messages come back) and once losing it (every message gone): uploads accepted while it is down,
   and those whose messages were lost, stay `queued` and the sweeper enqueues them again.
3. Database connection dropped (drill 3): 0. A run that loses its connection after WeChat answered
   writes its result again on a fresh connection (the compare-and-set on its lease makes that safe).
   Before that fix (uploads/services/process.py, `_save_if_still_ours`) the result was lost, the
   lease ran out and the takeover sent the image again: 14-15 duplicates in 40 uploads in this drill.
   A drop anywhere else in the run (claim, reads) makes the task retry (uploads/tasks.py); a lease it
   had taken is waited out and taken over, recorded as `lost`, but nothing had been sent. A duplicate
   would take the same run losing its connection twice within the one result write.
4. 20 % failures (drill 4): one duplicate per call that timed out on our side but reached WeChat. A
   call with no answer within WECHAT_HTTP_TIMEOUT is transient and retried; the simulator's "delay"
   fault answers normally after we gave up (as WeChat does), so here: duplicates == timeouts, exactly.
   -1 and HTTP 500 are answers: nothing stored, nothing duplicated.

5. Webhook receiver down for a while (drill 5): uploads succeed while the merchant's receiver refuses
   connections; each `upload.succeeded` event is retried with backoff and delivered once it is back,
   signed. Delivery is at-least-once: a duplicate would take a worker lost after the receiver answered.

Time is compressed: a lease of LEASE_SECONDS (production: 90 s), and the sweeper (beat runs it every
minute in production, with a 2-minute cutoff for queued uploads) is called by the test every second
with a cutoff of STUCK_QUEUED_AFTER. Each drill prints its numbers (accepted, succeeded, duplicates,
lost attempts, uploads the sweeper re-enqueued, seconds to drain after the fault).
"""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta

import pytest

from tests.fixtures import media_file, noise_bytes, sim_count
from tests.webhook_receiver import add_endpoint, readme_verify
from tests.worker import terminate_worker_db_connections, wait_until
from uploads.models import Upload, UploadAttempt
from uploads.tasks import sweep_stuck_uploads
from webhooks.models import WebhookDelivery, WebhookDeliveryAttempt, WebhookEvent
from webhooks.tasks import sweep_webhook_deliveries

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

UPLOADIMG = "/cgi-bin/media/uploadimg"
LEASE_SECONDS = 6
HTTP_TIMEOUT = 1.5
STUCK_QUEUED_AFTER = timedelta(seconds=8)
DRAIN_DEADLINE = 60


@pytest.fixture(scope="module")
def worker_env() -> dict[str, str]:
    return {
        # Hard time limit 0.9 * lease = 5.4 s: above a timed-out call (1.5 s) plus the token and DB work.
        "UPLOAD_LEASE_SECONDS": str(LEASE_SECONDS),
        "WECHAT_HTTP_TIMEOUT": str(HTTP_TIMEOUT),
        # Above the longest countdown the task asks for (lease + 1 s), so ETA messages are not restored
        # while the worker still holds them.
        "CELERY_VISIBILITY_TIMEOUT": "10",
        # A drill may cost an upload a lost run or two on top of transient failures.
        "UPLOAD_MAX_ATTEMPTS": "8",
        # Drill 5: webhooks to a receiver on 127.0.0.1, retried every 0.5-2 s.
        "WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8",
        "WEBHOOK_RETRY_BASE_SECONDS": "0.5",
        "WEBHOOK_RETRY_MAX_SECONDS": "2",
    }


@pytest.fixture(scope="module")
def worker_concurrency() -> int:
    return 4


@pytest.fixture
def sweeper(monkeypatch):
    """The beat job, in this process, with the compressed cutoff for queued uploads."""
    monkeypatch.setattr("uploads.tasks.STUCK_QUEUED_AFTER", STUCK_QUEUED_AFTER)
    return sweep_stuck_uploads


@dataclass
class Drill:
    name: str
    client: object
    authorizer: object
    seed: int
    ids: list[str] = field(default_factory=list)
    swept: int = 0
    started: float = field(default_factory=time.monotonic)

    def submit(self, count: int) -> None:
        for _ in range(count):
            data = noise_bytes("PNG", size=(24, 24), seed=self.seed * 10_000 + len(self.ids))
            response = self.client.post(
                "/api/v1/uploads/",
                {"media": media_file(data, f"drill-{len(self.ids)}.png"), "authorizer_appid": self.authorizer.appid},
                format="multipart",
            )
            assert response.status_code == 202, response.content
            self.ids.append(response.json()["id"])

    def count(self, *statuses: str) -> int:
        return Upload.objects.filter(pk__in=self.ids, status__in=statuses).count()

    def drain(self, worker, sweep, timeout: float = DRAIN_DEADLINE) -> float:
        """Wait until every upload is final, running the sweeper every second; seconds it took."""
        start = time.monotonic()
        deadline, next_sweep = start + timeout, start
        final = list(Upload.FINAL_STATUSES)
        while self.count(*final) < len(self.ids):
            supervised(worker)
            now = time.monotonic()
            if now > deadline:
                states = Counter(Upload.objects.filter(pk__in=self.ids).values_list("status", flat=True))
                raise AssertionError(
                    f"{self.name}: not final after {timeout}s: {dict(states)}\n"
                    f"--- worker log ---\n{worker.log()[-6000:]}"
                )
            if now >= next_sweep:
                self.swept += sweep()
                next_sweep = now + 1
            time.sleep(0.1)
        return time.monotonic() - start


def supervised(worker) -> bool:
    """What production's supervisor does (compose `restart:`): a worker that died is started again. The
    prefork worker can die on a broker reconnect after losing pool children (tests/worker.py)."""
    worker.ensure_running()
    return True


@dataclass
class Reconciliation:
    accepted: int
    succeeded: int
    duplicates: int
    #: sha256 -> how many successful uploads of it the simulator saw
    on_wechat: Counter
    uploads: list[Upload]


def settle(component, *, may_be_cut_off: int = 0, timeout: float = HTTP_TIMEOUT + 3) -> None:
    """Let calls the worker gave up on (killed, timed out) finish in the simulator, which counts a call
    when it arrives and records it when it answers. A call whose sender was killed before its body was
    through is never recorded: at most `may_be_cut_off` of them (the runs a drill killed) may stay
    unrecorded; any other call still unrecorded after `timeout` fails the drill."""
    deadline = time.monotonic() + timeout
    while (unrecorded := sim_count(component, UPLOADIMG) - len(component.uploads())) > 0:
        if time.monotonic() > deadline:
            assert unrecorded <= may_be_cut_off, (
                f"{unrecorded} uploadimg call(s) reached the simulator but were not answered within "
                f"{timeout:.1f}s (at most {may_be_cut_off} may have been cut off by a killed worker)"
            )
            return
        time.sleep(0.1)


def reconcile(drill: Drill, component, *, may_be_cut_off: int = 0) -> Reconciliation:
    settle(component, may_be_cut_off=may_be_cut_off)
    uploads = list(Upload.objects.filter(pk__in=drill.ids))
    by_sha = {u.sha256: u for u in uploads}
    assert len(uploads) == len(drill.ids), "an accepted upload has no record"
    assert len(by_sha) == len(uploads), "the drill's images must be unique"
    seen = component.uploads()
    assert not [s for s in seen if s["sha256"] not in by_sha], "the simulator saw an upload we never accepted"
    answered = [s for s in seen if s["http_status"] == 200 and s["errcode"] == 0 and s["url"]]
    on_wechat = Counter(s["sha256"] for s in answered)
    urls = {(s["sha256"], s["url"]) for s in answered}
    statuses = Counter(u.status for u in uploads)
    assert statuses == {"succeeded": len(uploads)}, dict(statuses)
    for upload in uploads:
        assert (upload.sha256, upload.url) in urls, f"{upload.pk}: its URL is not one WeChat gave out"
    return Reconciliation(len(drill.ids), statuses["succeeded"], len(answered) - statuses["succeeded"],
                          on_wechat, uploads)


def duplicate_story(rec: Reconciliation, worker) -> str:
    """For a failed no-duplicates check: each image WeChat stored twice, with its upload's attempts."""
    lines = []
    for sha, count in rec.on_wechat.items():
        if count < 2:
            continue
        upload = next(u for u in rec.uploads if u.sha256 == sha)
        attempts = UploadAttempt.objects.filter(upload=upload).order_by("number")
        lines.append(f"{upload.pk}: on WeChat {count}x; attempts: " + "; ".join(
            f"#{a.number} {a.outcome} errcode={a.errcode} {a.errmsg[:120]!r}" for a in attempts))
    worker_log = "\n".join(line for line in worker.log().splitlines() if "WARNING" in line or "ERROR" in line)
    return "\n".join(lines) + "\n--- worker warnings ---\n" + worker_log[-6000:]


def attempts_by_upload(ids, **filters) -> Counter:
    return Counter(UploadAttempt.objects.filter(upload__in=ids, **filters).values_list("upload_id", flat=True))


def report(capsys, drill: Drill, rec: Reconciliation, drain_seconds: float, **extra) -> None:
    fields = {
        "accepted": rec.accepted, "succeeded": rec.succeeded, "duplicates": rec.duplicates,
        "lost_attempts": UploadAttempt.objects.filter(upload__in=drill.ids, outcome="lost").count(),
        "swept": drill.swept, **extra,
        "drain_s": round(drain_seconds, 1), "total_s": round(time.monotonic() - drill.started, 1),
    }
    with capsys.disabled():
        print(f"\n[drill] {drill.name}: " + " ".join(f"{k}={v}" for k, v in fields.items()))


def test_drill_worker_sigkill_mid_burst(celery_worker, api_client, authorizer, component, sweeper, capsys):
    """The worker SIGKILLed mid-call twice; fresh workers, redelivery and the sweeper recover."""
    component.set_latency(UPLOADIMG, 0.5)
    drill = Drill("worker SIGKILL", api_client, authorizer, seed=1)
    drill.submit(30)

    # 1. Kill the worker while its threads wait for WeChat (a crash, the OOM killer: on the threads pool
    #    the uploads in flight all live in the one worker process); the supervisor starts a new one.
    wait_until(lambda: drill.count("succeeded") >= 4 and drill.count("uploading") >= 2, timeout=30,
               message="uploads in flight")
    assert celery_worker.kill() == -signal.SIGKILL
    assert celery_worker.ensure_running()
    drill.submit(5)

    # 2. Kill it again mid-burst, and start a fresh one by hand while uploads keep coming.
    done = drill.count("succeeded")
    wait_until(lambda: drill.count("succeeded") >= done + 4 and drill.count("uploading") >= 2, timeout=30,
               message="uploads in flight again")
    celery_worker.kill()
    fault_over = time.monotonic()
    celery_worker.start()
    drill.submit(5)
    celery_worker.wait_ready()

    drill.drain(celery_worker, sweeper)
    drain = time.monotonic() - fault_over
    lost = attempts_by_upload(drill.ids, outcome="lost")
    rec = reconcile(drill, component, may_be_cut_off=sum(lost.values()))

    assert lost, "the kills hit no upload in flight: the drill tested nothing"
    for upload in rec.uploads:
        extra = rec.on_wechat[upload.sha256] - 1
        assert extra <= lost[upload.pk], (
            f"{upload.pk} is on WeChat {extra + 1} times but lost only {lost[upload.pk]} runs"
        )
    assert rec.duplicates <= sum(lost.values())
    report(capsys, drill, rec, drain, worker_kills=2)


def test_drill_broker_restarted_mid_burst(celery_worker, worker_broker, api_client, authorizer, component,
                                          sweeper, capsys):
    """The broker restarted twice during a burst: once keeping its data, once losing every message."""
    if not worker_broker.can_restart:
        pytest.skip("needs the redis-server binary to stop and restart a private broker")
    component.set_latency(UPLOADIMG, 0.3)
    drill = Drill("broker restart", api_client, authorizer, seed=2)
    accept_while_down = []

    def outage(*, keep_data: bool) -> None:
        done = drill.count("succeeded")
        drill.submit(10)
        wait_until(lambda: supervised(celery_worker) and drill.count("succeeded") >= done + 3, timeout=30,
                   message="uploads to succeed")
        worker_broker.stop(keep_data=keep_data)
        try:
            t0 = time.monotonic()
            drill.submit(4)  # accepted and stored; their enqueue fails
            accept_while_down.append((time.monotonic() - t0) / 4)
            time.sleep(2)  # the worker finishes what it holds; its acks and retries cannot reach the broker
        finally:
            worker_broker.start()
        drill.submit(6)

    outage(keep_data=True)
    outage(keep_data=False)
    fault_over = time.monotonic()
    drill.drain(celery_worker, sweeper)
    drain = time.monotonic() - fault_over
    rec = reconcile(drill, component)

    assert rec.duplicates == 0, rec.on_wechat.most_common(3)
    assert max(accept_while_down) < 5, f"accepting with the broker down took {accept_while_down}s per upload"
    report(capsys, drill, rec, drain, accepted_while_down=4 * len(accept_while_down),
           accept_s_while_down=round(max(accept_while_down), 2))


def test_drill_database_connections_dropped_mid_task(celery_worker, api_client, authorizer, component, sweeper,
                                                     capsys):
    """Every worker connection to PostgreSQL terminated several times while uploads are in flight."""
    component.set_latency(UPLOADIMG, 0.3)
    drill = Drill("database connections dropped", api_client, authorizer, seed=3)

    def in_flight() -> int:  # calls that reached the simulator and are not answered yet
        return sim_count(component, UPLOADIMG) - len(component.uploads())

    terminated, overlapped = [], []
    for _ in range(4):
        drill.submit(10)
        # into the WeChat call: the run's next query is its result's write
        wait_until(lambda: drill.count("uploading") >= 1 and in_flight() >= 1, timeout=60,
                   message="uploads in flight at WeChat")
        arrived = sim_count(component, UPLOADIMG)
        terminated.append(terminate_worker_db_connections())
        # calls that had arrived before the connections were dropped and were still unanswered after
        overlapped.append(arrived - len(component.uploads()))
    fault_over = time.monotonic()
    drill.drain(celery_worker, sweeper)
    drain = time.monotonic() - fault_over
    rec = reconcile(drill, component)

    assert sum(terminated) > 0, "no worker connection was found to terminate"
    assert max(overlapped) > 0, f"no connection was dropped while its run waited for WeChat: {overlapped}"
    assert rec.duplicates == 0, duplicate_story(rec, celery_worker)
    report(capsys, drill, rec, drain, connections_terminated=sum(terminated),
           dropped_mid_call=sum(n > 0 for n in overlapped))


def test_a_result_is_saved_again_when_the_connection_drops_while_wechat_answers(
    authorizer, component, make_upload, monkeypatch
):
    """Drill 3 in one process, deterministically: the run's backend is terminated during the WeChat call."""
    from django.db import connection

    from uploads.services.process import upload_process

    # This process runs the task; the module's worker (if started) must not get a message for it.
    monkeypatch.setattr("uploads.services.accept.enqueue_on_commit", lambda *args, **kwargs: None)
    upload = make_upload(authorizer, noise_bytes("PNG", size=(24, 24), seed=99))
    component.set_latency(UPLOADIMG, 0.5)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        (pid,) = cursor.fetchone()

    terminated: list[tuple[bool, int]] = []  # (backend terminated, WeChat answers by then)

    def terminate() -> None:
        from django.db import connection as own  # this thread's own connection

        # The simulator counts the call when it arrives, then sleeps: the run is waiting for WeChat.
        wait_until(lambda: sim_count(component, UPLOADIMG) == 1, timeout=10, message="the call to arrive")
        try:
            with own.cursor() as cursor:
                cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
                (done,) = cursor.fetchone()
        finally:
            own.close()
        terminated.append((done, len(component.uploads())))

    killer = threading.Thread(target=terminate)
    killer.start()
    try:
        outcome = upload_process(upload_id=upload.pk)
    finally:
        killer.join()
        connection.close()  # whatever happened, the test's teardown gets a working connection

    # (the backend was terminated while WeChat had not answered yet)
    assert terminated == [(True, 0)]
    upload.refresh_from_db()
    assert outcome.status == upload.status == "succeeded", upload.errmsg
    assert list(UploadAttempt.objects.filter(upload=upload).values_list("outcome", flat=True)) == ["succeeded"]
    assert [s["url"] for s in component.uploads()] == [upload.url]  # sent once


def test_drill_one_in_five_calls_failing(celery_worker, api_client, authorizer, component, sweeper, capsys):
    """The definitive record comparison: -1, HTTP 500 and no answer within the timeout, 20 % of calls."""
    component.set_failure_rate(UPLOADIMG, 0.2, [
        {"kind": "errcode", "errcode": -1},
        {"kind": "http_status", "status": 500},
        {"kind": "delay", "seconds": HTTP_TIMEOUT + 1},  # the worker gives up; WeChat answers later
    ], seed=3)  # 51 calls: 4 x -1, 3 x HTTP 500, 4 timeouts
    drill = Drill("20% failures", api_client, authorizer, seed=4)
    drill.submit(40)
    fault_over = time.monotonic()
    drill.drain(celery_worker, sweeper)
    drain = time.monotonic() - fault_over
    rec = reconcile(drill, component)

    # Call by call, per upload: what we recorded is what the simulator saw.
    seen = Counter()
    for s in component.uploads():
        kind = "ok" if s["http_status"] == 200 and s["errcode"] == 0 else f"{s['http_status']}/{s['errcode']}"
        seen[(s["sha256"], kind)] += 1
    ours = Counter()
    timeouts = 0
    sha = {str(u.pk): u.sha256 for u in rec.uploads}
    for upload_id, outcome, http_status, errcode in UploadAttempt.objects.filter(upload__in=drill.ids).values_list(
        "upload_id", "outcome", "http_status", "errcode"
    ):
        if outcome == "succeeded" or (outcome == "transient" and http_status is None):
            kind = "ok"  # a timed-out call was still answered (and stored) by WeChat
            timeouts += outcome == "transient"
        else:
            kind = f"{http_status}/{errcode}"
        ours[(sha[str(upload_id)], kind)] += 1
    assert ours == seen
    assert rec.duplicates == timeouts
    assert timeouts and seen and any(k.endswith("/-1") for _, k in seen) and any(k.startswith("500/") for _, k in seen)
    report(capsys, drill, rec, drain, timeouts=timeouts,
           calls=sum(seen.values()), failed_calls=sum(v for (_, k), v in seen.items() if k != "ok") + timeouts)


def test_drill_webhook_receiver_down_for_a_while(celery_worker, jobs_worker, api_client, authorizer, component, sweeper,
                                                 receiver, loopback_allowed, monkeypatch, capsys):
    """The merchant's receiver is down during a burst and for a while after: every event arrives later."""
    monkeypatch.setattr("webhooks.tasks.STUCK_AFTER", STUCK_QUEUED_AFTER)
    endpoint = add_endpoint(api_client, receiver.url, events=["upload.succeeded"])
    receiver.stop()
    down_since = time.monotonic()
    drill = Drill("webhook receiver down", api_client, authorizer, seed=5)
    drill.submit(30)
    drill.drain(celery_worker, sweeper)
    rec = reconcile(drill, component)
    events = {str(pk) for pk in WebhookEvent.objects.filter(type="upload.succeeded").values_list("pk", flat=True)}
    assert len(events) == len(drill.ids)
    wait_until(lambda: WebhookDeliveryAttempt.objects.filter(outcome="network_error").count() >= 2 * len(events),
               timeout=60, message="every delivery to fail twice")
    time.sleep(max(0.0, 8 - (time.monotonic() - down_since)))  # down for at least 8 s
    failed_while_down = WebhookDeliveryAttempt.objects.exclude(outcome="succeeded").count()
    receiver.start()
    fault_over = time.monotonic()

    def all_delivered() -> bool:
        sweep_webhook_deliveries()
        return WebhookDelivery.objects.filter(status="succeeded").count() == len(events)

    wait_until(all_delivered, timeout=DRAIN_DEADLINE, interval=1, message="every event to be delivered")
    drain = time.monotonic() - fault_over
    received = receiver.received
    assert {r.event["id"] for r in received} == events  # nothing lost, nothing else
    assert {r.event["data"]["id"] for r in received} == set(drill.ids)
    verify = readme_verify()
    assert all(verify(endpoint["secret"], r.body, r.headers["Webhook-Signature"]) for r in received)
    assert not WebhookDelivery.objects.exclude(status="succeeded").exists()
    report(capsys, drill, rec, drain, events=len(events), received=len(received),
           webhook_duplicates=len(received) - len(events), failed_attempts_while_down=failed_while_down,
           down_s=round(fault_over - down_since, 1))
