"""Webhooks end to end: the REST API in this process, a real Celery worker process on its own Redis, the
simulator, and a real receiving HTTP server on 127.0.0.1 (a thread here; the worker POSTs to it)."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

from tenants.services.authorization import authorizer_revoke
from tests.fixtures import image_bytes, media_file
from tests.webhook_receiver import add_endpoint, readme_verify
from tests.worker import wait_until
from webhooks.models import WebhookDelivery, WebhookDeliveryAttempt, WebhookEvent
from webhooks.tasks import sweep_webhook_deliveries

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def worker_env() -> dict[str, str]:
    return {
        "WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8",
        "WEBHOOK_RETRY_BASE_SECONDS": "0.5",
        "WEBHOOK_RETRY_MAX_SECONDS": "2",
        "WEBHOOK_TIMEOUT_SECONDS": "3",
    }


def submit(client, authorizer, data: bytes) -> str:
    response = client.post("/api/v1/uploads/", {"media": media_file(data), "authorizer_appid": authorizer.appid},
                           format="multipart")
    assert response.status_code == 202, response.content
    return response.json()["id"]


def delivered(receiver, worker, count: int, timeout: float = 40):
    try:
        return receiver.wait_for(count, timeout=timeout)
    except AssertionError as exc:
        states = list(WebhookDelivery.objects.values_list("status", "attempts", "last_error"))
        raise AssertionError(f"{exc}; deliveries: {states}\n--- worker log ---\n{worker.log()[-5000:]}") from None


def test_an_upload_is_delivered_by_the_worker_signed(
    celery_worker, jobs_worker, loopback_allowed, receiver, api_client, authorizer, component
):
    endpoint = add_endpoint(api_client, receiver.url, events=["upload.succeeded"])

    upload_id = submit(api_client, authorizer, image_bytes("PNG", color=(40, 41, 42)))

    (received,) = delivered(receiver, celery_worker, 1)
    assert readme_verify()(endpoint["secret"], received.body, received.headers["Webhook-Signature"])
    event = received.event
    assert (event["type"], event["data"]["id"], event["data"]["status"]) == ("upload.succeeded", upload_id, "succeeded")
    assert event["data"] == api_client.get(f"/api/v1/uploads/{upload_id}/").json()
    wait_until(lambda: WebhookDelivery.objects.filter(status="succeeded").count() == 1, timeout=10,
               message="the delivery's result to be saved")
    attempt = WebhookDeliveryAttempt.objects.get()
    assert (attempt.outcome, attempt.response_status, attempt.response_body) == ("succeeded", 200, "ok")


def test_receiver_down_is_retried_by_the_worker_and_delivered_later(
    celery_worker, jobs_worker, loopback_allowed, receiver, api_client, authorizer, component
):
    endpoint = add_endpoint(api_client, receiver.url, events=["upload.succeeded"])
    receiver.stop()

    upload_id = submit(api_client, authorizer, image_bytes("PNG", color=(43, 44, 45)))
    wait_until(lambda: WebhookDeliveryAttempt.objects.filter(outcome="network_error").count() >= 2, timeout=30,
               message="two failed attempts")
    assert receiver.received == []
    receiver.start()  # the same port

    (received,) = delivered(receiver, celery_worker, 1)
    assert received.event["data"]["id"] == upload_id
    assert readme_verify()(endpoint["secret"], received.body, received.headers["Webhook-Signature"])
    wait_until(lambda: WebhookDelivery.objects.filter(status="succeeded").exists(), timeout=10,
               message="the delivery's result to be saved")
    delivery = WebhookDelivery.objects.get()
    assert delivery.attempts >= 3
    assert list(delivery.attempt_records.values_list("outcome", flat=True))[-1] == "succeeded"


def test_broker_down_at_the_state_change_is_still_delivered(
    celery_worker, jobs_worker, worker_broker, loopback_allowed, receiver, api_client, authorizer, component, monkeypatch
):
    if not worker_broker.can_restart:
        pytest.skip("needs the redis-server binary to stop and restart a private broker")
    endpoint = add_endpoint(api_client, receiver.url, events=["authorizer.revoked"])
    monkeypatch.setattr("webhooks.tasks.STUCK_AFTER", timedelta(0))  # the cutoff, compressed

    worker_broker.stop()  # every message lost, and the enqueue after commit fails
    try:
        started = time.monotonic()
        authorizer_revoke(authorizer=authorizer)  # the change, with its event, commits anyway
        assert time.monotonic() - started < 10
        event = WebhookEvent.objects.get(type="authorizer.revoked")
        assert event.dispatched_at is None
    finally:
        worker_broker.start()
    time.sleep(3)  # the worker is back on the broker: without the sweeper, nothing comes
    assert receiver.received == [] and WebhookEvent.objects.get(pk=event.pk).dispatched_at is None

    def swept_and_delivered() -> bool:
        celery_worker.ensure_running()  # as a supervisor would, should the worker die on the reconnect
        jobs_worker.ensure_running()
        sweep_webhook_deliveries()  # beat's job, every minute in production
        return bool(receiver.received)

    wait_until(swept_and_delivered, timeout=40, interval=1, message="the sweeper to get the event delivered")
    received = receiver.received[0]
    assert received.event["id"] == str(event.pk) and received.event["type"] == "authorizer.revoked"
    assert readme_verify()(endpoint["secret"], received.body, received.headers["Webhook-Signature"])
