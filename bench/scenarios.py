"""The measurements of docs/architecture.md §7 and issue 10, each a plain dict that report.py turns into rows.

The figures that decide a performance bar (CPU per upload, throughput, drain, two clients) are the median
of `rounds` rounds; each round runs ours and its comparison (the direct loop, the minimal Celery task)
one right after the other, so a change of the machine's state between rounds affects both alike.
"""

from __future__ import annotations

import hashlib
import http.client
import statistics
import sys
import threading
import time
from datetime import timedelta

from bench import baseline, load
from bench.env import COMPONENT
from bench.procs import WorkerConfig, rss_mb
from bench.world import AUTHORIZER_TOKEN, UPLOADIMG, World

WECHAT_LATENCY = 0.05  # seconds of modelled WeChat latency per uploadimg call (the real API: 30-200 ms)
DRAIN_LATENCY = 0.1  # the drain's (issue 10 (c))
DRAIN_IN_FLIGHT = 32
PROBE_PAUSE = 0.02  # seconds between the latency scenario's /healthz probes beside the POST load

#: CPU parts (CpuMeter names) that are the service: what an upload costs us.
OURS = ("web", "worker", "PostgreSQL", "Redis")
#: The minimal task's: its worker, the broker (and the bytes kept there), the producer (the bench process,
#: which SETs the bytes and sends the task; with the simulator in its own process, nothing else runs there).
BASELINE = ("minimal task worker", "Redis", "bench process")
#: The harness: load clients and WeChat. Reported, never added to ours.
HARNESS = ("bench process", "simulator")


def _log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def _total(cpu: dict[str, float], parts: tuple[str, ...]) -> float:
    return sum(cpu.get(k, 0.0) for k in parts)


def _median_cpu(rounds: list[dict[str, float]]) -> dict[str, float]:
    """Per part, the median over rounds (the total is taken per round first: see `_median_total`)."""
    return {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}


def _median_total(rounds: list[dict[str, float]], parts: tuple[str, ...]) -> float:
    return statistics.median(_total(r, parts) for r in rounds)


def _direct_poster(world: World):
    """A direct loop's request: the same image posted to uploadimg with the authorizer's valid token."""
    from tenants.models import Authorizer
    from tenants.services.tokens import authorizer_access_token_get

    token = authorizer_access_token_get(authorizer=Authorizer.objects.get(pk=world.authorizer.pk)).token
    url = f"{world.sim.url}{UPLOADIMG}?access_token={token}"

    def direct_post(session, i: int) -> None:
        body = session.post(url, files={"media": ("image.jpg", world.image, "image/jpeg")}, timeout=60).json()
        if not body.get("url"):
            raise RuntimeError(f"uploadimg answered {body}")

    return url, direct_post


def _direct_round(world: World, n: int, concurrency: int, post) -> tuple[float, dict[str, float]]:
    cpu0 = world.cpu.sample()
    direct = load.run(n, concurrency, post)
    cpu1 = world.cpu.sample()
    if direct.errors:
        raise RuntimeError(f"direct loop: {len(direct.errors)} errors, first: {direct.errors[0]}")
    return n / direct.elapsed, world.cpu.per_item_ms(cpu0, cpu1, n)


def _e2e_round(world: World, n: int, clients: int) -> dict:
    """`clients` clients POST `n` uploads as fast as they are accepted; timed until every one is final."""
    cpu0 = world.cpu.sample()
    t0 = time.perf_counter()
    posted = load.run(n, clients, lambda s, i: world.post_upload(s))
    if posted.errors:
        raise RuntimeError(f"API: {len(posted.errors)} errors, first: {posted.errors[0]}")
    accepted_at = time.perf_counter()
    statuses = world.wait_final(posted.results)
    elapsed = time.perf_counter() - t0
    cpu1 = world.cpu.sample()
    return {"rate": n / elapsed, "accept_rate": n / (accepted_at - t0), "statuses": statuses,
            "cpu": world.cpu.per_item_ms(cpu0, cpu1, n)}


def _add(total: dict[str, int], more: dict[str, int]) -> None:
    for k, v in more.items():
        total[k] = total.get(k, 0) + v


# -- 1. (a) CPU per upload beside the minimal Celery task, (b) throughput beside a direct loop ---------------


def _baseline_round(world: World, n: int, url: str, label: str) -> dict:
    """bench/baseline.py: `n` tasks sent at once to its worker (its concurrency is the number in flight),
    timed until the simulator has had `n` more uploadimg calls."""
    images = [world.unique_image() for _ in range(n)]  # made before the clock starts, as a client's are
    before, outcomes_before = world.count(UPLOADIMG), world.outcomes()
    cpu0 = world.cpu.sample()
    t0 = time.perf_counter()
    baseline.enqueue(f"bench:baseline:{label}", images, url)
    enqueued = world.cpu.sample()
    deadline = time.monotonic() + 300
    while world.count(UPLOADIMG) - before < n:
        if time.monotonic() > deadline:
            raise RuntimeError("the minimal task did not post everything within 300 s; see baseline-worker.log")
        time.sleep(0.05)
    elapsed = time.perf_counter() - t0
    cpu1 = world.cpu.sample()
    after = world.outcomes()
    failed = sum(v - outcomes_before.get(k, 0) for k, v in after.items() if k != "0")
    if failed:
        raise RuntimeError(f"the minimal task: {failed} uploadimg calls failed ({after}); see baseline-worker.log")
    cpu = world.cpu.per_item_ms(cpu0, cpu1, n)
    # The producer is the bench process until everything is sent; its polling of the simulator after that
    # is the harness's, not the minimal task's.
    cpu["bench process"] = world.cpu.per_item_ms(cpu0, enqueued, n)["bench process"]
    return {"rate": n / elapsed, "cpu": cpu}


def _bracket(before: dict, after: dict) -> dict:
    """The minimal task's rounds on either side of ours, as one: the mean of their rates and of each
    process's CPU per upload. This machine kind's speed drifts within seconds; a figure taken before ours
    and one after it, averaged, cancel a drift that is steady over the round."""
    return {"rate": (before["rate"] + after["rate"]) / 2,
            "cpu": {k: (before["cpu"][k] + after["cpu"][k]) / 2 for k in before["cpu"]},
            "totals": (_total(before["cpu"], BASELINE), _total(after["cpu"], BASELINE))}


def throughput(world: World, *, n: int, concurrency: int, rounds: int) -> dict:
    """Each round: the direct loop, the minimal task, ours end to end, the minimal task again; `concurrency`
    in flight, 50 ms. Ours is compared with the mean of the two minimal-task runs around it (`_bracket`)."""
    world.control.set_latency(UPLOADIMG, WECHAT_LATENCY)
    # Warm every web process, worker thread and connection pool before timing anything.
    warm = load.run(concurrency * 4, concurrency, lambda s, i: world.post_upload(s))
    world.wait_final(warm.results)
    url, direct_post = _direct_poster(world)
    world.baseline = baseline.start_worker(concurrency, world.logs / "baseline-worker.log")
    direct_rates, direct_cpus, e2e, base = [], [], [], []
    statuses: dict[str, int] = {}
    try:
        _baseline_round(world, concurrency * 4, url, "warm")
        for r in range(rounds):
            rate, cpu = _direct_round(world, n, concurrency, direct_post)
            direct_rates.append(rate)
            direct_cpus.append(cpu)
            first = _baseline_round(world, n, url, f"round{r}a")
            e2e.append(_e2e_round(world, n, concurrency))
            _add(statuses, e2e[-1]["statuses"])
            base.append(_bracket(first, _baseline_round(world, n, url, f"round{r}b")))
            _log(
                f"throughput round {r + 1}/{rounds}: direct {direct_rates[-1]:.0f}/s, end-to-end "
                f"{e2e[-1]['rate']:.0f}/s (accepted at {e2e[-1]['accept_rate']:.0f}/s, "
                f"{_total(e2e[-1]['cpu'], OURS):.1f} ms CPU per upload), minimal task {base[-1]['rate']:.0f}/s "
                f"({_total(base[-1]['cpu'], BASELINE):.1f} ms: {base[-1]['totals'][0]:.1f} before ours, "
                f"{base[-1]['totals'][1]:.1f} after), {e2e[-1]['statuses']}"
            )
    finally:
        world.cpu.sample()
        world.baseline.stop()
        world.baseline = None
    e2e_cpus, base_cpus = [x["cpu"] for x in e2e], [x["cpu"] for x in base]
    result = {
        "n": n,
        "concurrency": concurrency,
        "rounds": rounds,
        "direct_rate": statistics.median(direct_rates),
        "e2e_rate": statistics.median(x["rate"] for x in e2e),
        "accept_rate": statistics.median(x["accept_rate"] for x in e2e),
        "baseline_rate": statistics.median(x["rate"] for x in base),
        "e2e_cpu": _median_cpu(e2e_cpus),
        "direct_cpu": _median_cpu(direct_cpus),
        "baseline_cpu": _median_cpu(base_cpus),
        "ours_total": _median_total(e2e_cpus, OURS),
        "baseline_total": _median_total(base_cpus, BASELINE),
        # Ours / the minimal task's total, per round (the two ran one after the other), then the median.
        "cpu_ratio": statistics.median(_total(o, OURS) / _total(b, BASELINE) for o, b in zip(e2e_cpus, base_cpus, strict=True)),
        "cpu_ratio_parts": {
            k: statistics.median(o[k] / _total(b, BASELINE) for o, b in zip(e2e_cpus, base_cpus, strict=True))
            for k in OURS
        },
        "statuses": statuses,
        "all_succeeded": statuses.get("succeeded", 0) == n * rounds,
    }
    result["ratio"] = result["e2e_rate"] / result["direct_rate"]
    _log("CPU ms per upload (median), end-to-end: " + ", ".join(f"{k} {v:.1f}" for k, v in result["e2e_cpu"].items())
         + "; minimal task: " + ", ".join(f"{k} {v:.1f}" for k, v in result["baseline_cpu"].items())
         + "; direct: " + ", ".join(f"{k} {v:.1f}" for k, v in result["direct_cpu"].items()))
    return result


# -- 1. Two clients, a worker of concurrency 2 ---------------------------------------------------------------


def two_clients(world: World, *, n: int, rounds: int, pool: str) -> dict:
    """2 clients, one worker process of concurrency 2, 50 ms: end to end beside a direct loop at 2."""
    world.control.set_latency(UPLOADIMG, WECHAT_LATENCY)
    config = WorkerConfig(pool, 2, 1)
    world.start_workers(config, tag="two")
    try:
        warm = load.run(8, 2, lambda s, i: world.post_upload(s))
        world.wait_final(warm.results)
        _url, direct_post = _direct_poster(world)
        direct_rates, e2e = [], []
        statuses: dict[str, int] = {}
        for r in range(rounds):
            direct_rates.append(_direct_round(world, n, 2, direct_post)[0])
            e2e.append(_e2e_round(world, n, 2))
            _add(statuses, e2e[-1]["statuses"])
            _log(f"two clients round {r + 1}/{rounds}: direct {direct_rates[-1]:.1f}/s, end-to-end "
                 f"{e2e[-1]['rate']:.1f}/s, {e2e[-1]['statuses']}")
    finally:
        world.restore_workers()
    direct_rate, e2e_rate = statistics.median(direct_rates), statistics.median(x["rate"] for x in e2e)
    return {
        "n": n, "rounds": rounds, "worker": config.describe(), "direct_rate": direct_rate, "e2e_rate": e2e_rate,
        "ratio": statistics.median(x["rate"] / d for x, d in zip(e2e, direct_rates, strict=True)),
        "e2e_cpu": _median_cpu([x["cpu"] for x in e2e]),
        "statuses": statuses, "all_succeeded": statuses.get("succeeded", 0) == n * rounds,
    }


# -- 1. (c) Drain of queued uploads by one worker process -----------------------------------------------------

#: The drain's worker starts on this queue (never sent to) and is told to consume `uploads` when timed.
IDLE_QUEUE = "bench-idle"


def _consume(node: str, on: bool) -> None:
    from openplatform.celery import app

    if on:
        replies = app.control.add_consumer("uploads", destination=[node], reply=True, timeout=5)
    else:
        replies = app.control.cancel_consumer("uploads", destination=[node], reply=True, timeout=5)
    if not replies:
        raise RuntimeError(f"worker {node} did not answer {'add' if on else 'cancel'}_consumer")


def _drain_round(world: World, node: str, n: int) -> dict:
    """`n` accepted uploads queued while nothing consumes, then one worker drains them."""
    from django.db.models import Max, Min

    from uploads.models import Upload

    ids = _enqueue_uploads(world, n)
    in_flight = Upload.objects.filter(authorizer=world.authorizer, status__in=Upload.IN_FLIGHT_STATUSES)
    cpu0 = world.cpu.sample()
    t0 = time.perf_counter()
    _consume(node, True)
    deadline = time.monotonic() + 600
    while in_flight.count():  # a COUNT on the (authorizer, status) index every 0.2 s
        if time.monotonic() > deadline:
            raise RuntimeError(f"the drain did not finish within 600 s ({in_flight.count()} left)")
        time.sleep(0.2)
    wall = time.perf_counter() - t0
    cpu1 = world.cpu.sample()
    _consume(node, False)
    statuses = world.wait_final(ids)
    # The worker's own timestamps: its first claim to its last result. Excludes the time a worker takes to
    # notice a queue it was just told to consume (up to its 1 s poll on Redis) and the polling step.
    span = Upload.objects.filter(pk__in=ids).aggregate(first=Min("started_at"), last=Max("finished_at"))
    seconds = (span["last"] - span["first"]).total_seconds()
    return {"rate": n / seconds, "wall_rate": n / wall, "statuses": statuses,
            "cpu": world.cpu.per_item_ms(cpu0, cpu1, n)}


def drain(world: World, *, n: int, rounds: int, pool: str) -> dict:
    """Issue 10 (c): one worker process (`pool`, 32 threads) drains `n` queued uploads at 100 ms latency,
    beside a direct loop of `n` uploadimg calls from 32 threads."""
    world.control.set_latency(UPLOADIMG, DRAIN_LATENCY)
    config = WorkerConfig(pool, DRAIN_IN_FLIGHT, 1)
    world.stop_workers()  # nothing may consume while the uploads are queued
    try:
        world.start_workers(config, queues=IDLE_QUEUE, tag="drain")
        node = world.workers[0].node
        _drain_round(world, node, DRAIN_IN_FLIGHT * 2)  # warm: threads, connections, the session
        _url, direct_post = _direct_poster(world)
        direct_rates, drains = [], []
        statuses: dict[str, int] = {}
        for r in range(rounds):
            direct_rates.append(_direct_round(world, n, DRAIN_IN_FLIGHT, direct_post)[0])
            drains.append(_drain_round(world, node, n))
            _add(statuses, drains[-1]["statuses"])
            _log(f"drain round {r + 1}/{rounds}: direct {direct_rates[-1]:.0f}/s, drain {drains[-1]['rate']:.0f}/s "
                 f"(first claim to last result; {drains[-1]['wall_rate']:.0f}/s from add_consumer to the last "
                 f"poll), {drains[-1]['statuses']}")
    finally:
        world.restore_workers()
    return {
        "n": n, "rounds": rounds, "in_flight": DRAIN_IN_FLIGHT, "latency_ms": DRAIN_LATENCY * 1000,
        "worker": config.describe(), "direct_rate": statistics.median(direct_rates),
        "drain_rate": statistics.median(x["rate"] for x in drains),
        "wall_rate": statistics.median(x["wall_rate"] for x in drains),
        "ratio": statistics.median(x["rate"] / d for x, d in zip(drains, direct_rates, strict=True)),
        "cpu": _median_cpu([x["cpu"] for x in drains]),
        "statuses": statuses, "all_succeeded": statuses.get("succeeded", 0) == n * rounds,
    }


# -- 4. (d) Accept latency beside the framework's floor --------------------------------------------------------


LATENCY_WARMUP = 100  # POSTs before the first round, not timed: a web process's first requests pay its imports


def _latency_round(world: World, n: int, concurrency: int) -> dict:
    """`/healthz` alone under `concurrency` clients (the floor), then `n` POSTs under as many clients with
    one more client asking `/healthz` every PROBE_PAUSE beside them; every upload final before it returns."""

    def health(session, i: int) -> None:
        session.get(f"{world.web_url}/healthz", timeout=60).raise_for_status()

    floor = load.run(n, concurrency, health)
    # Beside the POST load, one more client asks /healthz every PROBE_PAUSE: what any request meets on
    # the same server while the 20 clients upload (queueing behind them), as opposed to the floor above,
    # where /healthz has the server to itself.
    probe = load.LoadResult(elapsed=0.0)
    done = threading.Event()

    def probing() -> None:
        with load.Client() as session:
            while not done.is_set():
                t0 = time.perf_counter()
                try:
                    health(session, 0)
                    probe.latencies.append(time.perf_counter() - t0)
                except (OSError, http.client.HTTPException, load.HTTPError) as exc:
                    probe.errors.append(f"{type(exc).__name__}: {exc}")
                done.wait(PROBE_PAUSE)

    prober = threading.Thread(target=probing, name="healthz-probe")
    prober.start()
    try:
        posts = load.run(n, concurrency, lambda s, i: world.post_upload(s))
    finally:
        done.set()
        prober.join(60)
    errors = floor.errors + posts.errors + probe.errors
    if errors:
        raise RuntimeError(f"latency: {len(errors)} errors, first: {errors[0]}")
    world.wait_final(posts.results)  # the next round starts with the worker idle, as this one did
    result = {
        "post_p50": posts.percentile_ms(50), "post_p99": posts.percentile_ms(99), "post_rate": posts.rate,
        "health_p50": floor.percentile_ms(50), "health_p99": floor.percentile_ms(99), "health_rate": floor.rate,
        "probe_p50": probe.percentile_ms(50), "probe_p99": probe.percentile_ms(99), "probe_n": len(probe.latencies),
    }
    means = posts.client_means_ms()
    result["client_lightest"], result["client_heaviest"] = means[0], means[-1]
    result["p99_ratio"] = result["post_p99"] / result["health_p99"]
    result["probe_ratio"] = result["post_p99"] / result["probe_p99"]
    _log(
        f"latency: POST p50 {result['post_p50']:.1f} ms p99 {result['post_p99']:.1f} ms ({posts.rate:.0f}/s); "
        f"/healthz p50 {result['health_p50']:.1f} ms p99 {result['health_p99']:.1f} ms ({floor.rate:.0f}/s); "
        f"/healthz beside the POSTs p50 {result['probe_p50']:.1f} ms p99 {result['probe_p99']:.1f} ms "
        f"({len(probe.latencies)} probes); POST p99 / healthz p99 {result['p99_ratio']:.2f}; "
        f"the clients' mean POST latencies {', '.join(f'{m:.0f}' for m in means)} ms"
    )
    return result


def latency(world: World, *, n: int, concurrency: int, rounds: int) -> dict:
    """Issue 10 (d), `rounds` times: the floor and the POSTs one right after the other, as every key figure
    is taken (the machine's speed drifts). Each figure is the median of the rounds; the ratios are taken per
    round, then their median. A p99 of 1,000 requests rests on its 10 slowest: one round says little."""
    world.control.set_latency(UPLOADIMG, WECHAT_LATENCY)
    _e2e_round(world, LATENCY_WARMUP, concurrency)  # untimed
    per_round = [_latency_round(world, n, concurrency) for _ in range(rounds)]
    medians = {k: statistics.median(r[k] for r in per_round) for k in per_round[0]}
    return {
        **medians,
        "probe_n": sum(r["probe_n"] for r in per_round),
        "probe_pause_ms": PROBE_PAUSE * 1000,
        "n": n,
        "concurrency": concurrency,
        "rounds": rounds,
        "p99_ratios": [r["p99_ratio"] for r in per_round],
    }


# -- 2. Token refreshes ------------------------------------------------------------------------------------


def single_flight(world: World, *, n: int = 64) -> dict:
    """`n` concurrent uploads for an authorizer whose token has expired, here and at WeChat."""
    from django.utils import timezone

    from tenants.models import Authorizer

    world.control.set_latency(UPLOADIMG, WECHAT_LATENCY)
    expired = world.onboard(world.tenant)
    Authorizer.objects.filter(pk=expired.pk).update(access_token_expires_at=timezone.now() - timedelta(seconds=60))
    world.control.invalidate_tokens(expired.appid, errcode=42001)
    before = world.count(AUTHORIZER_TOKEN)
    posted = load.run(n, n, lambda s, i: world.post_upload(s, expired.appid))
    if posted.errors:
        raise RuntimeError(f"single flight: {len(posted.errors)} errors, first: {posted.errors[0]}")
    statuses = world.wait_final(posted.results)
    calls = world.count(AUTHORIZER_TOKEN) - before
    _log(f"single flight: {n} uploads on an expired token -> {calls} api_authorizer_token call(s), {statuses}")
    return {"n": n, "calls": calls, "statuses": statuses, "all_succeeded": statuses.get("succeeded", 0) == n}


def simulated_day(world: World, *, step: int = 240, day: int = 86400) -> dict:
    """Run the scheduled refresh job every `step` s for a day, on a moved clock (ours and WeChat's).

    At each step every authorizer also takes the on-demand path an upload takes (load the row,
    `authorizer_access_token_get`) and uploads an image with that token, which must be accepted.
    """
    from unittest import mock

    import django.utils.timezone as tz

    from openplatform.component.config import wechat_client
    from openplatform.component.models import ComponentAccessToken
    from openplatform.component.token import component_access_token_force_refresh
    from openplatform.wechat.client import RetryPolicy
    from openplatform.wechat.errors import WeChatError
    from tenants.models import Authorizer
    from tenants.services.reconcile import authorizer_ids_due_for_refresh, authorizers_refresh
    from tenants.services.tokens import authorizer_access_token_get

    world.control.set_latency(UPLOADIMG, 0)
    real_now = tz.now
    offset = [0.0]
    authorizers = list(Authorizer.objects.authorized())
    counts_before = {a.pk: a.refresh_count for a in authorizers}
    calls_before = world.count(AUTHORIZER_TOKEN)
    rejected_uploads = 0
    started = time.perf_counter()
    with mock.patch.object(tz, "now", lambda: real_now() + timedelta(seconds=offset[0])):
        for t in range(0, day, step):
            if t % 600 < step:  # WeChat pushes a ticket every 10 minutes
                world.store_ticket()
            authorizers_refresh(authorizer_ids=authorizer_ids_due_for_refresh())
            for a in authorizers:
                lease = authorizer_access_token_get(authorizer=Authorizer.objects.get(pk=a.pk))
                try:
                    wechat_client().upload_image(access_token=lease.token, data=world.image,
                                                 retry=RetryPolicy(max_retries=0))
                except WeChatError:
                    rejected_uploads += 1
            offset[0] += step
            world.control.advance_clock(step)
        # Both clocks a day ahead now: what the component token has left in WeChat's time.
        component_left = ComponentAccessToken.objects.get(component_appid=COMPONENT["component_appid"]).seconds_left()
    # WeChat's clock stays a day ahead, ours is back: the component token we hold was issued a day ago in
    # WeChat's time (it has expired there) and looks fresh here. Fetch a new one now, against a new ticket,
    # or the scenarios after this one would each pay its expiry (a 42001, a refresh, a retry).
    world.store_ticket()
    component_access_token_force_refresh()
    _log(f"simulated day: the component token had {component_left:.0f} s left in WeChat's time; refreshed")
    per_authorizer = [
        a.refresh_count - counts_before[a.pk] for a in Authorizer.objects.filter(pk__in=counts_before)
    ]
    calls = world.count(AUTHORIZER_TOKEN) - calls_before
    _log(
        f"simulated day ({time.perf_counter() - started:.1f} s): refreshes per authorizer {per_authorizer}, "
        f"{calls} api_authorizer_token calls, {rejected_uploads} uploads refused"
    )
    return {
        "authorizers": len(authorizers),
        "max": max(per_authorizer),
        "min": min(per_authorizer),
        "calls": calls,
        "rejected_uploads": rejected_uploads,
        "steps": day // step,
    }


# -- 3. Queries per accepted upload and per task run -------------------------------------------------------


def _fill_uploads(authorizer, total: int) -> None:
    """Bring `authorizer`'s tenant to `total` uploads: one row through the ORM, the rest copied in SQL."""
    from django.db import connection
    from django.utils import timezone

    from uploads.models import Upload

    have = Upload.objects.filter(tenant_id=authorizer.tenant_id).count()
    missing = total - have
    if missing <= 0:
        return
    template = Upload.objects.create(
        tenant_id=authorizer.tenant_id, authorizer=authorizer, sha256=hashlib.sha256(b"x").hexdigest(),
        size=1, original_size=1, content_type="image/jpeg", status=Upload.Status.SUCCEEDED,
        created_at=timezone.now() - timedelta(days=30), finished_at=timezone.now() - timedelta(days=30),
    )
    if missing == 1:
        return
    columns = [f.column for f in Upload._meta.concrete_fields]
    table = connection.ops.quote_name(Upload._meta.db_table)
    select = []
    for column in columns:
        if column == Upload._meta.pk.column:
            select.append("gen_random_uuid()")
        elif column == "created_at":
            select.append("created_at - g * interval '1 second'")
        else:
            select.append(connection.ops.quote_name(column))
    quoted = ", ".join(connection.ops.quote_name(c) for c in columns)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} ({quoted}) SELECT {', '.join(select)} FROM {table} "  # noqa: S608
            f"CROSS JOIN generate_series(1, %s) AS g WHERE {connection.ops.quote_name(Upload._meta.pk.column)} = %s",
            [missing - 1, template.pk],
        )
        cursor.execute(f"ANALYZE {table}")


def _short(sql: str, limit: int = 600) -> str:
    return sql if len(sql) <= limit else f"{sql[:limit]}... ({len(sql):,} characters)"


def queries(world: World, *, sizes: tuple[int, ...]) -> dict:
    """SQL per POST /api/v1/uploads/ (Django test client) and per task run, at each history size."""
    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from tenants.models import Tenant
    from tenants.services.keys import api_key_create
    from uploads.services.process import upload_process

    world.control.set_latency(UPLOADIMG, 0)
    tenant = Tenant.objects.create(slug="bench-queries", name="Queries Ltd")
    _, key = api_key_create(tenant=tenant, name="queries")
    authorizer = world.onboard(tenant)
    client = Client(HTTP_AUTHORIZATION=f"Api-Key {key}")

    def one() -> tuple[int, int, list[str]]:
        media = SimpleUploadedFile("image.jpg", world.unique_image(), content_type="image/jpeg")
        with CaptureQueriesContext(connection) as accept:
            response = client.post("/api/v1/uploads/", {"media": media, "authorizer_appid": authorizer.appid})
        if response.status_code != 202:
            raise RuntimeError(f"POST answered {response.status_code}: {response.content[:200]!r}")
        with CaptureQueriesContext(connection) as task:
            outcome = upload_process(upload_id=response.json()["id"])
        if outcome.status != "succeeded":
            raise RuntimeError(f"the task ended {outcome.status}")
        sql = ["-- accept"] + [_short(q["sql"]) for q in accept.captured_queries]
        sql += ["-- task"] + [_short(q["sql"]) for q in task.captured_queries]
        return len(accept), len(task), sql

    one()  # the first request of a process loads and caches things once
    results, sql_log = {}, []
    for size in sizes:
        started = time.perf_counter()
        _fill_uploads(authorizer, size)
        filled = time.perf_counter() - started
        accept, task, sql = one()
        results[size] = (accept, task)
        sql_log += [f"-- with {size} uploads"] + sql
        _log(f"queries with {size:,} uploads (filled in {filled:.1f} s): accept {accept}, task {task}")
    (world.logs / "queries.sql").write_text("\n".join(sql_log) + "\n")
    return {"sizes": sizes, "results": results}


# -- 5. Worker memory --------------------------------------------------------------------------------------


def _enqueue_uploads(world: World, n: int) -> list[str]:
    """`n` accepted uploads (records and bytes in bulk), each sent to the worker as the API would."""
    from django.utils import timezone

    from uploads.images import check_image
    from uploads.models import Upload, UploadBlob
    from uploads.tasks import upload_image

    image = check_image(world.image)
    now = timezone.now()
    rows = Upload.objects.bulk_create(
        [
            Upload(
                tenant=world.tenant, authorizer=world.authorizer, sha256=image.sha256, size=image.size,
                original_size=image.original_size, content_type=image.content_type, width=image.width,
                height=image.height, next_attempt_at=now,
                dedupe=False,  # the same bytes n times: each must still be sent, as the bench measures
            )
            for _ in range(n)
        ],
        batch_size=1000,
    )
    UploadBlob.objects.bulk_create([UploadBlob(upload=row, data=image.data) for row in rows], batch_size=500)
    ids = [str(row.pk) for row in rows]
    for pk in ids:
        upload_image.apply_async(args=[pk])
    return ids


def worker_memory(world: World, *, n: int, warmup: int) -> dict:
    world.control.set_latency(UPLOADIMG, 0)
    world.wait_final(_enqueue_uploads(world, warmup))
    time.sleep(1)
    before = rss_mb(*(w.pid for w in world.workers))
    started = time.perf_counter()
    statuses = world.wait_final(_enqueue_uploads(world, n))
    took = time.perf_counter() - started
    time.sleep(1)
    after = rss_mb(*(w.pid for w in world.workers))
    _log(f"worker memory: {before:.1f} MB -> {after:.1f} MB over {n} uploads ({n / took:.0f}/s), {statuses}")
    return {"n": n, "before": before, "after": after, "growth": after - before, "rate": n / took,
            "statuses": statuses, "worker": world.worker_config.describe() if world.worker_config else ""}


# -- 6. Scheduled refresh of many authorizers --------------------------------------------------------------


def scheduled_refresh(world: World, *, n: int) -> dict:
    """`n` authorizers, all due: the beat job's batches (of 100) run by the worker; then a second run."""
    from django.conf import settings
    from django.utils import timezone

    from tenants.models import Authorizer, Tenant
    from tenants.services.reconcile import authorizer_ids_due_for_refresh, authorizers_refresh
    from tenants.tasks import refresh_authorizer_tokens_batch

    started = time.perf_counter()
    pairs = world.grant_many(n)  # as if each merchant had authorized us (the control API's authorize, in bulk)
    tenant = Tenant.objects.create(slug="bench-many", name="Many Accounts Ltd")
    now = timezone.now()
    rows = []
    for appid, refresh_token in pairs:
        row = Authorizer(
            tenant=tenant, component_appid=COMPONENT["component_appid"], appid=appid,
            account_type=Authorizer.AccountType.OFFICIAL_ACCOUNT, func_info=[1, 11], authorized_at=now,
        )
        row.set_refresh_token(refresh_token)
        rows.append(row)
    Authorizer.objects.bulk_create(rows, batch_size=2000)
    ours = Authorizer.objects.filter(tenant=tenant)
    _log(f"scheduled refresh: {n} authorizers created in {time.perf_counter() - started:.1f} s")

    def run_job() -> tuple[int, float, int]:
        before = world.count(AUTHORIZER_TOKEN)
        t0 = time.perf_counter()
        due = authorizer_ids_due_for_refresh()
        # What refresh_due_authorizer_tokens sends, without its 0-60 s jitter.
        size = settings.AUTHORIZER_REFRESH_BATCH_SIZE
        for start in range(0, len(due), size):
            refresh_authorizer_tokens_batch.apply_async(args=[due[start : start + size]])
        deadline = time.monotonic() + 600
        while ours.filter(token_generation=0, last_error="").exists():
            if time.monotonic() > deadline:
                raise RuntimeError("the scheduled refresh did not finish within 600 s")
            time.sleep(0.05)
        return len(due), time.perf_counter() - t0, world.count(AUTHORIZER_TOKEN) - before

    due, seconds, calls = run_job()
    failed = ours.exclude(last_error="").count()
    _log(f"scheduled refresh: {due} due, {calls} api_authorizer_token calls in {seconds:.1f} s, {failed} failed")
    due2, seconds2, calls2 = run_job()
    # A redelivered batch (the lock holder re-checks) must not call WeChat either.
    before = world.count(AUTHORIZER_TOKEN)
    redelivered = authorizers_refresh(authorizer_ids=list(ours.values_list("pk", flat=True)[:1000]))
    calls_redelivered = world.count(AUTHORIZER_TOKEN) - before
    _log(
        f"scheduled refresh, second run: {due2} due, {calls2} calls; a redelivered batch of "
        f"{redelivered.skipped + redelivered.refreshed} -> {calls_redelivered} calls"
    )
    return {
        "n": n, "due": due, "seconds": seconds, "calls": calls, "failed": failed,
        "due2": due2, "calls2": calls2, "redelivered": redelivered.skipped + redelivered.refreshed,
        "calls_redelivered": calls_redelivered,
    }
