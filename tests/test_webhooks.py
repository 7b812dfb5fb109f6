"""Webhooks in one process: the outbox, signed deliveries to a real HTTP receiver on 127.0.0.1, retries,
disabling, the SSRF guard, the merchant API and the admin.

The task bodies run directly (dispatch, then one attempt per due delivery): deterministic. A real
Celery worker delivers in tests/test_webhooks_worker.py and the fault drills. No traffic leaves
loopback: addresses that are not loopback are only judged (the guard's decision function, and URLs
whose literal address is refused before any connection).
"""

from __future__ import annotations

import ipaddress
import re
import time
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from tenants.models import Authorizer
from tenants.services.authorization import authorizer_revoke
from tests.fixtures import expire_access_token, image_bytes
from tests.webhook_receiver import add_endpoint, readme_verify
from uploads.models import Upload
from uploads.services.process import upload_process, uploads_reject_for_authorizer
from webhooks.config import parse_networks
from webhooks.guard import address_refusal, url_check
from webhooks.models import WebhookDelivery, WebhookDeliveryAttempt, WebhookEndpoint, WebhookEvent
from webhooks.services import webhook_delivery_attempt, webhook_event_dispatch
from webhooks.services.delivery import retry_delay
from webhooks.tasks import purge_old_webhook_events

UPLOADIMG = "/cgi-bin/media/uploadimg"


# -- helpers --------------------------------------------------------------------------------------------------


def run_outbox() -> list[str]:
    """What the worker does after commit: dispatch new events, then one attempt per due delivery."""
    for event_id in WebhookEvent.objects.filter(dispatched_at__isnull=True).order_by("created_at").values_list("pk", flat=True):
        webhook_event_dispatch(event_id=event_id)
    due = WebhookDelivery.objects.filter(status="pending", next_attempt_at__lte=timezone.now()).order_by("pk")
    return [webhook_delivery_attempt(delivery_id=pk).status for pk in due.values_list("pk", flat=True)]


def make_due() -> None:
    """The backoff has elapsed."""
    WebhookDelivery.objects.filter(status="pending").update(next_attempt_at=timezone.now())


def succeed_upload(make_upload, authorizer, data: bytes | None = None) -> Upload:
    upload = make_upload(authorizer, data if data is not None else image_bytes("PNG", color=(1, 2, 3)))
    assert upload_process(upload_id=upload.pk).status == "succeeded"
    return Upload.objects.get(pk=upload.pk)


# -- the SSRF guard ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("address, what", [
    ("10.0.0.1", "private"),
    ("169.254.169.254", "cloud metadata"),
    ("fd00:ec2::254", "cloud metadata"),
    ("127.0.0.1", "loopback"),
    ("::1", "loopback"),
    ("192.168.1.10", "private"),
    ("172.16.0.1", "private"),
    ("169.254.10.10", "link-local"),
    ("fe80::1", "link-local"),
    ("224.0.0.251", "multicast"),
    ("0.0.0.0", "unspecified"),
    ("100.64.0.1", "not a public address"),  # carrier-grade NAT
    ("240.0.0.1", "private"),  # class E (reserved), which Python's ipaddress counts as private
    ("::ffff:10.0.0.1", "private"),  # IPv4-mapped
    ("2002:a00:1::1", "private"),  # 6to4 of 10.0.0.1
    ("64:ff9b::a9fe:a9fe", "cloud metadata"),  # NAT64 of 169.254.169.254
])
def test_the_guard_refuses_internal_addresses(address, what):
    reason = address_refusal(ipaddress.ip_address(address))
    assert reason and what in reason


def test_the_guard_lets_public_addresses_and_the_allow_list_through():
    assert address_refusal(ipaddress.ip_address("93.184.216.34")) is None
    assert address_refusal(ipaddress.ip_address("2606:2800:220:1::1")) is None
    loopback = parse_networks(["127.0.0.0/8"])
    assert address_refusal(ipaddress.ip_address("127.0.0.1"), allowed=loopback) is None
    assert address_refusal(ipaddress.ip_address("::ffff:127.0.0.1"), allowed=loopback) is None
    assert "private" in address_refusal(ipaddress.ip_address("10.0.0.1"), allowed=loopback)
    assert address_refusal(ipaddress.ip_address("169.254.169.254"), allowed=parse_networks(["169.254.0.0/16"])) is None


@pytest.mark.parametrize("url, code", [
    ("https://10.0.0.1/hooks", "url_not_allowed"),
    ("https://169.254.169.254/latest/meta-data/", "url_not_allowed"),
    ("https://[fd00:ec2::254]/", "url_not_allowed"),
    ("http://127.0.0.1:9/hooks", "url_not_allowed"),
    ("http://93.184.216.34/hooks", "insecure_url"),  # public, but plain http
    ("ftp://93.184.216.34/x", "invalid_url"),
    ("https://user:pw@93.184.216.34/", "invalid_url"),
    ("/relative", "invalid_url"),
    ("https://93.184.216.34:99999/", "invalid_url"),
])
def test_url_checks_refuse_before_any_connection(url, code):
    from webhooks.errors import WebhookRefused

    with pytest.raises(WebhookRefused) as caught:
        url_check(url)
    assert caught.value.code == code


def test_a_literal_public_https_url_passes_and_is_pinned_to_its_address():
    target = url_check("https://93.184.216.34:8443/hooks?x=1")
    assert (str(target.address), target.port, target.path, target.host_header) == (
        "93.184.216.34", 8443, "/hooks?x=1", "93.184.216.34:8443")


def test_a_name_is_pinned_to_an_address_that_passed(loopback_allowed):
    target = url_check("http://localhost:8080/x", allowed=parse_networks(["127.0.0.0/8"]))
    assert target.address.is_loopback and target.address.version == 4
    assert target.host_header == "localhost:8080"


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_delivery_to_loopback_is_refused_without_the_allow_list_and_made_with_it(
    host, loopback_allowed, receiver, api_client, authorizer, make_upload, settings
):
    # given an endpoint added while loopback was allow-listed (a staging set-up)...
    url = receiver.url.replace("127.0.0.1", host)
    add_endpoint(api_client, url)
    succeed_upload(make_upload, authorizer)
    # ...and the allow-list emptied since (or the name now resolving to loopback: DNS rebinding)
    settings.WEBHOOK_ALLOWED_NETWORKS = []

    assert run_outbox() == ["pending"]

    (attempt,) = WebhookDeliveryAttempt.objects.all()
    assert attempt.outcome == "refused" and "loopback" in attempt.error and attempt.response_status is None
    assert receiver.received == []  # the guard refused before connecting
    delivery = WebhookDelivery.objects.get()
    assert delivery.next_attempt_at > timezone.now()

    # when loopback is allow-listed again, the retry reaches the receiver
    settings.WEBHOOK_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    make_due()
    assert run_outbox() == ["succeeded"]
    (received,) = receiver.received
    assert received.event["type"] == "upload.succeeded"
    assert received.headers["Host"] == f"{host}:{receiver.port}"
    assert str(WebhookDeliveryAttempt.objects.get(number=2).address) == "127.0.0.1"


def test_loopback_and_private_urls_are_refused_when_an_endpoint_is_added(api_client, receiver):
    for url, code in [(receiver.url, "url_not_allowed"), (receiver.url.replace("127.0.0.1", "localhost"), "url_not_allowed"),
                      ("https://10.0.0.1/hooks", "url_not_allowed"), ("https://169.254.169.254/", "url_not_allowed"),
                      ("http://93.184.216.34/", "insecure_url")]:
        response = api_client.post("/api/v1/webhook-endpoints/", {"url": url, "events": ["*"]}, format="json")
        assert (response.status_code, response.json()["code"]) == (400, code), url
    assert not WebhookEndpoint.objects.exists() and receiver.received == []


# -- signatures -------------------------------------------------------------------------------------------------


def test_a_delivery_is_signed_and_the_readme_snippet_verifies_it(
    loopback_allowed, receiver, api_client, authorizer, make_upload
):
    verify = readme_verify()
    endpoint = add_endpoint(api_client, receiver.url, events=["upload.succeeded"])
    upload = succeed_upload(make_upload, authorizer)

    assert run_outbox() == ["succeeded"]

    (received,) = receiver.received
    header = received.headers["Webhook-Signature"]
    assert re.fullmatch(r"t=\d+,v1=[0-9a-f]{64}", header)
    assert verify(endpoint["secret"], received.body, header)
    assert not verify(endpoint["secret"], received.body.replace(b"succeeded", b"failed"), header)
    assert not verify("whsec_wrong", received.body, header)
    stamp = int(header.split(",")[0][2:])
    old = f"t={stamp - 600}," + header.split(",", 1)[1]
    assert not verify(endpoint["secret"], received.body, old)  # a replay outside the tolerance
    assert received.headers["Content-Type"] == "application/json"
    event = received.event
    assert received.headers["Webhook-Id"] == event["id"]
    assert event["type"] == "upload.succeeded" and set(event) == {"id", "type", "created", "data"}
    # the object as the API shows it
    assert event["data"] == api_client.get(f"/api/v1/uploads/{upload.pk}/").json()
    attempt = WebhookDeliveryAttempt.objects.get()
    assert (attempt.outcome, attempt.response_status, attempt.response_body) == ("succeeded", 200, "ok")
    assert attempt.duration_ms > 0


def test_after_a_rotation_old_and_new_secrets_both_verify_for_24_hours(
    loopback_allowed, receiver, api_client, authorizer, make_upload
):
    verify = readme_verify()
    old = add_endpoint(api_client, receiver.url)
    rotated = api_client.post(f"/api/v1/webhook-endpoints/{old['id']}/rotate-secret/")
    assert rotated.status_code == 200
    new = rotated.json()
    assert new["secret"].startswith("whsec_") and new["secret"] != old["secret"]
    expires = timezone.datetime.fromisoformat(new["previous_secret_expires_at"].replace("Z", "+00:00"))
    assert timedelta(hours=23, minutes=59) < expires - timezone.now() <= timedelta(hours=24)

    succeed_upload(make_upload, authorizer)
    run_outbox()
    (received,) = receiver.received
    header = received.headers["Webhook-Signature"]
    assert header.count("v1=") == 2
    assert verify(new["secret"], received.body, header) and verify(old["secret"], received.body, header)

    # 24 hours later only the new secret signs
    WebhookEndpoint.objects.update(previous_secret_expires_at=timezone.now() - timedelta(seconds=1))
    succeed_upload(make_upload, authorizer, image_bytes("PNG", color=(9, 9, 9)))
    run_outbox()
    header = receiver.received[1].headers["Webhook-Signature"]
    assert header.count("v1=") == 1
    assert verify(new["secret"], receiver.received[1].body, header)
    assert not verify(old["secret"], receiver.received[1].body, header)


def test_the_secret_is_shown_once_and_stored_encrypted(api_client, loopback_allowed, receiver):
    created = add_endpoint(api_client, receiver.url)
    secret = created["secret"]
    assert secret.startswith("whsec_") and len(secret) > 40

    listed = api_client.get("/api/v1/webhook-endpoints/").json()
    one = api_client.get(f"/api/v1/webhook-endpoints/{created['id']}/").json()
    assert secret not in str(listed) and secret not in str(one) and "secret" not in one
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM webhooks_webhookendpoint")
        row = cursor.fetchone()
    assert secret not in str(row)
    assert WebhookEndpoint.objects.get().signing_secrets() == [secret]


# -- the outbox: which events, for whom -----------------------------------------------------------------------------


def test_every_final_state_and_authorizer_change_records_an_event(
    tenant, authorizer, component, make_upload, api_client
):
    # the onboarding bound the authorizer: authorizer.authorized
    succeeded = succeed_upload(make_upload, authorizer)
    failed = make_upload(authorizer, image_bytes("PNG", color=(4, 4, 4)))
    component.inject_fault(UPLOADIMG, "errcode", errcode=48001)
    upload_process(upload_id=failed.pk)
    queued = make_upload(authorizer, image_bytes("PNG", color=(5, 5, 5)))
    authorizer_revoke(authorizer=authorizer)
    uploads_reject_for_authorizer(authorizer_id=authorizer.pk, reason="authorizer is revoked")  # after commit, in production
    authorizer_revoke(authorizer=authorizer)  # again: no second event

    events = api_client.get("/api/v1/webhook-events/").json()
    assert events["count"] == 5 and set(events) == {"count", "next", "previous", "results"}
    types = [e["type"] for e in events["results"]]
    assert types == ["upload.rejected", "authorizer.revoked", "upload.failed", "upload.succeeded",
                     "authorizer.authorized"]  # newest first
    by_type = {e["type"]: e for e in events["results"]}
    assert by_type["upload.succeeded"]["data"]["id"] == str(succeeded.pk)
    assert by_type["upload.failed"]["data"]["id"] == str(failed.pk)
    assert by_type["upload.failed"]["data"]["errcode"] == 48001
    assert by_type["upload.rejected"]["data"]["id"] == str(queued.pk)
    assert by_type["upload.rejected"]["data"]["status"] == "rejected"
    assert by_type["authorizer.revoked"]["data"]["status"] == "revoked"
    assert by_type["authorizer.authorized"]["data"]["appid"] == authorizer.appid
    assert api_client.get("/api/v1/webhook-events/?type=upload.failed").json()["count"] == 1
    bad = api_client.get("/api/v1/webhook-events/?type=nope")
    assert (bad.status_code, bad.json()["code"]) == (400, "unknown_event_type")


def test_reauthorization_required_is_an_event(authorizer, component, api_client):
    from tenants.errors import ReauthorizationRequired
    from tenants.services.tokens import authorizer_access_token_get

    component.revoke(authorizer.appid, push_event=False)
    expire_access_token(authorizer)
    with pytest.raises(ReauthorizationRequired):
        authorizer_access_token_get(authorizer=authorizer)

    (newest, *_) = api_client.get("/api/v1/webhook-events/").json()["results"]
    assert newest["type"] == "authorizer.reauthorization_required"
    assert newest["data"]["status"] == "reauthorization_required"


def test_an_account_restored_by_reconciliation_or_added_directly_is_authorized(
    tenant, authorizer, component, api_client
):
    from tenants.services.direct import authorizer_create_direct
    from tenants.services.reconcile import authorizers_reconcile

    Authorizer.objects.filter(pk=authorizer.pk).update(status="reauthorization_required")
    assert authorizers_reconcile().restored == 1
    (newest, *_) = api_client.get("/api/v1/webhook-events/").json()["results"]
    assert (newest["type"], newest["data"]["appid"], newest["data"]["status"]) == (
        "authorizer.authorized", authorizer.appid, "authorized")

    component.register_direct_account("wxdirect00000009", "direct-secret", [11])
    authorizer_create_direct(tenant=tenant, appid="wxdirect00000009", app_secret="direct-secret")
    (newest, *_) = api_client.get("/api/v1/webhook-events/").json()["results"]
    assert (newest["type"], newest["data"]["appid"]) == ("authorizer.authorized", "wxdirect00000009")


def test_an_upload_rejected_by_the_task_is_an_event(authorizer, component, make_upload, api_client):
    upload = make_upload(authorizer)
    Authorizer.objects.filter(pk=authorizer.pk).update(status="revoked")
    assert upload_process(upload_id=upload.pk).status == "rejected"
    (newest, *_) = api_client.get("/api/v1/webhook-events/").json()["results"]
    assert (newest["type"], newest["data"]["id"]) == ("upload.rejected", str(upload.pk))


def test_only_subscribed_enabled_endpoints_of_the_tenant_get_a_delivery(
    loopback_allowed, receiver, api_client, make_api_client, make_tenant, make_authorizer, authorizer, make_upload
):
    add_endpoint(api_client, receiver.url, events=["upload.failed"])
    everything = add_endpoint(api_client, receiver.url + "/all", events=["*"])
    other = make_tenant("globex")
    other_client = make_api_client(other)
    add_endpoint(other_client, receiver.url + "/globex", events=["*"])

    succeed_upload(make_upload, authorizer)
    assert run_outbox() == ["succeeded"]

    (received,) = receiver.received
    assert received.path == "/hooks/all" and received.event["type"] == "upload.succeeded"
    assert WebhookDelivery.objects.get().endpoint_id.hex == everything["id"].replace("-", "")
    # and the other tenant's events reach only its endpoint
    other_upload = succeed_upload(make_upload, make_authorizer(other), image_bytes("PNG", color=(7, 7, 7)))
    run_outbox()
    globex = [r for r in receiver.received if r.path == "/hooks/globex"]
    assert [r.event["type"] for r in globex] == ["authorizer.authorized", "upload.succeeded"]
    assert globex[1].event["data"]["id"] == str(other_upload.pk)
    assert all(r.event["data"].get("id") != str(other_upload.pk) for r in receiver.received if r.path != "/hooks/globex")


def test_a_tenant_never_sees_or_touches_another_tenants_webhooks(
    loopback_allowed, receiver, api_client, make_api_client, make_tenant, make_authorizer
):
    other = make_tenant("globex")
    theirs = add_endpoint(make_api_client(other), receiver.url)
    make_authorizer(other)  # an event of theirs

    assert api_client.get("/api/v1/webhook-endpoints/").json()["count"] == 0
    assert api_client.get("/api/v1/webhook-events/").json()["count"] == 0
    for method, path in [("get", f"/api/v1/webhook-endpoints/{theirs['id']}/"),
                         ("delete", f"/api/v1/webhook-endpoints/{theirs['id']}/"),
                         ("post", f"/api/v1/webhook-endpoints/{theirs['id']}/rotate-secret/"),
                         ("get", "/api/v1/webhook-endpoints/not-a-uuid/")]:
        response = getattr(api_client, method)(path)
        assert (response.status_code, response.json()["code"]) == (404, "not_found"), path
    assert WebhookEndpoint.objects.get().signing_secrets() == [theirs["secret"]]  # not rotated


# -- retries, failure, disabling ---------------------------------------------------------------------------------


def test_receiver_down_is_retried_with_backoff_and_delivered_later(
    loopback_allowed, receiver, api_client, authorizer, make_upload, settings
):
    settings.WEBHOOK_RETRY_BASE_SECONDS = 30
    add_endpoint(api_client, receiver.url)
    succeed_upload(make_upload, authorizer)
    receiver.stop()

    before = timezone.now()
    assert run_outbox() == ["pending"]
    delivery = WebhookDelivery.objects.get()
    (attempt,) = delivery.attempt_records.all()
    assert attempt.outcome == "network_error" and "could not connect" in attempt.error
    assert timedelta(seconds=15) <= delivery.next_attempt_at - before <= timedelta(seconds=31)
    assert run_outbox() == []  # not due yet

    receiver.status = 503
    receiver.start()  # the same port
    make_due()
    assert run_outbox() == ["pending"]
    second = WebhookDeliveryAttempt.objects.get(number=2)
    assert (second.outcome, second.response_status, second.error) == ("http_error", 503, "HTTP 503")

    receiver.status = 200
    make_due()
    assert run_outbox() == ["succeeded"]
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("succeeded", 3) and delivery.finished_at
    assert [r.event["type"] for r in receiver.received] == ["upload.succeeded", "upload.succeeded"]
    assert len({r.event["id"] for r in receiver.received}) == 1  # the same event: receivers dedupe by id


def test_retry_delays_grow_exponentially_with_jitter_up_to_the_cap():
    from webhooks.config import webhook_config

    config = webhook_config()  # 30 s base, 3 h cap
    for attempt, full in [(1, 30), (2, 60), (5, 480), (12, 10800), (40, 10800)]:
        delays = [retry_delay(attempt, config=config) for _ in range(200)]
        assert all(full / 2 <= d <= full for d in delays)
        assert max(delays) - min(delays) > full / 10  # jittered


def test_redirects_are_not_followed_and_only_1_kb_of_the_answer_is_kept(
    loopback_allowed, receiver, api_client, authorizer, make_upload
):
    add_endpoint(api_client, receiver.url)
    succeed_upload(make_upload, authorizer)
    receiver.status, receiver.answer = 302, b"x" * 1_000_000

    assert run_outbox() == ["pending"]

    assert len(receiver.received) == 1
    attempt = WebhookDeliveryAttempt.objects.get()
    assert attempt.response_status == 302 and "redirects are not followed" in attempt.error
    assert attempt.response_body == "x" * 1024


def test_a_receiver_slower_than_the_timeout_is_a_failed_attempt(
    loopback_allowed, receiver, api_client, authorizer, make_upload, settings
):
    settings.WEBHOOK_TIMEOUT_SECONDS = 0.3
    add_endpoint(api_client, receiver.url)
    succeed_upload(make_upload, authorizer)
    receiver.delay = 1.0
    started = time.monotonic()
    assert run_outbox() == ["pending"]
    assert time.monotonic() - started < 0.9
    attempt = WebhookDeliveryAttempt.objects.get()
    assert attempt.outcome == "timeout" and attempt.response_status is None


def test_after_the_retry_window_the_delivery_fails_and_a_failing_endpoint_is_disabled(
    loopback_allowed, receiver, api_client, authorizer, make_upload, admin_client
):
    endpoint = add_endpoint(api_client, receiver.url)
    succeed_upload(make_upload, authorizer)
    receiver.status = 500
    run_outbox()
    # three days pass, every attempt failing
    three_days_ago = timezone.now() - timedelta(days=3, seconds=1)
    WebhookDelivery.objects.update(window_started_at=three_days_ago)
    WebhookEndpoint.objects.update(failing_since=three_days_ago)
    succeed_upload(make_upload, authorizer, image_bytes("PNG", color=(8, 8, 8)))  # a newer event, pending too
    webhook_event_dispatch(event_id=WebhookEvent.objects.filter(dispatched_at__isnull=True).get().pk)
    make_due()
    first = WebhookDelivery.objects.order_by("pk").first()

    assert webhook_delivery_attempt(delivery_id=first.pk).status == "failed"

    first.refresh_from_db()
    assert first.status == "failed" and "gave up after 2 attempts" in first.last_error
    ep = WebhookEndpoint.objects.get()
    assert not ep.enabled and "3 days" in ep.disabled_reason and ep.disabled_at
    newer = WebhookDelivery.objects.exclude(pk=first.pk).get()
    assert newer.status == "failed" and "endpoint disabled" in newer.last_error
    shown = api_client.get(f"/api/v1/webhook-endpoints/{endpoint['id']}/").json()
    assert shown["enabled"] is False and "re-enable" in shown["disabled_reason"]
    # new events are still recorded (for the catch-up API), but not delivered
    succeed_upload(make_upload, authorizer, image_bytes("PNG", color=(6, 6, 6)))
    run_outbox()
    assert WebhookDelivery.objects.count() == 2
    assert api_client.get("/api/v1/webhook-events/?type=upload.succeeded").json()["count"] == 3
    # the operator's dashboard lists it
    html = admin_client.get("/admin/").content.decode()
    section = html[html.index('id="op-webhooks"'):]
    assert receiver.url in section and "disabled" in section and "Webhooks that need attention (1)" in section


def test_a_recovered_endpoint_gets_its_waiting_deliveries_at_once(
    loopback_allowed, receiver, api_client, authorizer, make_upload
):
    add_endpoint(api_client, receiver.url)
    receiver.status = 500
    for i in range(3):
        succeed_upload(make_upload, authorizer, image_bytes("PNG", color=(i, 50, 50)))
    assert run_outbox() == ["pending"] * 3
    receiver.status = 200
    first = WebhookDelivery.objects.order_by("pk").first()
    WebhookDelivery.objects.filter(pk=first.pk).update(next_attempt_at=timezone.now())

    assert webhook_delivery_attempt(delivery_id=first.pk).status == "succeeded"

    assert WebhookEndpoint.objects.get().failing_since is None
    assert not WebhookDelivery.objects.filter(status="pending", next_attempt_at__gt=timezone.now()).exists()
    assert run_outbox() == ["succeeded"] * 2


def test_a_delivery_is_sent_by_one_run_at_a_time(loopback_allowed, receiver, api_client, authorizer, make_upload):
    add_endpoint(api_client, receiver.url)
    succeed_upload(make_upload, authorizer)
    webhook_event_dispatch(event_id=WebhookEvent.objects.get(type="upload.succeeded").pk)
    delivery = WebhookDelivery.objects.get()
    WebhookDelivery.objects.filter(pk=delivery.pk).update(lease_until=timezone.now() + timedelta(seconds=30))

    assert webhook_delivery_attempt(delivery_id=delivery.pk).status == "pending"  # someone else holds it
    assert receiver.received == []
    assert webhook_event_dispatch(event_id=delivery.event_id) == []  # a second dispatch adds nothing
    assert WebhookDelivery.objects.count() == 1


def test_old_events_are_purged_unless_a_delivery_is_pending(loopback_allowed, receiver, api_client, authorizer):
    add_endpoint(api_client, receiver.url)
    receiver.stop()
    event = WebhookEvent.objects.create(tenant=authorizer.tenant, type="upload.failed", data={})
    webhook_event_dispatch(event_id=event.pk)
    WebhookEvent.objects.update(created_at=timezone.now() - timedelta(days=31))

    assert purge_old_webhook_events() == 1  # the authorizer.authorized one; this one is still pending
    WebhookDelivery.objects.update(status="failed")
    assert purge_old_webhook_events() == 1
    assert not WebhookEvent.objects.exists() and not WebhookDelivery.objects.exists()


# -- the merchant API --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("body, code", [
    ({"events": ["*"]}, "invalid"),
    ({"url": "https://93.184.216.34/", "events": []}, "invalid"),
    ({"url": "https://93.184.216.34/", "events": ["upload.exploded"]}, "unknown_event_type"),
    ({"url": "https://93.184.216.34/", "events": "upload.failed"}, "invalid"),
    ({"url": "not a url", "events": ["*"]}, "invalid_url"),
    ({"url": "https://" + "a" * 2000 + ".example/", "events": ["*"]}, "invalid"),
])
def test_bad_input_is_a_400_with_a_stable_code(api_client, body, code):
    response = api_client.post("/api/v1/webhook-endpoints/", body, format="json")
    assert (response.status_code, response.json()["code"]) == (400, code)


def test_endpoints_are_listed_newest_first_deleted_and_limited(api_client):
    ids = [add_endpoint(api_client, f"https://93.184.216.34/{i}")["id"] for i in range(16)]
    listed = api_client.get("/api/v1/webhook-endpoints/").json()
    assert listed["count"] == 16 and listed["results"][0]["id"] == ids[-1]
    assert set(listed["results"][0]) == {"id", "url", "events", "description", "enabled", "disabled_reason",
                                          "created_at"}
    too_many = api_client.post("/api/v1/webhook-endpoints/", {"url": "https://93.184.216.34/x", "events": ["*"]},
                               format="json")
    assert (too_many.status_code, too_many.json()["code"]) == (400, "too_many_endpoints")

    assert api_client.delete(f"/api/v1/webhook-endpoints/{ids[0]}/").status_code == 204
    assert api_client.get(f"/api/v1/webhook-endpoints/{ids[0]}/").status_code == 404
    assert api_client.get("/api/v1/webhook-endpoints/").json()["count"] == 15


def test_the_openapi_schema_documents_the_endpoints_and_the_event_payload(client):
    schema = client.get("/api/schema/", {"format": "json"}).json()
    paths = schema["paths"]
    assert {"get", "post"} <= set(paths["/api/v1/webhook-endpoints/"])
    assert {"get", "delete"} <= set(paths["/api/v1/webhook-endpoints/{endpoint_id}/"])
    assert "post" in paths["/api/v1/webhook-endpoints/{endpoint_id}/rotate-secret/"]
    assert "Webhook-Signature" in paths["/api/v1/webhook-events/"]["get"]["description"]
    components = schema["components"]["schemas"]
    event = components["WebhookEvent"]
    assert set(event["properties"]) == {"id", "type", "created", "data"}
    refs = [s.get("$ref") for s in event["properties"]["data"]["oneOf"]]
    for ref in filter(None, refs):
        assert ref.rsplit("/", 1)[1] in components  # Upload and Authorizer resolve
    assert {"#/components/schemas/Upload", "#/components/schemas/Authorizer"} <= set(refs)
    assert "secret" in components["WebhookEndpointSecret"]["properties"]
    assert "secret" not in components["WebhookEndpoint"]["properties"]


# -- the admin ---------------------------------------------------------------------------------------------------


def test_admin_sends_a_test_event_redelivers_and_never_shows_a_secret(
    loopback_allowed, receiver, api_client, admin_client, authorizer, make_upload
):
    created = add_endpoint(api_client, receiver.url, events=["upload.failed"])
    endpoint = WebhookEndpoint.objects.get()

    response = admin_client.post("/admin/webhooks/webhookendpoint/", {
        "action": "send_test_event", "_selected_action": [str(endpoint.pk)]}, follow=True)
    assert response.status_code == 200
    assert run_outbox() == ["succeeded"]
    (received,) = receiver.received
    assert received.event["type"] == "webhook.test" and received.event["data"]["endpoint_id"] == created["id"]
    assert readme_verify()(created["secret"], received.body, received.headers["Webhook-Signature"])

    delivery = WebhookDelivery.objects.get()
    response = admin_client.post("/admin/webhooks/webhookdelivery/", {
        "action": "redeliver", "_selected_action": [str(delivery.pk)]}, follow=True)
    assert "queued again" in response.content.decode()
    assert run_outbox() == ["succeeded"]
    assert [r.event["id"] for r in receiver.received] == [received.event["id"]] * 2

    pages = [
        "/admin/webhooks/webhookendpoint/", f"/admin/webhooks/webhookendpoint/{endpoint.pk}/change/",
        "/admin/webhooks/webhookevent/", f"/admin/webhooks/webhookevent/{delivery.event_id}/change/",
        "/admin/webhooks/webhookdelivery/", f"/admin/webhooks/webhookdelivery/{delivery.pk}/change/",
        f"/admin/webhooks/webhookdelivery/?endpoint__id__exact={endpoint.pk}&status__exact=failed",
    ]
    for page in pages:
        response = admin_client.get(page)
        assert response.status_code == 200, page
        html = response.content.decode()
        assert created["secret"] not in html and endpoint.secret_ciphertext not in html, page


def test_an_endpoint_added_in_the_admin_gets_a_secret_nobody_sees(admin_client, tenant, settings):
    response = admin_client.post("/admin/webhooks/webhookendpoint/add/", {
        "tenant": tenant.pk, "url": "https://93.184.216.34/hooks", "events": ["upload.succeeded", "upload.failed"],
        "description": "set up by support"}, follow=True)
    assert response.status_code == 200
    endpoint = WebhookEndpoint.objects.get()
    assert endpoint.events == ["upload.succeeded", "upload.failed"] and endpoint.secret_ciphertext
    assert endpoint.signing_secrets()[0] not in response.content.decode()
    assert "rotate-secret" in response.content.decode()

    refused = admin_client.post("/admin/webhooks/webhookendpoint/add/", {
        "tenant": tenant.pk, "url": "https://10.0.0.1/hooks", "events": ["upload.failed"]})
    assert refused.status_code == 200 and "webhooks are not sent there" in refused.content.decode()
    assert WebhookEndpoint.objects.count() == 1


# -- https: the connection goes to the checked address, the certificate is checked against the URL's host ----------


def _tls_files(tmp_path) -> tuple[str, str, str]:
    """A test CA and a certificate for `localhost` it signed: (ca.pem, cert.pem, key.pem)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    now = timezone.now()
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("test CA")).issuer_name(name("test CA"))
          .public_key(ca_key.public_key()).serial_number(1).not_valid_before(now - timedelta(hours=1))
          .not_valid_after(now + timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    cert = (x509.CertificateBuilder().subject_name(name("localhost")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(2).not_valid_before(now - timedelta(hours=1))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = [tmp_path / n for n in ("ca.pem", "cert.pem", "key.pem")]
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return tuple(str(p) for p in paths)


def test_https_delivery_sends_sni_and_verifies_the_certificate_against_the_urls_host(
    loopback_allowed, receiver, api_client, authorizer, make_upload, tmp_path, monkeypatch
):
    import ssl

    ca, cert, key = _tls_files(tmp_path)
    server_names = []
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    context.sni_callback = lambda sock, server_name, ctx: server_names.append(server_name)
    receiver.stop()
    receiver.tls = context
    receiver.start()
    monkeypatch.setattr("webhooks.transport.CA_BUNDLE", ca)  # the test CA instead of Mozilla's
    https = f"https://localhost:{receiver.port}/hooks"
    add_endpoint(api_client, https, events=["upload.succeeded"])
    add_endpoint(api_client, f"https://127.0.0.1:{receiver.port}/by-address", events=["upload.succeeded"])

    succeed_upload(make_upload, authorizer)
    outcomes = run_outbox()

    assert sorted(outcomes) == ["pending", "succeeded"]
    (received,) = receiver.received
    assert received.path == "/hooks" and received.headers["Host"] == f"localhost:{receiver.port}"
    assert "localhost" in server_names
    by_address = WebhookDeliveryAttempt.objects.get(outcome="network_error")
    assert "TLS failed" in by_address.error  # the certificate names localhost, not 127.0.0.1
    assert str(WebhookDeliveryAttempt.objects.get(outcome="succeeded").address) == "127.0.0.1"
