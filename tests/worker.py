"""Real Celery worker processes (and their own Redis broker) for end-to-end tests.

Started the way deploy starts them (deploy/Procfile, deploy/compose.yaml; tests/test_deploy.py checks
that the arguments agree): `celery_worker` (module scope) is the uploads worker, `celery -A openplatform
worker --pool threads -Q uploads --concurrency 2`; `jobs_worker` is the worker for every other task,
`--pool prefork -Q celery`, for the tests that need one. Each runs against the test database, the
in-process simulator and a Redis broker, is waited for until it says it is ready, and is stopped
afterwards. The broker is a private `redis-server` on a free port when the binary is installed (so a
test may stop and restart it without touching anyone else's Redis), else TEST_REDIS_URL, purged first.
The test process's own Celery app is pointed at the same broker meanwhile.

A test module may override the module-scoped `worker_env` (extra environment for the worker, e.g. a
shorter lease) and `worker_concurrency` (the uploads worker's threads) fixtures. The workers' database
connections carry the application name `WORKER_DB_APPLICATION_NAME`, so a test can find (and terminate)
exactly those backends: `terminate_worker_db_connections()`. `CeleryWorker.kill()` SIGKILLs the whole
worker (a crash, the OOM killer) and `.start()` or `.ensure_running()` (the supervisor) starts a fresh
one; `RedisBroker.stop(keep_data=True)` saves the broker's data first, so a restart loses nothing (the
default loses every message, as a broker without persistence does).

Loaded as fixtures through tests/fixtures.py; tests using them are marked `@pytest.mark.worker`.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest
from kombu import pools as kombu_pools

ROOT = Path(__file__).resolve().parent.parent
CELERY = Path(sys.executable).with_name("celery")
IN_CI = os.environ.get("CI") == "true"

#: Small on purpose: a lost worker's lease runs out quickly, retries come back quickly.
WORKER_ENV = {
    "UPLOAD_LEASE_SECONDS": "12",
    "UPLOAD_RETRY_BASE_SECONDS": "0.2",
    "UPLOAD_RETRY_MAX_SECONDS": "1",
    "UPLOAD_MAX_ATTEMPTS": "6",
    "WECHAT_HTTP_TIMEOUT": "4",
    "WECHAT_HTTP_MAX_RETRIES": "1",
    "CELERY_VISIBILITY_TIMEOUT": "30",
}


#: How deploy runs its two workers (deploy/Procfile, deploy/compose.yaml, Procfile.dev): uploads on the
#: threads pool, every other task on the default queue on a prefork pool (docs/architecture.md §4).
UPLOADS_WORKER_ARGS = ("--pool", "threads", "--prefetch-multiplier", "2", "-Q", "uploads")
JOBS_WORKER_ARGS = ("--pool", "prefork", "-Q", "celery")
#: Every queue a worker of the tests consumes, purged before a worker starts.
QUEUES = ("uploads", "celery")

#: `application_name` of the worker's PostgreSQL connections (pg_stat_activity), so tests can pick them out.
WORKER_DB_APPLICATION_NAME = "e2e-celery-worker"


def _require(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"{reason} (required in CI)", pytrace=False)
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, *, timeout: float, interval: float = 0.05, message: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {message}")
        time.sleep(interval)


class RedisBroker:
    """A private redis-server this fixture starts, stops and restarts on one port."""

    def __init__(self, port: int, logfile: Path) -> None:
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self.logfile = logfile
        self.can_restart = True
        self._proc: subprocess.Popen | None = None
        self._dump = logfile.with_name(f"dump-{port}.rdb")  # written only by stop(keep_data=True)

    def start(self) -> None:
        if self._proc is not None:
            return
        with self.logfile.open("ab") as log:  # the child keeps its own copy of the descriptor
            self._proc = subprocess.Popen(
                ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--daemonize", "no",
                 "--dir", str(self._dump.parent), "--dbfilename", self._dump.name],
                stdout=log, stderr=subprocess.STDOUT,
            )
        wait_until(self.answers, timeout=10, message=f"redis-server on port {self.port}")

    def stop(self, *, keep_data: bool = False) -> None:
        """Stop the server. By default its data is gone (no persistence: every queued and unacked
        message is lost); with `keep_data` it saves a snapshot first that the next start() loads."""
        if self._proc is None:
            return
        if keep_data:
            import redis

            try:
                redis.Redis(port=self.port, socket_connect_timeout=2).shutdown(save=True)
            except redis.ConnectionError:
                pass  # the server closes the connection as it exits
        else:
            self._dump.unlink(missing_ok=True)
            self._proc.terminate()
        self._proc.wait(timeout=10)
        self._proc = None

    def answers(self) -> bool:
        import redis

        try:
            return bool(redis.Redis(port=self.port, socket_connect_timeout=0.5).ping())
        except redis.RedisError:
            return False


class SharedBroker:
    """TEST_REDIS_URL, when no redis-server binary is at hand: usable, but not ours to stop."""

    can_restart = False

    def __init__(self, url: str) -> None:
        self.url = url

    def stop(self, *, keep_data: bool = False) -> None:
        pass


class CeleryWorker:
    def __init__(self, env: dict[str, str], logfile: Path, concurrency: int = 2,
                 args: tuple[str, ...] = UPLOADS_WORKER_ARGS, name: str = "uploads") -> None:
        self.logfile = logfile
        self._env, self._concurrency, self._args, self._name = env, concurrency, args, name
        self._log = logfile.open("wb")
        #: How many times ensure_running() had to start a fresh worker, and when the latest one started.
        self.restarts = 0
        self.started_at: datetime | None = None
        self.start()

    def start(self) -> None:
        """Start the worker process (again, after kill(): a fresh worker, its log appended)."""
        if self._log.closed:
            self._log = self.logfile.open("ab")
        self._readies_before = self.log().count(" ready.")  # the log is appended to across starts
        self.started_at = datetime.now(UTC)
        self.proc = subprocess.Popen(
            [str(CELERY), "-A", "openplatform", "worker", "-l", "info", *self._args,
             "--concurrency", str(self._concurrency), "-n", f"{self._name}-e2e-{os.getpid()}@%h",
             "--without-gossip", "--without-mingle", "--without-heartbeat"],
            cwd=ROOT, env=self._env, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped as a whole, and only it
        )

    def kill(self) -> int:
        """SIGKILL the whole worker (main process and pool; on the threads pool, one process), as a crash
        or the OOM killer would: no warm shutdown, no acks, no results. Returns its exit status."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return self.proc.wait(timeout=10)

    def ensure_running(self) -> bool:
        """Act as the process supervisor production has (compose `restart:`, systemd): start a fresh
        worker if this one has exited (killed, out of memory, or dead on a broker reconnect, a Celery
        bug that supervisors paper over). Returns True when it had to restart."""
        if self.proc.poll() is None:
            return False
        self.restarts += 1
        self.start()
        self.wait_ready()
        return True

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.logfile.read_text(errors="replace")

    def wait_ready(self, timeout: float = 60) -> None:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"the worker exited with {self.proc.returncode}:\n{self.log()[-4000:]}")
            return self.log().count(" ready.") > self._readies_before

        wait_until(ready, timeout=timeout, interval=0.1, message="the Celery worker to be ready")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # warm shutdown: running tasks finish, reserved ones go back
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # whatever of its group is left
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=10)
        self._log.close()


@contextmanager
def app_broker(url: str) -> Iterator[None]:
    """Point this process's Celery app at `url` (its connection pools are rebuilt for it), then back."""
    from openplatform.celery import app

    def reset_pools() -> None:
        # kombu keeps pools in a process-wide registry keyed by broker URL: closing only the app's pool
        # would leave that closed pool registered, and the next switch back to its URL would get it
        # again ("Acquire on closed pool"). Close and forget them all.
        kombu_pools.reset()
        app._pool = None
        amqp = app.__dict__.get("amqp")
        if amqp is not None:
            amqp._producer_pool = None

    # Celery reads CELERY_BROKER_URL from the environment before its configuration (and tests/settings.py
    # put TEST_REDIS_URL there), so the variable is what has to change.
    previous = os.environ.get("CELERY_BROKER_URL")
    os.environ["CELERY_BROKER_URL"] = url
    reset_pools()
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("CELERY_BROKER_URL", None)
        else:
            os.environ["CELERY_BROKER_URL"] = previous
        reset_pools()


def _database_url() -> str:
    from django.db import connection

    s = connection.settings_dict
    auth = s["USER"] + (f":{s['PASSWORD']}" if s.get("PASSWORD") else "")
    return (f"postgres://{auth}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"
            f"?application_name={WORKER_DB_APPLICATION_NAME}")


def terminate_worker_db_connections() -> int:
    """Drop every PostgreSQL connection of the worker (as a failover or a restarted server would): how many."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name = %s AND pid <> pg_backend_pid()",
            [WORKER_DB_APPLICATION_NAME],
        )
        return cursor.fetchone()[0]


@pytest.fixture(scope="module")
def worker_env() -> dict[str, str]:
    """Extra environment for the worker, over WORKER_ENV: override in a test module to change it."""
    return {}


@pytest.fixture(scope="module")
def worker_concurrency() -> int:
    """The uploads worker's threads: override in a test module to change it."""
    return 2


@pytest.fixture(scope="module")
def worker_broker(tmp_path_factory) -> Iterator[RedisBroker | SharedBroker]:
    if not os.environ.get("TEST_REDIS_URL"):
        _require("needs Redis: run `make test` with Redis on 127.0.0.1:6379 (or TEST_REDIS_URL)")
    if shutil.which("redis-server") is None:
        broker = SharedBroker(os.environ["TEST_REDIS_URL"])
    else:
        broker = RedisBroker(free_port(), tmp_path_factory.mktemp("broker") / "redis.log")
        broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def _purge(app) -> None:
    """Drop whatever earlier runs or tests left in the workers' queues."""
    with app.connection_for_write() as conn:
        for queue in QUEUES:
            conn.default_channel.queue_purge(queue)


@contextmanager
def _running_worker(
    simulator_server, worker_broker, worker_env, logdir: Path, **kwargs
) -> Iterator[CeleryWorker]:
    from django.db import connection

    if connection.vendor != "postgresql":
        _require("needs PostgreSQL: run `make test` with PostgreSQL on 127.0.0.1:5432 (or TEST_DATABASE_URL)")
    if not CELERY.exists():
        _require(f"needs the celery command at {CELERY}")
    env = {
        **os.environ,
        **WORKER_ENV,
        **worker_env,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "PYTHONPATH": str(ROOT),
        "DATABASE_URL": _database_url(),
        "CELERY_BROKER_URL": worker_broker.url,
        "WECHAT_API_BASE": simulator_server.url,
        "WECHAT_MP_BASE": simulator_server.url,
        "WECHAT_OPEN_BASE": simulator_server.url,
    }
    with app_broker(worker_broker.url):
        from openplatform.celery import app

        _purge(app)
        worker = CeleryWorker(env, logdir / "celery.log", **kwargs)
        try:
            worker.wait_ready()
            yield worker
        finally:
            worker.stop()


@pytest.fixture(scope="module")
def celery_worker(
    django_db_setup, simulator_server, worker_broker, worker_env, worker_concurrency, tmp_path_factory
) -> Iterator[CeleryWorker]:
    """The uploads worker (threads pool, queue `uploads`) on the test database, the simulator and
    `worker_broker`; stopped afterwards."""
    with _running_worker(simulator_server, worker_broker, worker_env, tmp_path_factory.mktemp("worker"),
                         concurrency=worker_concurrency, args=UPLOADS_WORKER_ARGS, name="uploads") as worker:
        yield worker


@pytest.fixture(scope="module")
def jobs_worker(
    django_db_setup, simulator_server, worker_broker, worker_env, tmp_path_factory
) -> Iterator[CeleryWorker]:
    """The worker for every other task (prefork pool, the default queue `celery`), as deploy runs it."""
    with _running_worker(simulator_server, worker_broker, worker_env, tmp_path_factory.mktemp("jobs"),
                         concurrency=2, args=JOBS_WORKER_ARGS, name="jobs") as worker:
        yield worker


@pytest.fixture(autouse=True)
def _supervise_celery_worker(request):
    """Before each test that uses the module's workers, restart one an earlier test left dead."""
    for name in ("celery_worker", "jobs_worker"):
        if name in request.fixturenames:
            request.getfixturevalue(name).ensure_running()
    yield
