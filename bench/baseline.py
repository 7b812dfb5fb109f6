"""The baseline of issue 10 (a): a minimal Celery task that posts bytes kept in Redis to uploadimg.

    celery -A bench.baseline worker --pool threads --concurrency 20 -Q baseline

What the service does per upload, minus everything it keeps: the producer (the bench process) SETs the
image bytes under a key of their own in Redis and sends the task; the task GETs them and posts them
with `requests` (one Session for the process) to the simulator's uploadimg with a valid access token.
No record, no lease, no retry, no result; Celery's defaults otherwise (ignore_result, a prefetch of 1
as ours). The bench's CPU per upload is reported as a multiple of this one's (report.py).

The module imports neither Django nor the application: its own Celery app on the bench's Redis db
(BENCH_REDIS_URL), queue `baseline`.
"""

from __future__ import annotations

import os
from pathlib import Path

import redis
import requests
from celery import Celery
from requests.adapters import HTTPAdapter

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
QUEUE = "baseline"

# Not the current app: in the bench process, the application's shared tasks must keep sending through
# openplatform.celery (its routes and settings), not through this one.
app = Celery("bench_baseline", broker=REDIS_URL, set_as_current=False)
app.conf.update(
    task_default_queue=QUEUE,
    task_ignore_result=True,
    task_serializer="json",
    accept_content=["json"],
    worker_prefetch_multiplier=1,
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)

_redis = redis.Redis.from_url(REDIS_URL)
_session = requests.Session()
# One pooled connection per worker thread (urllib3 keeps 10 by default and would reconnect beyond that).
_session.mount("http://", HTTPAdapter(pool_connections=4, pool_maxsize=64))


@app.task(name="bench.baseline.post_bytes")
def post_bytes(key: str, url: str) -> None:
    data = _redis.get(key)
    body = _session.post(url, files={"media": ("image.jpg", data, "image/jpeg")}, timeout=60).json()
    if not body.get("url"):
        raise RuntimeError(f"uploadimg answered {body}")


def start_worker(concurrency: int, log: Path):
    """This module's worker (threads pool), answering a ping before this returns."""
    from bench.env import VENV_BIN
    from bench.procs import start_celery, wait_for_ping

    argv = [
        str(VENV_BIN / "celery"), "-A", "bench.baseline", "worker", "--pool", "threads",
        "--concurrency", str(concurrency), "-Q", QUEUE, "--loglevel", "WARNING",
        "--without-gossip", "--without-mingle", "--without-heartbeat",
    ]
    worker = start_celery("baseline worker", argv, log, f"baseline-{os.getpid()}")
    wait_for_ping(app, [worker])
    return worker


def enqueue(key_prefix: str, images: list[bytes], url: str) -> None:
    """The producer: each image's bytes under a key of its own (an hour's expiry), then its task."""
    for i, data in enumerate(images):
        key = f"{key_prefix}:{i}"
        _redis.set(key, data, ex=3600)
        post_bytes.apply_async(args=[key, url])
