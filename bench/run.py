"""`make bench`: every bar of docs/architecture.md §7 and issue 10 measured against real processes, one table.

    .venv/bin/python -m bench.run            # full sizes (about ten minutes)
    .venv/bin/python -m bench.run --quick    # smaller sizes, one round, a few minutes
    .venv/bin/python -m bench.run --only throughput,drain --web-workers 3 --pool threads --concurrency 20

The table goes to stdout and to bench/results/latest.md (git-ignored, with the process logs and the SQL
of the query measurements); a full run also writes bench/RESULTS.md (committed). Progress goes to stderr.

Processes: gunicorn and the Celery workers (started and stopped per scenario where a scenario needs its
own: the drain, the two clients), bench/baseline.py's worker (the minimal task, during `throughput`), the
WeChat simulator (bench/simulator.py, a process of its own) and this process (the load clients).

The machine's load: before anything starts, the 1-minute load average and how busy the machine is over
a 5 s probe; for each scenario, the load average before and after and the CPU used meanwhile by processes
that are not the bench's (`other processes`) or stolen by the hypervisor. Over 10 % of one core in the
probe or during a scenario, and that scenario's performance rows say "no verdict (loaded machine)"
(report.py, LOADED_CORES).

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
from bench.procs import (
    CpuMeter,
    Roots,
    WebConfig,
    WorkerConfig,
    free_port,
    machine_busy_cores,
    postgres_processes,
    start_web,
    stolen_seconds,
)

RESULTS_DIR = env.ROOT / "bench" / "results"
COMMITTED = env.ROOT / "bench" / "RESULTS.md"
KEPT_SECTION = "## Other benches"
SCENARIOS = ("queries", "throughput", "latency", "two_clients", "drain", "single_flight", "memory", "day",
             "refresh")
PROBE_SECONDS = 5.0


@dataclass(frozen=True)
class Sizes:
    uploads: int = 300  # per throughput round, for each of ours, the direct loop and the minimal task
    rounds: int = 3  # of the key figures (the median is reported)
    latency_requests: int = 1000
    two_clients_uploads: int = 200
    drain_uploads: int = 2000
    memory_uploads: int = 5000
    memory_warmup: int = 500
    authorizers: int = 10_000
    history: tuple[int, ...] = (10, 100_000)


QUICK = Sizes(uploads=200, rounds=1, latency_requests=400, two_clients_uploads=100, drain_uploads=500,
              memory_uploads=1000, memory_warmup=200, authorizers=2_000, history=(10, 20_000))


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smaller sizes and one round (a few minutes)")
    p.add_argument("--only", default="", help=f"comma-separated subset of {','.join(SCENARIOS)}")
    p.add_argument("--uploads", type=int, help="uploads per throughput round")
    p.add_argument("--drain-uploads", type=int, help="queued uploads per drain round")
    p.add_argument("--rounds", type=int, help="rounds of the key figures (the median is reported)")
    p.add_argument("--clients", type=int, default=20, help="concurrent clients")
    p.add_argument("--web-workers", type=int, default=WebConfig.workers)
    p.add_argument("--web-threads", type=int, default=WebConfig.threads)
    p.add_argument("--pool", default=WorkerConfig.pool, choices=["threads", "prefork", "solo", "gevent", "eventlet"],
                   help="the main workers' pool and the two-client scenario's (the drain uses an I/O pool)")
    p.add_argument("--concurrency", type=int, default=WorkerConfig.concurrency, help="worker concurrency")
    p.add_argument("--worker-processes", type=int, default=WorkerConfig.processes, help="celery worker instances")
    return p.parse_args(argv)


def checkpoints() -> int | None:
    """PostgreSQL's checkpoints so far (timed and requested), or None if they cannot be read. A checkpoint
    inside a scenario is PostgreSQL CPU (the checkpointer's writes, then full-page images in the WAL)
    that a scenario without one does not pay: the table says when one happened."""
    from django.db import DatabaseError, connection

    for query in ("SELECT num_timed + num_requested FROM pg_stat_checkpointer",  # PostgreSQL 17 and later
                  "SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter"):
        try:
            with connection.cursor() as cursor:
                cursor.execute(query)
                return int(cursor.fetchone()[0])
        except DatabaseError:  # the other server version's view
            continue
    return None


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    # SIGTERM unwinds like Ctrl-C, so the web server and workers are stopped in `finally`.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    sizes = QUICK if args.quick else Sizes()
    given_sizes = (("uploads", args.uploads), ("rounds", args.rounds), ("drain_uploads", args.drain_uploads))
    sizes = Sizes(**{**vars(sizes), **{k: v for k, v in given_sizes if v is not None}})
    only = [s.strip() for s in args.only.split(",") if s.strip()] or list(SCENARIOS)
    unknown = set(only) - set(SCENARIOS)
    if unknown:
        log(f"unknown scenario(s) {sorted(unknown)}; choose from {', '.join(SCENARIOS)}")
        return 2
    web_config = WebConfig(args.web_workers, args.web_threads)
    worker_config = WorkerConfig(args.pool, args.concurrency, args.worker_processes)
    io_pool = args.pool if args.pool in ("threads", "gevent", "eventlet") else "threads"
    started = time.perf_counter()

    # The machine before the bench starts anything: nothing of ours runs during the probe.
    machine_load = {"load_before": os.getloadavg()[0], "probe_cores": machine_busy_cores(PROBE_SECONDS),
                    "probe_seconds": PROBE_SECONDS}
    log(f"before starting: 1-minute load average {machine_load['load_before']:.2f}, the machine busy "
        f"{machine_load['probe_cores']:.2f} cores over {PROBE_SECONDS:.0f} s")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)

    # The simulator's URL goes into the environment the settings (and subprocesses) read.
    from bench.world import World, sample_image, seed, start_simulator_process

    sim_port = free_port()
    env.configure_environ(simulator_url=f"http://127.0.0.1:{sim_port}")
    sim, control = start_simulator_process(sim_port, RESULTS_DIR / "simulator.log")
    world = None
    results: dict = {}
    try:
        env.reset_database()
        env.reset_redis()
        env.setup_django()
        log(f"database {env.database_name()} and Redis {env.REDIS_URL} reset; simulator on {sim.url} (pid {sim.pid})")

        from bench import scenarios

        world = World(sim=sim, control=control, image=sample_image(), logs=RESULTS_DIR, worker_config=worker_config)
        world.cpu = CpuMeter({
            "web": Roots(lambda: (world.web.pid,) if world.web else ()),
            "worker": Roots(lambda: tuple(w.pid for w in world.workers)),
            "PostgreSQL": postgres_processes(env.database_name()),
            "Redis": "redis-server",
            "minimal task worker": Roots(lambda: (world.baseline.pid,) if world.baseline else ()),
            "simulator": (sim.pid,),
            "bench process": [os.getpid()],
        })
        seed(world)

        def measure(name: str, run) -> None:
            """Run a scenario; keep its result with the machine's load meanwhile."""
            checkpoints0 = checkpoints()
            load0, cpu0, steal0, t0 = os.getloadavg()[0], world.cpu.sample(), stolen_seconds(), time.perf_counter()
            result = run()
            seconds = time.perf_counter() - t0
            cpu1 = world.cpu.sample()
            checkpoints1 = checkpoints()
            result["load"] = {
                "before": load0, "after": os.getloadavg()[0], "seconds": seconds,
                "other_cores": (cpu1["other processes"] - cpu0["other processes"]) / seconds,
                "steal_cores": (stolen_seconds() - steal0) / seconds,
                "checkpoints": None if None in (checkpoints0, checkpoints1) else checkpoints1 - checkpoints0,
            }
            results[name] = result
            lo = result["load"]
            log(f"{name}: {seconds:.0f} s; 1-minute load {lo['before']:.1f} -> {lo['after']:.1f}; other processes "
                f"{lo['other_cores']:.2f} cores, stolen {lo['steal_cores']:.2f}; PostgreSQL checkpoints {lo['checkpoints']}")

        if "queries" in only:  # in this process, before the worker runs: its messages are dropped
            measure("queries", lambda: scenarios.queries(world, sizes=sizes.history))
            env.reset_redis()
        port = free_port()
        world.web_url = f"http://127.0.0.1:{port}"
        world.web = start_web(web_config, port, RESULTS_DIR / "gunicorn.log")
        world.start_workers(worker_config)
        log(f"{web_config.describe()} on {world.web_url}; {worker_config.describe()}")
        if "throughput" in only:
            measure("throughput", lambda: scenarios.throughput(
                world, n=sizes.uploads, concurrency=args.clients, rounds=sizes.rounds))
        if "latency" in only:
            measure("latency", lambda: scenarios.latency(
                world, n=sizes.latency_requests, concurrency=args.clients, rounds=sizes.rounds))
        if "two_clients" in only:
            measure("two_clients", lambda: scenarios.two_clients(
                world, n=sizes.two_clients_uploads, rounds=sizes.rounds, pool=args.pool))
        if "drain" in only:
            measure("drain", lambda: scenarios.drain(world, n=sizes.drain_uploads, rounds=sizes.rounds, pool=io_pool))
        if "single_flight" in only:
            measure("single_flight", lambda: scenarios.single_flight(world, n=64))
        if "memory" in only:
            measure("memory", lambda: scenarios.worker_memory(world, n=sizes.memory_uploads, warmup=sizes.memory_warmup))
        if "day" in only:  # moves WeChat's clock a day ahead: after everything that uploads through the worker
            measure("day", lambda: scenarios.simulated_day(world))
        if "refresh" in only:
            measure("refresh", lambda: scenarios.scheduled_refresh(world, n=sizes.authorizers))
    finally:
        if world is not None:
            for proc in [*world.workers, world.baseline, world.web]:
                if proc is not None:
                    proc.stop()
        control.close()
        sim.stop()
        from django.db import connections

        connections.close_all()

    from bench import report

    machine = env.versions()
    machine_load["load_after"] = os.getloadavg()[0]
    setup = [
        web_config.describe(),
        f"{worker_config.describe()} (the main workers; the drain and the two clients run their own)",
        f"image {len(world.image):,} bytes (640x480 JPEG)",
        f"{args.clients} clients",
        "PostgreSQL and Redis on localhost, the simulator in a process of its own, the clients in the bench process",
        f"whole run {time.perf_counter() - started:.0f} s",
    ]
    given = argv if argv is not None else sys.argv[1:]
    command = "make bench" if not given else "bash scripts/bench.sh " + " ".join(given)
    doc = report.document(results, machine, setup, command, machine_load)
    (RESULTS_DIR / "latest.md").write_text(doc)
    full = not args.quick and set(only) == set(SCENARIOS)
    if full:
        # Sections other benches append (from KEPT_SECTION on, e.g. bench/dedupe.py's) are kept.
        kept = COMMITTED.read_text().partition(KEPT_SECTION)
        COMMITTED.write_text(doc + (f"\n{KEPT_SECTION}{kept[2]}" if kept[1] else ""))
    print(report.machine_line(results, machine_load))
    print()
    print(report.table(results, machine_load))
    print()
    print("Set-up: " + "; ".join(setup) + ".")
    log(f"done in {time.perf_counter() - started:.0f} s; {Path(RESULTS_DIR / 'latest.md').relative_to(env.ROOT)}"
        + (f" and {COMMITTED.relative_to(env.ROOT)}" if full else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
