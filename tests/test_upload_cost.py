"""Issue 10's cheaper paths keep every behaviour: the hand-built JSON, the one-statement SQL (binary bytes,
claims, the result with its attempts and webhook event), the ownership re-check, the cache client and
the WeChat client's proxy settings read once."""

from __future__ import annotations

import hashlib
import json
import threading
import time
import uuid
from datetime import timedelta

import pytest
from django.db import connection, connections, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework import serializers
from rest_framework.renderers import JSONRenderer

from tenants.models import Authorizer
from tests.fixtures import expire_access_token, image_bytes, media_file, sim_count
from uploads.api import UploadSerializer
from uploads.models import Upload, UploadAttempt, UploadBlob
from uploads.representation import json_bytes, upload_json
from uploads.services import pg
from uploads.services.process import upload_process

UPLOADIMG = "/cgi-bin/media/uploadimg"


def _fields_representation(upload: Upload) -> dict:
    """What the serializer's declared fields render (DRF's own machinery, bypassing our to_representation)."""
    return serializers.ModelSerializer.to_representation(UploadSerializer(), upload)


# -- the hand-built representation -------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_hand_built_json_is_what_the_serializer_fields_render(authorizer, component, make_upload):
    queued = make_upload(authorizer)
    sent = make_upload(authorizer, image_bytes("JPEG"))
    upload_process(upload_id=sent.pk)
    repeat = make_upload(authorizer, image_bytes("JPEG"))  # reuses `sent`'s URL: reused_from set
    failed = make_upload(authorizer, image_bytes(color=(1, 2, 3)))
    Upload.objects.filter(pk=failed.pk).update(
        status=Upload.Status.FAILED, errcode=40164, finished_at=timezone.now(), started_at=timezone.now(),
        errmsg="invalid ip 203.0.113.9 ipv6 ::ffff:203.0.113.9, not in whitelist \u2028 and \u00e9",
        permission_required=[1, 8], permission_granted=[11], permission_passed=False,
    )
    rows = Upload.objects.select_related("authorizer").filter(pk__in=[queued.pk, sent.pk, repeat.pk, failed.pk])

    assert len(rows) == 4
    for row in rows:
        ours = upload_json(row)
        assert ours == _fields_representation(row)
        assert json_bytes(ours) == JSONRenderer().render(_fields_representation(row))
    by_id = {str(r.pk): upload_json(r) for r in rows}
    assert by_id[str(repeat.pk)]["reused_from"] == str(sent.pk)
    assert "203.0.113.9" not in by_id[str(failed.pk)]["errmsg"]
    assert by_id[str(sent.pk)]["finished_at"].endswith("Z")


@pytest.mark.django_db
def test_the_202_body_is_the_same_as_the_detail_view(api_client, authorizer):
    response = api_client.post("/api/v1/uploads/", {"media": media_file(image_bytes()),
                                                    "authorizer_appid": authorizer.appid}, format="multipart")

    assert response.status_code == 202 and response["Content-Type"] == "application/json"
    assert response["Location"] == f"/api/v1/uploads/{response.json()['id']}/"
    detail = api_client.get(response["Location"])
    assert response.content == detail.content


# -- the one-statement SQL --------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_bytes_go_in_and_come_out_exactly_as_binary(authorizer, component, make_upload, settings):
    upload = make_upload(authorizer)
    every_byte = bytes(range(256)) * 4097  # every value, ~1 MB: a hex or escape mistake would show
    UploadBlob.objects.filter(upload_id=upload.pk).update(data=every_byte)

    claimed = pg.upload_claim(upload_id=upload.pk, now=timezone.now(),
                              lease_until=timezone.now() + timedelta(seconds=60), since=None)

    assert claimed is not None and claimed.data == every_byte and not claimed.took_over
    assert claimed.upload.status == Upload.Status.UPLOADING and claimed.upload.authorizer.pk == authorizer.pk


@pytest.mark.django_db
def test_the_insert_sends_the_bytes_as_a_binary_parameter_not_in_the_sql(api_client, authorizer):
    data = image_bytes(size=(300, 300))
    with CaptureQueriesContext(connection) as ctx:
        response = api_client.post("/api/v1/uploads/", {"media": media_file(data),
                                                        "authorizer_appid": authorizer.appid}, format="multipart")

    assert response.status_code == 202
    insert = [q["sql"] for q in ctx.captured_queries if "INSERT INTO" in q["sql"]]
    assert len(insert) == 1 and "uploads_uploadblob" in insert[0] and "uploads_upload" in insert[0]
    assert len(insert[0]) < 2000  # the statement's text, without the image in it (hex would be 2x its size)
    assert bytes(UploadBlob.objects.get(upload_id=response.json()["id"]).data) == data


@pytest.mark.django_db(transaction=True)
def test_of_many_simultaneous_claims_exactly_one_wins(authorizer, component, make_upload):
    upload = make_upload(authorizer)
    start, won = threading.Barrier(8), []

    def claim():
        try:
            start.wait()
            now = timezone.now()
            if pg.upload_claim(upload_id=upload.pk, now=now, lease_until=now + timedelta(seconds=60), since=None):
                won.append(1)
        finally:
            connection.close()

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)

    assert won == [1]
    assert Upload.objects.get(pk=upload.pk).status == Upload.Status.UPLOADING


@pytest.mark.django_db
def test_a_result_is_not_written_by_a_run_that_lost_its_lease(authorizer, component, make_upload):
    upload = make_upload(authorizer)
    now = timezone.now()
    claimed = pg.upload_claim(upload_id=upload.pk, now=now, lease_until=now + timedelta(seconds=60), since=None)
    Upload.objects.filter(pk=upload.pk).update(lease_until=now + timedelta(seconds=99))  # another run's lease
    attempt = UploadAttempt(upload=claimed.upload, number=1, started_at=now, duration_ms=1.0, outcome="succeeded")

    written, _ = pg.upload_result_write(upload=claimed.upload, lease_until=claimed.upload.lease_until,
                                        values={"status": Upload.Status.SUCCEEDED, "url": "http://x/y"},
                                        attempts=[attempt], event=("upload.succeeded", {"id": "x"}), now=now)

    assert not written
    row = Upload.objects.get(pk=upload.pk)
    assert row.status == Upload.Status.UPLOADING and row.url == ""
    assert not UploadAttempt.objects.filter(upload=upload).exists()
    from webhooks.models import WebhookEvent

    assert not WebhookEvent.objects.filter(tenant=authorizer.tenant, type__startswith="upload.").exists()


@pytest.mark.django_db(transaction=True)
def test_the_task_writes_result_attempt_and_event_in_one_statement(
    authorizer, component, make_upload, published_tasks
):
    from webhooks.models import WebhookEvent

    upload = make_upload(authorizer)
    with CaptureQueriesContext(connection) as ctx:
        outcome = upload_process(upload_id=upload.pk)

    assert outcome.status == "succeeded"
    assert len(ctx.captured_queries) == 2, [q["sql"][:80] for q in ctx.captured_queries]  # claim, result
    upload.refresh_from_db()
    assert [(a.number, a.outcome, a.token_generation) for a in upload.attempt_records.all()] == [
        (1, "succeeded", authorizer.token_generation)]
    event = WebhookEvent.objects.get(tenant=authorizer.tenant, type__startswith="upload.")
    assert event.type == "upload.succeeded" and event.data == upload_json(Upload.objects.get(pk=upload.pk))
    # No endpoint: recorded for the catch-up API, already dispatched, and no dispatch task was sent.
    assert event.dispatched_at is not None
    assert [name for name, _ in published_tasks if name == "webhooks.dispatch_event"] == []


@pytest.mark.django_db(transaction=True)
def test_with_an_endpoint_the_event_is_dispatched(authorizer, component, make_upload, published_tasks):
    from webhooks.models import WebhookEndpoint, WebhookEvent

    endpoint = WebhookEndpoint(tenant=authorizer.tenant, url="http://127.0.0.1:9/hook", events=["*"])
    endpoint.set_secret("s" * 32)
    endpoint.save()
    upload = make_upload(authorizer)

    assert upload_process(upload_id=upload.pk).status == "succeeded"

    event = WebhookEvent.objects.get(tenant=authorizer.tenant, type__startswith="upload.")
    assert event.dispatched_at is None  # the dispatch task creates the deliveries and marks it
    assert ("webhooks.dispatch_event", [str(event.pk)]) in published_tasks


# -- ownership, re-read only when the claim's read may be stale --------------------------------------------------


@pytest.mark.django_db
def test_an_account_moved_while_its_token_was_refreshed_is_not_sent_to(
    component, make_tenant, make_authorizer, make_upload, monkeypatch
):
    from tenants.services import tokens

    alpha, beta = make_tenant("alpha"), make_tenant("beta")
    authorizer = make_authorizer(alpha)
    upload = make_upload(authorizer)
    expire_access_token(authorizer)  # the run must refresh the token first
    real_fetch = tokens._AuthorizerToken.fetch

    def fetch_and_move(self, row, **kwargs):
        fetched = real_fetch(self, row, **kwargs)
        Authorizer.objects.filter(pk=authorizer.pk).update(tenant=beta)  # the operator moves it meanwhile
        return fetched

    monkeypatch.setattr(tokens._AuthorizerToken, "fetch", fetch_and_move)
    outcome = upload_process(upload_id=upload.pk)

    assert outcome.status == Upload.Status.REJECTED
    assert "moved to another merchant" in Upload.objects.get(pk=upload.pk).errmsg
    assert sim_count(component, UPLOADIMG) == 0


@pytest.mark.django_db
def test_a_slow_run_re_reads_the_owner_before_sending(
    component, make_tenant, make_authorizer, make_upload, monkeypatch
):
    from uploads.services import process

    alpha, beta = make_tenant("alpha"), make_tenant("beta")
    authorizer = make_authorizer(alpha)
    upload = make_upload(authorizer)
    real = process.authorizer_access_token_get

    def slow_token(**kwargs):  # the stored token, served after the row read with the claim has aged
        lease = real(**kwargs)
        Authorizer.objects.filter(pk=authorizer.pk).update(tenant=beta)
        monkeypatch.setattr(process.time, "monotonic", lambda: time.perf_counter() + 3600)
        return lease

    monkeypatch.setattr(process, "authorizer_access_token_get", slow_token)
    assert upload_process(upload_id=upload.pk).status == Upload.Status.REJECTED
    assert sim_count(component, UPLOADIMG) == 0


# -- the cache client and the WeChat client's environment -------------------------------------------------------


def test_the_redis_cache_builds_one_client_per_pool(settings):
    import os

    from django.core.cache import caches

    settings.CACHES = {"default": {"BACKEND": "openplatform.core.cache.RedisCache",
                                   "LOCATION": os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")}}
    backend = caches["default"]._cache
    assert backend.get_client(write=True) is backend.get_client(write=True)
    assert backend.get_client("a") is backend.get_client("b")


def test_the_wechat_client_reads_the_proxy_environment_once(monkeypatch):
    from openplatform.wechat.client import WeChatClient

    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:3128")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    client = WeChatClient(api_base="https://api.weixin.qq.com")
    assert client.session.proxies.get("https") == "http://127.0.0.1:3128"
    assert client.session.verify == "/etc/ssl/certs/ca-certificates.crt"
    assert client.session.trust_env is False  # not read again on every call

    monkeypatch.setenv("NO_PROXY", "api.weixin.qq.com")
    assert "https" not in WeChatClient(api_base="https://api.weixin.qq.com").session.proxies


def test_json_bytes_escapes_what_drf_escapes():
    data = {"a": "line\u2028sep\u2029é", "b": [1, None, True]}
    assert json_bytes(data) == JSONRenderer().render(data)
    assert json.loads(json_bytes(data)) == data
    assert hashlib.sha256(json_bytes(data)).digest()  # bytes, ready for the response


# -- the first statement as the connection's health check ---------------------------------------------------------


def _start_of_a_request() -> None:
    """What Django does when a request (or, with openplatform/celery.py, a task) starts."""
    from django.db import close_old_connections

    close_old_connections()
    assert connection.connection is not None and connection.health_check_done is False


@pytest.mark.django_db(transaction=True)
def test_a_reused_connection_is_checked_by_its_first_statement_not_by_a_select_1(tenant, monkeypatch):
    from tenants.auth import _key_with_tenant
    from tenants.services.keys import api_key_create

    api_key_obj, _raw = api_key_create(tenant=tenant, name="test")
    connection.ensure_connection()
    _start_of_a_request()
    checks = []
    monkeypatch.setattr(connections["default"], "is_usable", lambda: checks.append(1) or True)

    assert _key_with_tenant(api_key_obj.prefix).pk == api_key_obj.pk
    assert checks == [] and connection.health_check_done is True
    pg.upload_claim(upload_id=uuid.uuid4(), now=timezone.now(), lease_until=timezone.now(), since=None)
    assert checks == []  # checked once per request, by the first statement

    _start_of_a_request()
    with connection.cursor() as cursor:  # any other first use still gets Django's SELECT 1
        cursor.execute("SELECT 1")
    assert checks == [1]


@pytest.mark.django_db(transaction=True)
def test_a_connection_that_died_while_idle_is_replaced_and_the_first_statement_still_answers(tenant):
    import psycopg

    from tenants.auth import _key_with_tenant
    from tenants.services.keys import api_key_create

    api_key_obj, _raw = api_key_create(tenant=tenant, name="test")
    connection.ensure_connection()
    before = connection.connection.info.backend_pid
    _start_of_a_request()
    dsn = connection.connection.info.dsn
    with psycopg.connect(dsn, autocommit=True) as other:  # as a restarted server or a failover would
        other.execute("SELECT pg_terminate_backend(%s)", [before])

    assert _key_with_tenant(api_key_obj.prefix).pk == api_key_obj.pk
    assert connection.connection.info.backend_pid != before
    assert connection.health_check_done is True


def test_the_broker_channel_builds_one_redis_client_per_pool():
    import os

    from kombu import Connection

    from openplatform.core import broker

    broker.install()
    with Connection(os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")) as conn:
        channel = conn.default_channel
        assert isinstance(channel, broker.Channel)
        client = channel._create_client()
        assert channel._create_client() is client  # publish, delivery bookkeeping and ack share it
        assert client.connection_pool is channel.pool
        channel._disconnect_pools()  # as after a fork or a reconnect: the next client is the new pool's
        assert channel._create_client() is not client
        assert channel._create_client().connection_pool is channel.pool
        assert channel._create_client(asynchronous=True) is not channel._create_client()
        producer = conn.Producer()
        producer.publish({"n": 1}, routing_key="test-broker-channel", declare=[conn.SimpleQueue("test-broker-channel").queue])
        with conn.SimpleQueue("test-broker-channel") as queue:
            message = queue.get(timeout=5)
            assert message.payload == {"n": 1}
            message.ack()


# -- the accept path's one statement -------------------------------------------------------------------------------


@pytest.mark.django_db
def test_one_statement_finds_the_authorizer_and_inserts_only_when_nothing_is_to_be_reused(
    authorizer, make_authorizer, make_tenant, make_upload
):
    from uploads.services.dedupe import dedupe_since

    def new_upload(sha256: str) -> Upload:
        return Upload(tenant=authorizer.tenant, sha256=sha256, size=3, original_size=3, content_type="image/png",
                      width=1, height=1, request_fingerprint="f", next_attempt_at=timezone.now())

    data = image_bytes("PNG", color=(9, 8, 7))
    sha = hashlib.sha256(data).hexdigest()
    # another tenant's appid: nothing found, nothing inserted
    elsewhere = make_authorizer(make_tenant("globex"))
    upload = new_upload(sha)
    assert pg.upload_insert_for_appid(upload, data, appid=elsewhere.appid, since=dedupe_since()) == (None, None, False)
    assert not Upload.objects.filter(pk=upload.pk).exists()

    # new bytes: the record (for the authorizer found) and its bytes
    found, reusable, inserted = pg.upload_insert_for_appid(upload, data, appid=authorizer.appid, since=dedupe_since())
    assert (found.pk, reusable, inserted) == (authorizer.pk, None, True)
    stored = Upload.objects.get(pk=upload.pk)
    assert stored.authorizer_id == authorizer.pk and upload.authorizer.pk == authorizer.pk
    assert bytes(UploadBlob.objects.get(upload_id=upload.pk).data) == data

    # bytes that already succeeded for the account: found, not inserted (the caller records the reuse)
    Upload.objects.filter(pk=upload.pk).update(status=Upload.Status.SUCCEEDED, url="http://mmbiz/x",
                                               finished_at=timezone.now())
    again = new_upload(sha)
    found, reusable, inserted = pg.upload_insert_for_appid(again, data, appid=authorizer.appid, since=dedupe_since())
    assert (found.pk, reusable.upload_id, reusable.url, inserted) == (authorizer.pk, upload.pk, "http://mmbiz/x", False)
    assert not Upload.objects.filter(pk=again.pk).exists()
    # with deduplication off, the same bytes are a new upload
    assert pg.upload_insert_for_appid(again, data, appid=authorizer.appid, since=None)[2] is True


@pytest.mark.django_db
def test_the_statements_send_what_django_would_for_every_column(authorizer, admin_user):
    """Columns sent without Field.get_db_prep_save (uploads/services/pg.py) get what it would have given."""
    from uploads.services.pg import _field_plan, _param, insert_params

    now = timezone.now()
    upload = Upload(
        tenant=authorizer.tenant, authorizer=authorizer, requested_by=Upload.RequestedBy.ADMIN, admin_user=admin_user,
        idempotency_key="k-\u00e9", request_fingerprint="f" * 64, sha256="a" * 64, size=10, original_size=20,
        fitted=True, content_type="image/png", width=3, height=4, status=Upload.Status.UPLOADING,
        permission_required=[1, 8], permission_granted=[11], permission_passed=True, url="http://mmbiz/x",
        errcode=40164, errmsg="invalid ip \u2028", attempts=2, attempts_before_retry=1, started_at=now,
        finished_at=now, next_attempt_at=now, lease_until=now, bytes_purged_at=now, dedupe=False,
        reused_from_id=uuid.uuid4(),
    )
    fast = insert_params(upload)
    fields = [f for f in Upload._meta.concrete_fields if f.attname != "authorizer_id"]
    django = {f"f{i}": f.get_db_prep_save(f.pre_save(upload, True), connection)
              for i, f in enumerate(Upload._meta.concrete_fields) if f.attname != "authorizer_id"}
    assert fast.keys() == django.keys() and len(fast) == len(fields)
    for i, f in enumerate(Upload._meta.concrete_fields):
        if f.attname == "authorizer_id":
            continue
        if f.attname == "updated_at":  # auto_now: each call stamps its own time
            assert isinstance(fast[f"f{i}"], type(django[f"f{i}"]))
            continue
        mine, theirs = fast[f"f{i}"], django[f"f{i}"]
        assert type(mine) is type(theirs), f.attname
        assert (mine.obj if hasattr(mine, "obj") else mine) == (theirs.obj if hasattr(theirs, "obj") else theirs), f.attname
    for f in fields:  # the result's SET values
        field, how = _field_plan(f.name)
        for value in (getattr(upload, f.attname), None):
            mine, theirs = _param(field, how, value, connection), f.get_db_prep_save(value, connection)
            assert type(mine) is type(theirs), f.name
            assert (mine.obj if hasattr(mine, "obj") else mine) == (theirs.obj if hasattr(theirs, "obj") else theirs)


@pytest.mark.django_db
def test_an_account_that_lost_its_permissions_gets_a_new_upload_not_an_old_url(api_client, authorizer, component):
    data = image_bytes("PNG", color=(7, 7, 7))
    first = api_client.post("/api/v1/uploads/", {"media": media_file(data), "authorizer_appid": authorizer.appid},
                            format="multipart").json()
    Upload.objects.filter(pk=first["id"]).update(status=Upload.Status.SUCCEEDED, url="http://mmbiz/old",
                                                 finished_at=timezone.now())
    Authorizer.objects.filter(pk=authorizer.pk).update(func_info=[2, 3])  # none of uploadimg's sets

    second = api_client.post("/api/v1/uploads/", {"media": media_file(data), "authorizer_appid": authorizer.appid},
                             format="multipart")

    assert second.status_code == 202 and second.json()["status"] == "queued" and second.json()["reused_from"] is None
    assert UploadBlob.objects.filter(upload_id=second.json()["id"]).exists()
    assert upload_process(upload_id=second.json()["id"]).status == Upload.Status.REJECTED


@pytest.mark.django_db(transaction=True)
def test_the_task_is_sent_with_the_reprs_celery_would_have_made(authorizer, component, make_upload):
    from celery.signals import before_task_publish
    from celery.utils.saferepr import saferepr

    seen = []

    def record(sender=None, body=None, headers=None, **kwargs) -> None:
        seen.append((list(body[0]), headers["argsrepr"], headers["kwargsrepr"]))

    before_task_publish.connect(record, weak=False)
    try:
        upload = make_upload(authorizer)
    finally:
        before_task_publish.disconnect(record)

    assert seen == [([str(upload.pk)], saferepr((str(upload.pk),)), saferepr({}))]


@pytest.mark.django_db(transaction=True)
def test_an_upload_after_the_database_dropped_the_connection_is_accepted(api_client, authorizer, component):
    import psycopg

    connection.ensure_connection()
    before = connection.connection.info.backend_pid
    with psycopg.connect(connection.connection.info.dsn, autocommit=True) as other:  # a restart, a failover
        other.execute("SELECT pg_terminate_backend(%s)", [before])
    # What Django does when a request starts (its test client leaves it out around the requests it makes).
    _start_of_a_request()

    response = api_client.post("/api/v1/uploads/", {"media": media_file(image_bytes("PNG", color=(1, 9, 1))),
                                                    "authorizer_appid": authorizer.appid}, format="multipart")

    assert response.status_code == 202, response.content
    assert connection.connection.info.backend_pid != before
    assert UploadBlob.objects.filter(upload_id=response.json()["id"]).exists()


@pytest.mark.django_db(transaction=True)
def test_a_statement_that_fails_on_a_live_connection_is_not_run_again(monkeypatch):
    from django.db import OperationalError

    from openplatform.core import sql

    connection.ensure_connection()
    _start_of_a_request()
    before = connection.connection.info.backend_pid
    runs = []
    real = sql._execute

    def failing(conn, *args, **kwargs):
        runs.append(1)
        return real(conn, "SELECT pg_sleep(1)", {}, rows=True, binary=False)

    monkeypatch.setattr(sql, "_execute", failing)
    with connection.cursor() as cursor:
        cursor.execute("SET statement_timeout = '50ms'")
    _start_of_a_request()
    with pytest.raises(OperationalError):  # canceled by the timeout: an error of the statement, not of the connection
        sql.execute("SELECT 1", {}, health_check=True)
    assert runs == [1] and connection.connection.info.backend_pid == before
    with connection.cursor() as cursor:
        cursor.execute("RESET statement_timeout")


def _prepared_statements() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements WHERE from_sql IS FALSE")
        return [row[0] for row in cursor.fetchall()]


@pytest.mark.django_db
def test_the_upload_path_statements_are_prepared_on_the_server_and_django_queries_are_not(
    api_client, authorizer, component,
):
    # psycopg ignores prepare=True while the connection's prepare_threshold is None (Django's default):
    # every statement was parsed and planned again, about half of PostgreSQL's CPU per upload.
    ids = []
    for color in [(10, 20, 30), (40, 50, 60)]:
        response = api_client.post("/api/v1/uploads/", {"media": media_file(image_bytes(color=color)),
                                                        "authorizer_appid": authorizer.appid}, format="multipart")
        assert response.status_code == 202
        ids.append(response.json()["id"])
    for upload_id in ids:
        upload_process(upload_id=upload_id)

    prepared = _prepared_statements()
    assert Upload.objects.filter(pk__in=ids, status=Upload.Status.SUCCEEDED).count() == 2
    assert sum("hashed_key" in s for s in prepared) == 1  # the API key, once for both requests
    assert sum("INSERT INTO" in s and "uploads_uploadblob" in s for s in prepared) == 1  # the accept
    assert sum("FOR UPDATE" in s and "status = 'uploading'" in s and "uploads_uploadattempt" not in s
               for s in prepared) == 1  # the claim
    assert sum("uploads_uploadattempt" in s and "INSERT INTO" in s and "FOR UPDATE" in s
               for s in prepared) == 1  # the result (it locks its row as the claim does)
    assert not [s for s in prepared if s.lstrip().startswith(("SELECT \"", "INSERT INTO \"", "UPDATE \""))]


@pytest.mark.django_db
def test_behind_a_transaction_pooler_nothing_is_prepared(monkeypatch):
    from openplatform.core import sql

    monkeypatch.setitem(connection.settings_dict, "DISABLE_SERVER_SIDE_CURSORS", True)
    assert sql.execute("SELECT 41 + %s", [1]) == [(42,)]
    assert sql.execute("SELECT 41 + %s", [1]) == [(42,)]
    assert not [s for s in _prepared_statements() if "41 +" in s]
    monkeypatch.setitem(connection.settings_dict, "DISABLE_SERVER_SIDE_CURSORS", False)
    assert sql.execute("SELECT 41 + %s", [1]) == [(42,)]
    assert [s for s in _prepared_statements() if "41 +" in s]


# -- plans that stay cheap as the table grows (docs/architecture.md §7) -------------------------------------------


def _generic_plan(sql: str, params: dict) -> str:
    """EXPLAIN ANALYZE of `sql` run as the upload path runs it: prepared, with a generic plan (the planner does
    not see the values; settings force it: docs/architecture.md §7, "Prepared means prepared")."""
    import re

    from psycopg import sql as psql

    names: list[str] = []

    def number(match) -> str:
        if match.group(1) not in names:
            names.append(match.group(1))
        return f"${names.index(match.group(1)) + 1}"

    prepared = re.sub(r"%\((\w+)\)s", number, sql)
    raw = connection.connection
    values = ", ".join(psql.Literal(params[n]).as_string(raw) for n in names)
    with transaction.atomic(), connection.cursor() as cursor:  # rolled back: the statement ran for its plan only
        cursor.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        cursor.execute("DEALLOCATE ALL")
        cursor.execute(f"PREPARE plan_probe AS {prepared}")
        cursor.execute(f"EXPLAIN (ANALYZE, COSTS OFF, BUFFERS) EXECUTE plan_probe({values})")
        plan = "\n".join(row[0] for row in cursor.fetchall())
        cursor.execute("DEALLOCATE plan_probe")
        transaction.set_rollback(True)
    return plan


@pytest.mark.django_db
def test_the_claim_and_the_dedupe_lookup_use_their_keys_whatever_the_statistics(authorizer, component, make_upload):
    # What made the generic plans go wrong in the bench: thousands of succeeded uploads of the same bytes
    # in the dedupe window (sha256 looks unselective), and statistics taken while nothing was in flight
    # (the in-flight index looks empty). One plan then walked upload_finished_at_idx through the whole
    # window; the other found the row to claim by reading the in-flight index, every queued upload of it.
    template = make_upload(authorizer)
    Upload.objects.filter(pk=template.pk).update(status=Upload.Status.SUCCEEDED, finished_at=timezone.now(),
                                                 url="http://mmbiz.qpic.cn/x")
    columns = [f.column for f in Upload._meta.concrete_fields]
    select = ["gen_random_uuid()" if c == "id" else
              "finished_at - g * interval '1 second'" if c == "finished_at" else connection.ops.quote_name(c)
              for c in columns]
    with connection.cursor() as cursor:
        cursor.execute(f"INSERT INTO uploads_upload ({', '.join(map(connection.ops.quote_name, columns))}) "
                       f"SELECT {', '.join(select)} FROM uploads_upload, generate_series(1, 20000) g "
                       "WHERE id = %s", [template.pk])
        cursor.execute("ANALYZE uploads_upload")
    queued = [make_upload(authorizer, image_bytes(color=(i, 9, 9))) for i in range(3)]  # in flight after ANALYZE
    now = timezone.now()

    claim = _generic_plan(pg._claim_sql(), {"id": queued[0].pk, "now": now, "lease": now + timedelta(seconds=60),
                                            "dedupe": True, "since": now - timedelta(days=30)})
    assert "Index Scan using uploads_upload_pkey on uploads_upload" in claim and "Index Cond: (id = $1)" in claim
    assert "upload_in_flight_due_idx" not in claim
    assert "upload_dedupe_newest_idx" in claim and "upload_finished_at_idx" not in claim

    accept = _generic_plan(pg._insert_for_appid_sql(), {
        **pg.insert_params(Upload(tenant=authorizer.tenant, sha256=template.sha256, size=1, original_size=1,
                                  content_type="image/png", next_attempt_at=now)),
        "tenant": authorizer.tenant_id, "appid": authorizer.appid, "sha256": template.sha256, "data": b"x",
        "dedupe": True, "since": now - timedelta(days=30)})
    assert "upload_dedupe_newest_idx" in accept and "upload_finished_at_idx" not in accept
    # The lookup found the newest of the 20,001 at once: a handful of index and heap pages, not the window.
    lookup = accept[accept.index("upload_dedupe_newest_idx"):]
    assert "rows=1 loops=1" in lookup.splitlines()[0]
    # The result's compare-and-set on the lease: the row by its key as well, not through the in-flight index.
    Upload.objects.filter(pk=queued[1].pk).update(status=Upload.Status.UPLOADING, lease_until=now)
    result = _generic_plan(*pg._result_statement(
        upload=queued[1], lease_until=now, values={"status": Upload.Status.SUCCEEDED, "finished_at": now,
                                                   "url": "http://mmbiz.qpic.cn/y"}, attempts=[], event=None, now=now))
    assert "Index Scan using uploads_upload_pkey on uploads_upload" in result and "upload_in_flight_due_idx" not in result
    assert "Update on uploads_upload up (actual time" in result and "rows=1 loops=1" in result.split("Update on")[1].splitlines()[0]
    assert Upload.objects.filter(pk=queued[0].pk, status=Upload.Status.QUEUED).exists()  # the probes rolled back
    assert Upload.objects.filter(pk=queued[1].pk, status=Upload.Status.UPLOADING).exists()
