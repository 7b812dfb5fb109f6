"""The web server and the Celery workers as subprocesses, their memory, and the CPU of every part of the machine."""

from __future__ import annotations

import ctypes
import os
import shlex
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import requests

from bench.env import ROOT, VENV_BIN


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


CPUS = os.cpu_count() or 1


@dataclass(frozen=True)
class WebConfig:
    #: What deploy runs (deploy/Procfile, deploy/Dockerfile: WEB_CONCURRENCY=1, --threads 4): a gthread
    #: worker, whose connections stay open between requests (keep-alive; a sync worker closes each one).
    #: One process: gunicorn leaves a connection with the process that accepted it, and a burst of new
    #: connections mostly goes to one of several (2 x 2 here: 2/18 to 5/15 of the 20 clients), whose
    #: requests then wait about 3 times longer (docs/architecture.md §7, "Connections are shared unevenly").
    #: bench --quick on 2 cores, 2026-11-30, web CPU per upload and uploads/s end to end: 4 sync workers
    #: 11.9 ms, 62/s; 3 x 4 threads 9.7-10.4 ms, 70-78/s; 3 x 2 9.2 ms, 82/s; 2 x 2 8.4 ms, 85/s.
    workers: int = 1
    threads: int = 4

    def describe(self) -> str:
        kind = "sync" if self.threads == 1 else f"gthread x {self.threads} threads"
        return f"gunicorn {self.workers} workers ({kind})"


@dataclass(frozen=True)
class WorkerConfig:
    #: The upload task mostly waits on WeChat: threads share one process (and its connections) cheaply.
    pool: str = "threads"
    concurrency: int = 20
    #: A threads pool runs Python on one core at a time (the GIL): one worker process per two cores.
    processes: int = max(1, CPUS // 2)

    def describe(self) -> str:
        count = f"{self.processes} x " if self.processes > 1 else ""
        return f"{count}celery worker --pool {self.pool} --concurrency {self.concurrency}"


try:
    _LIBC = ctypes.CDLL("libc.so.6", use_errno=True)  # loaded here: the child must not import anything
except OSError:
    _LIBC = None


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the bench dies, however it dies (Linux), so nothing is left running."""
    if _LIBC is not None:
        _LIBC.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Process:
    """A subprocess in its own process group, so stop() reaches its children (gunicorn, prefork)."""

    def __init__(self, name: str, argv: list[str], log: Path) -> None:
        self.name = name
        self.node = ""  # a Celery worker's node name (start_celery)
        log.parent.mkdir(parents=True, exist_ok=True)
        self._log = log.open("ab")
        self.proc = subprocess.Popen(  # noqa: S603 (our own fixed argv)
            argv, cwd=ROOT, env=os.environ.copy(), stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=_die_with_parent,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def check(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; see {self._log.name}")

    def stop(self, timeout: float = 20) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()


#: Flags of deploy/Procfile's web command the bench leaves out: the bind (its own port) and the recycling
#: (--max-requests: a process replaced between two CPU samples would take its last CPU with it; at deploy's
#: 20,000 requests a replacement's 0.6 s of CPU is 0.03 ms per request).
_NOT_DEPLOYS = {"--bind", "--max-requests", "--max-requests-jitter"}  # each takes one value


def deploy_web_flags() -> list[str]:
    """The flags deploy/Procfile runs gunicorn with (its config file, with the access log, and the
    timeouts), but those in _NOT_DEPLOYS."""
    line = next(line for line in (ROOT / "deploy" / "Procfile").read_text().splitlines() if line.startswith("web:"))
    argv = shlex.split(line.removeprefix("web:"))
    if argv[:2] != ["gunicorn", "openplatform.wsgi"]:
        raise RuntimeError(f"deploy/Procfile's web command is not gunicorn openplatform.wsgi: {argv[:2]}")
    flags, rest = [], iter(argv[2:])
    for arg in rest:
        name = arg.split("=", 1)[0]
        if name in _NOT_DEPLOYS:
            if "=" not in arg:
                next(rest)
            continue
        flags.append(arg)
    return flags


def start_web(config: WebConfig, port: int, log: Path) -> Process:
    argv = [
        str(VENV_BIN / "gunicorn"), os.environ.get("BENCH_WSGI_APP", "openplatform.wsgi:application"),
        *deploy_web_flags(),  # deploy's (its access log goes to the log file), then the bench's own
        "--bind", f"127.0.0.1:{port}", "--workers", str(config.workers), "--backlog", "2048",
        *os.environ.get("BENCH_GUNICORN_EXTRA", "").split(),
    ]
    if config.threads > 1:
        argv += ["--worker-class", "gthread", "--threads", str(config.threads)]
    web = Process("gunicorn", argv, log)
    deadline = time.monotonic() + 60
    while True:
        web.check()
        try:
            if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return web
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            web.stop()
            raise RuntimeError("gunicorn did not answer /healthz within 60 s")
        time.sleep(0.2)


#: deploy/Procfile's `--prefetch-multiplier` for the upload worker.
UPLOAD_PREFETCH_MULTIPLIER = 2


def start_workers(config: WorkerConfig, log: Path, *, queues: str = "uploads,celery", tag: str = "bench") -> list[Process]:
    """`config.processes` Celery workers of the application, answering a ping before this returns.

    Uploads are routed to their own queue (settings.CELERY_TASK_ROUTES); anything else the bench sends
    goes to the default one. A scenario that must enqueue while nothing consumes starts its worker on an
    idle queue and adds `uploads` later (`add_consumer`)."""
    from openplatform.celery import app

    workers = []
    for i in range(config.processes):
        argv = [
            str(VENV_BIN / "celery"), "-A", "openplatform", "worker",
            "--pool", config.pool, "--concurrency", str(config.concurrency), "--loglevel", "WARNING",
            # As deploy runs the upload worker (deploy/Procfile): two messages per thread at hand.
            "--prefetch-multiplier", str(UPLOAD_PREFETCH_MULTIPLIER),
            "-Q", queues, "--without-gossip", "--without-mingle", "--without-heartbeat",
        ]
        workers.append(start_celery(f"celery worker {tag}{i}", argv, log, f"{tag}{i}-{os.getpid()}"))
    wait_for_ping(app, workers)
    return workers


def start_celery(name: str, argv: list[str], log: Path, node: str) -> Process:
    """A `celery worker` with the node name `node@<host>` (so a ping or a control command can address it)."""
    proc = Process(name, [*argv, "-n", f"{node}@%h"], log)
    proc.node = f"{node}@{socket.gethostname()}"
    return proc


def wait_for_ping(app, workers: list[Process], timeout: float = 60) -> None:
    """Until every worker answers a ping addressed to it (other workers on the broker do not count)."""
    deadline = time.monotonic() + timeout
    pending = {w.node for w in workers}
    while pending:
        for worker in workers:
            worker.check()
        for reply in app.control.ping(destination=sorted(pending), timeout=0.5):
            pending -= set(reply)
        if pending and time.monotonic() > deadline:
            for worker in workers:
                worker.stop()
            raise RuntimeError(f"Celery worker(s) {sorted(pending)} did not answer a ping within {timeout:.0f} s")


def _descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                todo += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
    return found


def rss_mb(*roots: int) -> float:
    """VmRSS of processes and all their descendants (a prefork pool's children count too)."""
    total_kb = 0
    for p in [d for root in roots for d in _descendants(root)]:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kb += int(line.split()[1])
        except OSError:
            continue
    return total_kb / 1024


_CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> tuple[int, float] | None:
    """(start time in ticks, CPU seconds: utime + stime, every thread included), or None when gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[19]), (int(fields[11]) + int(fields[12])) / _CLK_TCK


def _cmdlines() -> dict[int, str]:
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
    return found


#: PostgreSQL's own background processes: their work (WAL, checkpoints) is caused by the bench's writes.
_PG_BACKGROUND = ("checkpointer", "background writer", "walwriter", "autovacuum launcher",
                  "logical replication launcher", "stats collector", "archiver")


@dataclass(frozen=True)
class Roots:
    """A CpuMeter part whose processes change (the workers are restarted): root pids read at each sample."""

    pids: Callable[[], Iterable[int]]


@dataclass(frozen=True)
class Matching:
    """A CpuMeter part: the processes whose command line satisfies `predicate`."""

    predicate: Callable[[str], bool]


def postgres_processes(database: str) -> Matching:
    """The backends connected to `database` (autovacuum on it included) and the server's background
    processes (their work, WAL and checkpoints, is caused by the bench's writes). Backends of other
    databases are someone else's: they count as other processes."""

    def match(cmdline: str) -> bool:
        if not cmdline.startswith("postgres: "):
            return False
        return database in cmdline.split() or any(kind in cmdline for kind in _PG_BACKGROUND)

    return Matching(match)


Part = tuple[int, ...] | list[int] | str | Roots | Matching
KERNEL = "kernel"


class CpuMeter:
    """CPU seconds used by each part of the system (user + system time, read from /proc), cumulative.

    A part is a tuple of root pids (with their descendants), a list of pids (alone), a string found in
    the command line of the processes, or a `Roots` / `Matching`. A process that has exited keeps the CPU
    it had at the last sample: sample right before stopping one (World.stop_workers does).
    Two parts are added: `kernel`, the kernel's threads (softirq work, mostly the loopback traffic of the
    parts, and writeback), and `other processes`, the machine's busy time (/proc/stat) minus everything
    above: whatever else the machine runs (this kernel charges softirq time to the task it interrupts).
    """

    def __init__(self, parts: dict[str, Part]) -> None:
        # kthreadd (pid 2) and its children are the kernel's threads.
        self.parts = {**parts, KERNEL: (2,)}
        self._seen: dict[str, dict[tuple[int, int], float]] = {name: {} for name in self.parts}

    @staticmethod
    def _pids(what: Part, cmdlines: dict[int, str]) -> list[int]:
        if isinstance(what, Roots):
            what = tuple(what.pids())
        if isinstance(what, tuple):
            return [d for root in what for d in _descendants(root)]
        if isinstance(what, list):
            return what
        if isinstance(what, Matching):
            return [pid for pid, cmd in cmdlines.items() if what.predicate(cmd)]
        return [pid for pid, cmd in cmdlines.items() if what in cmd]

    def sample(self) -> dict[str, float]:
        cmdlines = _cmdlines()
        busy = _machine_times()["busy"]
        out = {}
        for name, what in self.parts.items():
            seen = self._seen[name]
            for pid in self._pids(what, cmdlines):
                stat = _stat(pid)
                if stat is not None:
                    seen[(pid, stat[0])] = stat[1]
            out[name] = sum(seen.values())
        out["other processes"] = busy - sum(out.values())
        return out

    @staticmethod
    def per_item_ms(before: dict[str, float], after: dict[str, float], items: int) -> dict[str, float]:
        return {k: (after[k] - before[k]) * 1000 / items for k in before}


def _machine_times() -> dict[str, float]:
    """CPU seconds every core of the machine has spent busy since boot, and stolen by the hypervisor."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = (
        int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
    )
    return {"busy": (user + nice + system + irq + softirq) / _CLK_TCK, "steal": steal / _CLK_TCK}


def machine_busy_cores(seconds: float) -> float:
    """How many cores the whole machine kept busy over the next `seconds` (the caller sleeping)."""
    before = _machine_times()["busy"]
    time.sleep(seconds)
    return (_machine_times()["busy"] - before) / seconds


def stolen_seconds() -> float:
    return _machine_times()["steal"]
