"""The upload path's cost measured inside one process, without gunicorn or Celery around it.

    .venv/bin/python -m bench.inprocess accept [--requests 600] [--phases] [--profile N]
    .venv/bin/python -m bench.inprocess task [--uploads 200] [--profile N]

`accept` calls the WSGI application directly with prebuilt `POST /api/v1/uploads/` requests (a 640x480
JPEG, each with bytes of its own) and reports the CPU of this thread per request (`time.thread_time()`)
and the CPU of the PostgreSQL backend serving it (from /proc) per request, after a warm-up; `--phases`
adds the CPU of each step (authentication, throttles, multipart, serializer, image check, the
statement, the publish). `task` accepts uploads, then runs `upload_process` on each in turn against the
simulator in a process of its own at 50 ms, and reports the wall time and CPU of the claim, the token,
the WeChat call and the result's write (the medians).

Smaller and faster to repeat than `make bench`, so two versions of the code can be alternated (run it
from each tree's root) when the machine's speed drifts. It needs PostgreSQL and Redis as `make bench`
does, and owns database `openplatform_inprocess` (dropped and recreated) and Redis db 13 (flushed).
Like every benchmark, it means something only on a quiet machine: it prints the load before and after.
"""

from __future__ import annotations

import argparse
import collections
import functools
import io
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/openplatform_inprocess")
os.environ.setdefault("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")

from bench import env  # noqa: E402  (reads the two variables above)

LOGS = env.ROOT / "bench" / "results"  # as make bench's (git-ignored)
_CPU: dict[str, list[float]] = collections.defaultdict(list)
_WALL: dict[str, list[float]] = collections.defaultdict(list)


def _timed(owner, name: str, label: str) -> None:
    """Replace owner.name by a wrapper that records the CPU (and wall) time of each call under `label`."""
    original = getattr(owner, name)

    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        cpu, wall = time.thread_time(), time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            _CPU[label].append((time.thread_time() - cpu) * 1000)
            _WALL[label].append((time.perf_counter() - wall) * 1000)

    setattr(owner, name, wrapper)


def _backend_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _backend_pid() -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def _world(simulator_in_process: bool):
    from bench.world import World, sample_image, seed, start_simulator, start_simulator_process

    env.reset_database()
    env.reset_redis()
    LOGS.mkdir(parents=True, exist_ok=True)
    if simulator_in_process:
        sim, control = start_simulator()
    else:
        from bench.procs import free_port

        sim, control = start_simulator_process(free_port(), LOGS / "inprocess-simulator.log")
    env.configure_environ(simulator_url=sim.url)
    env.setup_django()
    world = World(sim=sim, control=control, image=sample_image(), logs=LOGS)
    seed(world)
    return world


def _profiler(profile: int):
    """A cProfile profiler of this thread's CPU (waits on sockets do not count), or None."""
    if not profile:
        return None
    import cProfile

    return cProfile.Profile(time.thread_time)


def _report_profile(profiler, name: str, top: int) -> None:
    if profiler:  # (cProfile's own overhead inflates the figures; compare the shares, not the sum)
        import pstats

        profiler.dump_stats(LOGS / f"{name}.prof")  # for pstats' callers and callees
        pstats.Stats(profiler, stream=sys.stdout).sort_stats("tottime").print_stats(top)
        print(f"(the whole profile: {(LOGS / f'{name}.prof').relative_to(env.ROOT)})")


def accept(requests_: int, phases: bool, profile: int = 0) -> None:
    import requests
    from django.core.wsgi import get_wsgi_application

    world = _world(simulator_in_process=True)
    app = get_wsgi_application()

    def environ(image: bytes) -> dict:
        prepared = requests.Request(
            "POST", "http://127.0.0.1/api/v1/uploads/", files={"media": ("image.jpg", image, "image/jpeg")},
            data={"authorizer_appid": world.authorizer.appid}, headers={"Authorization": f"Api-Key {world.api_key}"},
        ).prepare()
        return {
            "REQUEST_METHOD": "POST", "PATH_INFO": "/api/v1/uploads/", "QUERY_STRING": "", "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "8000", "HTTP_HOST": "127.0.0.1", "wsgi.url_scheme": "http", "SERVER_PROTOCOL": "HTTP/1.1",
            "wsgi.input": io.BytesIO(prepared.body), "wsgi.errors": sys.stderr,
            "CONTENT_TYPE": prepared.headers["Content-Type"], "CONTENT_LENGTH": str(len(prepared.body)),
            "HTTP_AUTHORIZATION": prepared.headers["Authorization"],
        }

    def call(e: dict) -> None:
        status = []
        b"".join(app(e, lambda s, headers, exc=None: status.append(s)))
        if not status[0].startswith("202"):
            raise RuntimeError(f"POST /api/v1/uploads/ answered {status[0]}")

    warm = 50
    environs = [environ(world.unique_image()) for _ in range(requests_ + warm)]
    for e in environs[:warm]:
        call(e)
    if phases:
        import openplatform.core.queueing
        import tenants.auth
        import uploads.api
        import uploads.body
        import uploads.services.accept
        import uploads.services.pg

        _timed(tenants.auth.TenantAPIKeyAuthentication, "authenticate", "authentication (the key's statement)")
        _timed(tenants.auth._WindowRateThrottle, "allow_request", "throttles (per throttle)")
        _timed(uploads.body.UploadMultiPartParser, "parse", "multipart body")
        _timed(uploads.api.UploadCreateSerializer, "is_valid", "form fields (serializer)")
        _timed(uploads.services.accept, "check_image", "image check")
        _timed(uploads.services.pg, "upload_insert_for_appid", "authorizer + dedupe + insert statement")
        _timed(openplatform.core.queueing, "publish", "task publish")
    pid = _backend_pid()
    profiler = _profiler(profile)
    backend0, cpu0, wall0 = _backend_cpu_seconds(pid), time.thread_time(), time.perf_counter()
    if profiler:
        profiler.enable()
    for e in environs[warm:]:
        call(e)
    if profiler:
        profiler.disable()
    cpu, wall = time.thread_time() - cpu0, time.perf_counter() - wall0
    backend = _backend_cpu_seconds(pid) - backend0
    print(f"accept, {requests_} requests: this thread {cpu * 1000 / requests_:.2f} ms CPU per request "
          f"(wall {wall * 1000 / requests_:.2f} ms), its PostgreSQL backend {backend * 1000 / requests_:.2f} ms")
    for label, values in _CPU.items():
        print(f"  {label}: {sum(values) / requests_:.3f} ms per request")
    _report_profile(profiler, "accept", profile)
    world.sim.stop()


def task(uploads_: int, profile: int = 0) -> None:
    world = _world(simulator_in_process=False)  # Django is set up from here on

    from django.db import close_old_connections

    from openplatform.component.config import wechat_client
    from tenants.models import Authorizer
    from uploads.services import pg, process
    from uploads.services.accept import upload_create

    world.control.set_latency("/cgi-bin/media/uploadimg", 0.05)
    authorizer = Authorizer.objects.get(pk=world.authorizer.pk)
    warm = 20
    ids = [str(upload_create(tenant=world.tenant, authorizer_appid=authorizer.appid, data=world.unique_image()).upload.pk)
           for _ in range(uploads_ + warm)]
    _timed(pg, "upload_claim", "claim")
    _timed(process, "authorizer_access_token_get", "token")
    _timed(type(wechat_client()), "upload_image", "WeChat call (50 ms modelled)")
    _timed(pg, "upload_result_write", "result")
    _timed(process, "upload_process", "the whole run")
    profiler = _profiler(profile)
    for i, upload_id in enumerate(ids):
        if i == warm:
            _CPU.clear()
            _WALL.clear()
            if profiler:
                profiler.enable()
        close_old_connections()  # as around each task (openplatform/celery.py)
        process.upload_process(upload_id=upload_id)
    if profiler:
        profiler.disable()
    print(f"task, {uploads_} runs one after the other (medians):")
    for label in _CPU:
        print(f"  {label}: wall {statistics.median(_WALL[label]):.2f} ms, CPU {statistics.median(_CPU[label]):.2f} ms")
    _report_profile(profiler, "task", profile)
    world.sim.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.inprocess", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    a = sub.add_parser("accept")
    a.add_argument("--requests", type=int, default=600)
    a.add_argument("--phases", action="store_true")
    a.add_argument("--profile", type=int, default=0, metavar="N",
                   help="profile the CPU of this thread (cProfile) and print the N costliest functions")
    t = sub.add_parser("task")
    t.add_argument("--uploads", type=int, default=200)
    t.add_argument("--profile", type=int, default=0, metavar="N", help="as for accept, over the timed runs")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(env.ROOT))
    from bench.procs import machine_busy_cores

    # Its figures mean something only on a quiet machine: say how busy it was, before and after.
    print(f"before: 1-minute load {os.getloadavg()[0]:.2f}, machine busy {machine_busy_cores(2.0):.2f} cores over 2 s")
    if args.what == "accept":
        accept(args.requests, args.phases, args.profile)
    else:
        task(args.uploads, args.profile)
    print(f"after: 1-minute load {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
