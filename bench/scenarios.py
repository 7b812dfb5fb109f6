"""The six measurements of docs/architecture.md §7, each a plain dict that report.py turns into table rows."""

from __future__ import annotations

import hashlib
import statistics
import sys
import time
from datetime import timedelta

from bench import load
from bench.env import COMPONENT
from bench.procs import rss_mb
from bench.world import AUTHORIZER_TOKEN, UPLOADIMG, World

WECHAT_LATENCY = 0.05  # seconds of modelled WeChat latency per uploadimg call (the real API: 30-200 ms)


def _log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


# -- 1. End-to-end throughput against a direct loop --------------------------------------------------------


def throughput(world: World, *, n: int, concurrency: int, rounds: int) -> dict:
    from tenants.models import Authorizer
    from tenants.services.tokens import authorizer_access_token_get

    world.control.set_latency(UPLOADIMG, WECHAT_LATENCY)
    # Warm every web process, worker thread and connection pool before timing anything.
    warm = load.run(concurrency * 4, concurrency, lambda s, i: world.post_upload(s))
    world.wait_final(warm.results)

    token = authorizer_access_token_get(authorizer=Authorizer.objects.get(pk=world.authorizer.pk)).token
    direct_url = f"{world.sim.url}{UPLOADIMG}?access_token={token}"

    def direct_post(session, i: int) -> None:
        body = session.post(direct_url, files={"media": ("image.jpg", world.image, "image/jpeg")}, timeout=60).json()
        if not body.get("url"):
            raise RuntimeError(f"uploadimg answered {body}")

    direct_rates, e2e_rates, accept_rates, statuses = [], [], [], {}
    direct_cpu: dict[str, float] = {}
    e2e_cpu: dict[str, float] = {}
    for r in range(rounds):
        cpu0 = world.cpu.sample()
        direct = load.run(n, concurrency, direct_post)
        if direct.errors:
            raise RuntimeError(f"direct loop: {len(direct.errors)} errors, first: {direct.errors[0]}")
        direct_rates.append(n / direct.elapsed)
        cpu1 = world.cpu.sample()

        t0 = time.perf_counter()
        posted = load.run(n, concurrency, lambda s, i: world.post_upload(s))
        if posted.errors:
            raise RuntimeError(f"API: {len(posted.errors)} errors, first: {posted.errors[0]}")
        accepted_at = time.perf_counter()
        round_statuses = world.wait_final(posted.results)
        elapsed = time.perf_counter() - t0
        cpu2 = world.cpu.sample()
        for total, ms in ((direct_cpu, world.cpu.per_item_ms(cpu0, cpu1, n)),
                          (e2e_cpu, world.cpu.per_item_ms(cpu1, cpu2, n))):
            for k, v in ms.items():
                total[k] = total.get(k, 0.0) + v / rounds
        for k, v in round_statuses.items():
            statuses[k] = statuses.get(k, 0) + v
        e2e_rates.append(n / elapsed)
        accept_rates.append(n / (accepted_at - t0))
        _log(
            f"throughput round {r + 1}/{rounds}: direct {direct_rates[-1]:.0f}/s, end-to-end "
            f"{e2e_rates[-1]:.0f}/s (accepted at {accept_rates[-1]:.0f}/s), {round_statuses}"
        )
    direct_rate, e2e_rate = statistics.median(direct_rates), statistics.median(e2e_rates)
    _log("CPU ms per upload, end-to-end: " + ", ".join(f"{k} {v:.1f}" for k, v in e2e_cpu.items())
         + "; direct: " + ", ".join(f"{k} {v:.1f}" for k, v in direct_cpu.items()))
    return {
        "e2e_cpu": e2e_cpu,
        "direct_cpu": direct_cpu,
        "n": n,
        "concurrency": concurrency,
        "rounds": rounds,
        "direct_rate": direct_rate,
        "e2e_rate": e2e_rate,
        "accept_rate": statistics.median(accept_rates),
        "ratio": e2e_rate / direct_rate,
        "statuses": statuses,
        "all_succeeded": statuses.get("succeeded", 0) == n * rounds,
    }


# -- 4. Accept latency beside the framework's floor --------------------------------------------------------


def latency(world: World, *, n: int, concurrency: int) -> dict:
    world.control.set_latency(UPLOADIMG, WECHAT_LATENCY)

    def health(session, i: int) -> None:
        session.get(f"{world.web_url}/healthz", timeout=60).raise_for_status()

    floor = load.run(n, concurrency, health)
    posts = load.run(n, concurrency, lambda s, i: world.post_upload(s))
    errors = floor.errors + posts.errors
    if errors:
        raise RuntimeError(f"latency: {len(errors)} errors, first: {errors[0]}")
    world.wait_final(posts.results)
    _log(
        f"latency: POST p50 {posts.percentile_ms(50):.1f} ms p99 {posts.percentile_ms(99):.1f} ms "
        f"({posts.rate:.0f}/s); /healthz p50 {floor.percentile_ms(50):.1f} ms p99 {floor.percentile_ms(99):.1f} ms "
        f"({floor.rate:.0f}/s)"
    )
    return {
        "n": n,
        "concurrency": concurrency,
        "post_p50": posts.percentile_ms(50),
        "post_p99": posts.percentile_ms(99),
        "post_rate": posts.rate,
        "health_p50": floor.percentile_ms(50),
        "health_p99": floor.percentile_ms(99),
        "health_rate": floor.rate,
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
    # WeChat's clock stays a day ahead, ours is back: the component token we hold was issued a day ago in
    # WeChat's time (it has expired there) and looks fresh here. Fetch a new one now, against a new ticket,
    # or the scenarios after this one would each pay its expiry (a 42001, a refresh, a retry).
    world.store_ticket()
    component_access_token_force_refresh()
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
            "statuses": statuses}


# -- 6. Scheduled refresh of many authorizers --------------------------------------------------------------


def scheduled_refresh(world: World, *, n: int) -> dict:
    """`n` authorizers, all due: the beat job's batches (of 100) run by the worker; then a second run."""
    from django.conf import settings
    from django.utils import timezone

    from openplatform.wechat.simulator import authorization as authz
    from tenants.models import Authorizer, Tenant
    from tenants.services.reconcile import authorizer_ids_due_for_refresh, authorizers_refresh
    from tenants.tasks import refresh_authorizer_tokens_batch

    started = time.perf_counter()
    state = world.sim.state
    with state.lock:  # as if each merchant had authorized us (the control API's authorize, in bulk)
        comp = state.components[COMPONENT["component_appid"]]
        grants = [authz.grant(state, comp, authorizer_appid=None, func_info=[1, 11]) for _ in range(n)]
        pairs = [(g.authorizer.appid, g.authorizer.refresh_token) for g in grants]
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
