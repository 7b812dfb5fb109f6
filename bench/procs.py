"""The web server and the Celery worker as subprocesses, and their memory."""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import time
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
    #: Sync workers: the accept path is CPU work between short database round trips.
    workers: int = max(2, 2 * CPUS)
    threads: int = 1

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


def start_web(config: WebConfig, port: int, log: Path) -> Process:
    argv = [
        str(VENV_BIN / "gunicorn"), os.environ.get("BENCH_WSGI_APP", "openplatform.wsgi:application"),
        "--bind", f"127.0.0.1:{port}", "--workers", str(config.workers),
        "--log-level", "warning", "--backlog", "2048", *os.environ.get("BENCH_GUNICORN_EXTRA", "").split(),
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


def start_workers(config: WorkerConfig, log: Path) -> list[Process]:
    from openplatform.celery import app

    workers = []
    for i in range(config.processes):
        argv = [
            str(VENV_BIN / "celery"), "-A", "openplatform", "worker",
            "--pool", config.pool, "--concurrency", str(config.concurrency), "--loglevel", "WARNING",
            # Uploads are routed to their own queue (settings.CELERY_TASK_ROUTES); anything else the
            # bench sends goes to the default one.
            "-Q", "uploads,celery",
            "--without-gossip", "--without-mingle", "--without-heartbeat", "-n", f"bench{i}-{os.getpid()}@%h",
        ]
        workers.append(Process(f"celery worker {i}", argv, log))
    deadline = time.monotonic() + 60
    while True:
        for worker in workers:
            worker.check()
        if len(app.control.ping(timeout=0.5)) >= len(workers):
            return workers
        if time.monotonic() > deadline:
            for worker in workers:
                worker.stop()
            raise RuntimeError("the Celery workers did not answer a ping within 60 s")


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


def _cpu(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK  # utime + stime, every thread included


def _pids_matching(needle: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if needle in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


class CpuMeter:
    """CPU seconds used by each part of the system (user + system time, read from /proc)."""

    def __init__(self, parts: dict[str, tuple[int, ...] | list[int] | str]) -> None:
        #: name -> root pids (with their descendants), a list of pids (alone), or a string found in the
        #: command line of the processes
        self.parts = parts

    def sample(self) -> dict[str, float]:
        out = {}
        for name, what in self.parts.items():
            if isinstance(what, tuple):
                pids = [d for root in what for d in _descendants(root)]
            elif isinstance(what, list):
                pids = what
            else:
                pids = _pids_matching(what)
            out[name] = sum(_cpu(p) for p in pids)
        out["other processes"] = _machine_busy() - sum(out.values())
        return out

    @staticmethod
    def per_item_ms(before: dict[str, float], after: dict[str, float], items: int) -> dict[str, float]:
        return {k: (after[k] - before[k]) * 1000 / items for k in before}


def _machine_busy() -> float:
    """CPU seconds every core of the machine has spent busy since boot (/proc/stat)."""
    user, nice, system, _idle, _iowait, irq, softirq = (
        int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:8]
    )
    return (user + nice + system + irq + softirq) / _CLK_TCK
