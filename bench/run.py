"""`make bench`: every bar of docs/architecture.md §7 measured against real processes, printed as one table.

    .venv/bin/python -m bench.run            # full sizes (a few minutes)
    .venv/bin/python -m bench.run --quick    # smaller sizes, about a minute
    .venv/bin/python -m bench.run --only throughput,latency --web-workers 3 --pool threads --concurrency 20

The table goes to stdout and to bench/results/latest.md (git-ignored, with the process logs and the SQL
of the query measurements); a full run also writes bench/RESULTS.md (committed). Progress goes to stderr.

Environment: BENCH_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/openplatform_bench, dropped and
recreated) and BENCH_REDIS_URL (default redis://127.0.0.1:6379/14, flushed). For investigations:
BENCH_GUNICORN_EXTRA adds gunicorn arguments (e.g. an access log with request times) and BENCH_WSGI_APP
serves another WSGI callable (e.g. a profiling wrapper around openplatform.wsgi:application).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench import env
from bench.procs import CpuMeter, WebConfig, WorkerConfig, free_port, start_web, start_workers

RESULTS_DIR = env.ROOT / "bench" / "results"
COMMITTED = env.ROOT / "bench" / "RESULTS.md"
KEPT_SECTION = "## Other benches"
SCENARIOS = ("queries", "throughput", "latency", "single_flight", "memory", "day", "refresh")


@dataclass(frozen=True)
class Sizes:
    uploads: int = 300
    rounds: int = 3
    latency_requests: int = 1000
    memory_uploads: int = 5000
    memory_warmup: int = 500
    authorizers: int = 10_000
    history: tuple[int, ...] = (10, 100_000)


QUICK = Sizes(uploads=200, rounds=1, latency_requests=400, memory_uploads=1000, memory_warmup=200,
              authorizers=2_000, history=(10, 20_000))


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smaller sizes (about a minute)")
    p.add_argument("--only", default="", help=f"comma-separated subset of {','.join(SCENARIOS)}")
    p.add_argument("--uploads", type=int, help="uploads per throughput round")
    p.add_argument("--rounds", type=int, help="throughput rounds (the median is reported)")
    p.add_argument("--clients", type=int, default=20, help="concurrent clients")
    p.add_argument("--web-workers", type=int, default=WebConfig.workers)
    p.add_argument("--web-threads", type=int, default=WebConfig.threads)
    p.add_argument("--pool", default=WorkerConfig.pool, choices=["threads", "prefork", "solo", "gevent", "eventlet"])
    p.add_argument("--concurrency", type=int, default=WorkerConfig.concurrency, help="worker concurrency")
    p.add_argument("--worker-processes", type=int, default=WorkerConfig.processes, help="celery worker instances")
    return p.parse_args(argv)


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    # SIGTERM unwinds like Ctrl-C, so the web server and workers are stopped in `finally`.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    sizes = QUICK if args.quick else Sizes()
    sizes = Sizes(**{**vars(sizes), **{k: v for k, v in (("uploads", args.uploads), ("rounds", args.rounds))
                                      if v is not None}})
    only = [s.strip() for s in args.only.split(",") if s.strip()] or list(SCENARIOS)
    unknown = set(only) - set(SCENARIOS)
    if unknown:
        log(f"unknown scenario(s) {sorted(unknown)}; choose from {', '.join(SCENARIOS)}")
        return 2
    web_config = WebConfig(args.web_workers, args.web_threads)
    worker_config = WorkerConfig(args.pool, args.concurrency, args.worker_processes)
    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)

    # The simulator first: its URL goes into the environment the settings (and subprocesses) read.
    from bench.world import World, sample_image, seed, start_simulator

    sim, control = start_simulator()
    env.configure_environ(simulator_url=sim.url)
    env.reset_database()
    env.reset_redis()
    env.setup_django()
    log(f"database {env.database_name()} and Redis {env.REDIS_URL} reset; simulator on {sim.url}")

    from bench import report, scenarios

    world = World(sim=sim, control=control, image=sample_image(), logs=RESULTS_DIR)
    seed(world)
    results: dict = {}
    try:
        if "queries" in only:  # in this process, before the worker runs: its messages are dropped
            results["queries"] = scenarios.queries(world, sizes=sizes.history)
            env.reset_redis()
        port = free_port()
        world.web_url = f"http://127.0.0.1:{port}"
        world.web = start_web(web_config, port, RESULTS_DIR / "gunicorn.log")
        world.workers = start_workers(worker_config, RESULTS_DIR / "worker.log")
        world.cpu = CpuMeter({
            "web": (world.web.pid,), "worker": tuple(w.pid for w in world.workers),
            "bench (clients, simulator)": [os.getpid()],
            "PostgreSQL": env.database_name(), "Redis": "redis-server",
        })
        log(f"{web_config.describe()} on {world.web_url}; {worker_config.describe()}")
        if "throughput" in only:
            results["throughput"] = scenarios.throughput(
                world, n=sizes.uploads, concurrency=args.clients, rounds=sizes.rounds)
        if "latency" in only:
            results["latency"] = scenarios.latency(world, n=sizes.latency_requests, concurrency=args.clients)
        if "single_flight" in only:
            results["single_flight"] = scenarios.single_flight(world, n=64)
        if "memory" in only:
            results["memory"] = scenarios.worker_memory(world, n=sizes.memory_uploads, warmup=sizes.memory_warmup)
        if "day" in only:  # moves WeChat's clock a day ahead: after everything that uploads through the worker
            results["day"] = scenarios.simulated_day(world)
        if "refresh" in only:
            results["refresh"] = scenarios.scheduled_refresh(world, n=sizes.authorizers)
    finally:
        for proc in [*world.workers, world.web]:
            if proc is not None:
                proc.stop()
        control.close()
        sim.stop()
        from django.db import connections

        connections.close_all()

    machine = env.versions()
    setup = [
        web_config.describe(),
        worker_config.describe(),
        f"image {len(world.image):,} bytes (640x480 JPEG)",
        f"{args.clients} clients",
        "PostgreSQL and Redis on localhost, simulator in the bench process",
        f"1-minute load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after "
        "(anything else running on the machine slows every figure; see 'other processes')",
        f"whole run {time.perf_counter() - started:.0f} s",
    ]
    given = argv if argv is not None else sys.argv[1:]
    command = "make bench" if not given else "bash scripts/bench.sh " + " ".join(given)
    doc = report.document(results, machine, setup, command)
    (RESULTS_DIR / "latest.md").write_text(doc)
    if not args.quick and set(only) == set(SCENARIOS):
        # Sections other benches append (from KEPT_SECTION on, e.g. bench/dedupe.py's) are kept.
        kept = COMMITTED.read_text().partition(KEPT_SECTION)
        COMMITTED.write_text(doc + (f"\n{KEPT_SECTION}{kept[2]}" if kept[1] else ""))
    print(report.table(results))
    print()
    print("Set-up: " + "; ".join(setup) + ".")
    log(f"done in {time.perf_counter() - started:.0f} s; {Path(RESULTS_DIR / 'latest.md').relative_to(env.ROOT)}"
        + (f" and {COMMITTED.relative_to(env.ROOT)}" if not args.quick and set(only) == set(SCENARIOS) else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
