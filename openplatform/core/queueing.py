"""Enqueue after commit without ever failing the request that already stored its work.

If the broker is unreachable the row is still committed; the sweeper jobs find rows that were never
picked up and enqueue them again, so nothing accepted is lost.

On a plain `redis://` broker, a web request publishes with one LPUSH of the message Celery would have
sent (`_RedisPublisher`), skipping Celery's and kombu's publishing layers (routing again, the producer
pool, `maybe_declare`, the connection's retry wrapper): about 0.9 ms of CPU per upload in a request
became about 0.1 (docs/architecture.md §7, "Cost"). Celery still builds the message
(`app.amqp.create_task_message`, with the task's own execution options); only kombu's envelope is
written here, and a test holds it equal to what `apply_async` puts in Redis. Anything unusual takes
`apply_async`: another broker, TLS or a key prefix on Redis, eager mode, a publish signal receiver, a
call from inside a task (Celery links it to its parent), or options given by the caller.
"""

from __future__ import annotations

import base64
import json
import logging
import uuid
from functools import cache

from django.db import transaction

logger = logging.getLogger(__name__)


def enqueue_on_commit(task, *args, **options) -> None:
    def send() -> None:
        try:
            publish(task, args, **options)
        except Exception as exc:  # broker down: the sweeper re-enqueues later
            logger.error("could not enqueue %s (%s); the sweeper will retry", task.name, exc.__class__.__name__)

    transaction.on_commit(send)


def publish(task, args: tuple, *, task_id: str | None = None, **options) -> None:
    """Send `task` with `args` now, as `task.apply_async(args=args)` would (see the module's docstring)."""
    # broker_url is read each time: Celery takes CELERY_BROKER_URL from the environment when it is set.
    publisher = None if options else _redis_publisher(task.app, task.name, task.app.conf.broker_url or "")
    if publisher is None or not publisher.usable(task.app):
        # The reprs Celery would make with its saferepr (the ids the task gets), at a fraction of the cost.
        task.apply_async(args=args, argsrepr=repr(args), kwargsrepr="{}", task_id=task_id, **options)
        return
    publisher.send(task, args, task_id or str(uuid.uuid4()))


class _RedisPublisher:
    """LPUSH of kombu's envelope around the message Celery builds, to the queue the task is routed to."""

    def __init__(self, queue: str, exec_options: dict, url: str) -> None:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        self.key = queue
        # As Celery sends to a direct exchange's queue: by the default exchange, the queue's name as the key.
        self.delivery_info = {"exchange": "", "routing_key": queue}
        self.time_limit = exec_options.get("time_limit")
        self.soft_time_limit = exec_options.get("soft_time_limit")
        # A stale connection (Redis restarted) is retried once at once; a broker that is down fails fast,
        # and the sweeper enqueues the upload again, as with apply_async.
        self.client = redis.Redis.from_url(
            url, socket_connect_timeout=5, socket_timeout=5, retry=Retry(NoBackoff(), 1),
        )

    @staticmethod
    def usable(app) -> bool:
        from celery import signals

        return not (
            app.conf.task_always_eager
            or signals.before_task_publish.receivers
            or signals.after_task_publish.receivers
            or app.current_worker_task is not None
        )

    def send(self, task, args: tuple, task_id: str) -> None:
        app = task.app
        message = app.amqp.create_task_message(
            task_id, task.name, args, {},
            reply_to=app.thread_oid,
            time_limit=self.time_limit,
            soft_time_limit=self.soft_time_limit,
            create_sent_event=False,
            ignore_result=task.ignore_result,
            argsrepr=repr(args),
            kwargsrepr="{}",
        )
        body = json.dumps(message.body).encode()
        envelope = {
            "body": base64.b64encode(body).decode(),
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": message.headers,
            "properties": {
                **message.properties,
                "argsrepr": message.headers["argsrepr"],  # kombu keeps Celery's extra options here too
                "kwargsrepr": message.headers["kwargsrepr"],
                "delivery_mode": 2,
                "delivery_info": self.delivery_info,
                "priority": 0,
                "body_encoding": "base64",
                "delivery_tag": str(uuid.uuid4()),
            },
        }
        self.client.lpush(self.key, json.dumps(envelope))


@cache
def _redis_publisher(app, task_name: str, url: str) -> _RedisPublisher | None:
    """The lean publisher for this task on this broker, or None when the broker or the route is not one
    it handles."""
    conf = app.conf
    options = conf.broker_transport_options or {}
    if (not url.startswith("redis://") or conf.broker_use_ssl or options.get("global_keyprefix")
            or conf.task_send_sent_event or conf.task_queue_max_priority or conf.task_default_priority):
        return None
    task = app.tasks[task_name]
    exec_options = {k: v for k, v in task._get_exec_options().items() if v is not None}
    if exec_options.pop("serializer", "json") != "json" or set(exec_options) - {"queue", "time_limit", "soft_time_limit"}:
        return None
    route = app.amqp.router.route({}, task_name)
    queue = route.get("queue")
    if queue is None or set(route) != {"queue"} or queue.exchange.type != "direct" or queue.queue_arguments:
        return None
    return _RedisPublisher(queue.name, exec_options, url)
