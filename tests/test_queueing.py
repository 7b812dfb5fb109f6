"""The lean publish (openplatform/core/queueing.py): what it writes to Redis is what apply_async writes,
it is what a request uses, and whatever it does not handle goes through apply_async."""

from __future__ import annotations

import base64
import json

import pytest
import redis

from openplatform.core import queueing
from tests.worker import app_broker


def _messages(url: str, key: str) -> list[dict]:
    """The messages in a queue, oldest first, with their bodies decoded."""
    found = []
    for raw in reversed(redis.Redis.from_url(url).lrange(key, 0, -1)):  # LPUSH: the newest is first
        message = json.loads(raw)
        message["body"] = json.loads(base64.b64decode(message["body"]))
        found.append(message)
    return found


@pytest.fixture
def broker(worker_broker):
    client = redis.Redis.from_url(worker_broker.url)
    client.flushdb()
    with app_broker(worker_broker.url):
        yield worker_broker.url
    client.flushdb()


def test_the_lean_publish_writes_the_message_apply_async_writes(broker):
    from tenants.tasks import answer_release_check, process_component_event
    from uploads.tasks import upload_image
    from webhooks.tasks import deliver_webhook, dispatch_webhook_event

    for task, args, queue in (
        (upload_image, ("3f0c2a9e-0000-4000-8000-000000000001",), "uploads"),
        (deliver_webhook, (42,), "uploads"),
        (dispatch_webhook_event, ("3f0c2a9e-0000-4000-8000-000000000003",), "celery"),
        (process_component_event, (7,), "celery"),
        (answer_release_check, ("wx1", "o-openid", "gAAAA-ciphertext", "文本 \u2028 'quoted'"), "celery"),
    ):
        assert queueing._redis_publisher(task.app, task.name, broker) is not None  # the lean path, not a fallback
        task.apply_async(args=args, argsrepr=repr(args), kwargsrepr="{}", task_id="the-same-id")
        queueing.publish(task, args, task_id="the-same-id")
        celery_message, lean = _messages(broker, queue)
        redis.Redis.from_url(broker).delete(queue)

        # kombu's own tag for each message: unique, and the only difference.
        assert lean["properties"].pop("delivery_tag") != celery_message["properties"].pop("delivery_tag")
        assert lean == celery_message
        assert lean["headers"]["task"] == task.name and lean["body"][0] == list(args)


def test_publish_takes_the_lean_path_with_one_lpush(broker, monkeypatch):
    from uploads.tasks import upload_image

    sent = []
    real_send = queueing._RedisPublisher.send
    monkeypatch.setattr(queueing._RedisPublisher, "send", lambda self, *a: sent.append(a) or real_send(self, *a))

    queueing.publish(upload_image, ("3f0c2a9e-0000-4000-8000-000000000002",))

    assert len(sent) == 1
    [message] = _messages(broker, "uploads")
    assert message["body"][0] == ["3f0c2a9e-0000-4000-8000-000000000002"]


def test_what_the_lean_publish_does_not_handle_goes_through_apply_async(broker, monkeypatch):
    from celery.signals import before_task_publish

    from openplatform.celery import app
    from uploads.tasks import upload_image

    lean = []
    monkeypatch.setattr(queueing._RedisPublisher, "send", lambda self, *a: lean.append(a))
    seen = []

    def record(sender=None, **kwargs) -> None:
        seen.append(sender)

    before_task_publish.connect(record, weak=False)
    try:
        queueing.publish(upload_image, ("a",))  # a publish signal receiver: it must see the message
        queueing.publish(upload_image, ("b",), countdown=5)  # options from the caller
    finally:
        before_task_publish.disconnect(record)
    assert seen == [upload_image.name, upload_image.name] and lean == []

    assert queueing._redis_publisher(app, upload_image.name, "memory://") is None
    assert queueing._redis_publisher(app, upload_image.name, "rediss://127.0.0.1:6379/0") is None
    assert queueing._redis_publisher(app, upload_image.name, broker) is not None


def test_a_broker_that_is_down_fails_the_publish_without_backing_off(worker_broker, monkeypatch):
    """redis-py's default retries three times with up to 10 s of backoff: a request must not wait for that
    (enqueue_on_commit logs the failure and the sweeper enqueues the upload again)."""
    import redis.retry

    from uploads.tasks import upload_image

    slept = []
    monkeypatch.setattr(redis.retry, "sleep", lambda seconds: slept.append(seconds))
    with app_broker("redis://127.0.0.1:9/0"):  # loopback, a port nothing listens on: refused
        with pytest.raises(redis.ConnectionError):
            queueing.publish(upload_image, ("c",))
    assert slept == []
