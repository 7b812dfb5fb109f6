"""GET /metrics: access control, values read from the database, observations from the client's logs."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from django.conf import settings as django_settings
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from tests.operations_seed import SECRETS, TICKET_AGE, seed_operations

pytestmark = pytest.mark.django_db

METRICS_TOKEN = "metrics-token-for-tests-0123456789"
AUTHORIZER_TOKEN_PATH = "/cgi-bin/component/api_authorizer_token"


@pytest.fixture
def scrape(client, settings):
    """GET /metrics with the bearer token; returns {(name, frozenset(labels)): value} and the raw text."""
    settings.METRICS_TOKEN = METRICS_TOKEN

    def get() -> tuple[dict, str]:
        response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {METRICS_TOKEN}")
        assert response.status_code == 200
        assert response["Content-Type"].startswith("text/plain")
        text = response.content.decode()
        samples = {
            (sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }
        return samples, text

    return get


def value(samples: dict, name: str, **labels) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def in_process(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# --- access ------------------------------------------------------------------------------------------


def test_metrics_is_a_404_when_debug_is_off_and_no_token_is_configured(client, settings):
    settings.DEBUG = False
    settings.METRICS_TOKEN = ""
    assert client.get("/metrics").status_code == 404
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer ").status_code == 404
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer anything").status_code == 404


def test_metrics_needs_the_bearer_token_when_debug_is_off(client, settings):
    settings.DEBUG = False
    settings.METRICS_TOKEN = METRICS_TOKEN
    assert client.get("/metrics").status_code == 404
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong-token").status_code == 404
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Basic {METRICS_TOKEN}").status_code == 404
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {METRICS_TOKEN}x").status_code == 404
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {METRICS_TOKEN}")
    assert response.status_code == 200
    assert {"max-age=0", "no-cache", "no-store"} <= {part.strip() for part in response["Cache-Control"].split(",")}
    assert client.post("/metrics", HTTP_AUTHORIZATION=f"Bearer {METRICS_TOKEN}").status_code == 405


def test_metrics_is_open_when_debug_is_on(client, settings):
    settings.DEBUG = True
    settings.METRICS_TOKEN = ""
    assert client.get("/metrics").status_code == 200


# --- values from the database ------------------------------------------------------------------------


def test_database_aggregates_match_the_seeded_day_and_show_no_secret(scrape):
    # Given a day of operations
    seed_operations()

    # When Prometheus scrapes
    samples, text = scrape()

    # Then the queue, the finished uploads by status and errcode, and the authorizers match it
    assert value(samples, "openplatform_metrics_database_up") == 1
    assert value(samples, "openplatform_upload_queue_depth", status="queued") == 1
    assert value(samples, "openplatform_upload_queue_depth", status="uploading") == 1
    assert 5 * 60 - 5 <= value(samples, "openplatform_upload_queue_oldest_age_seconds", status="queued") <= 5 * 60 + 60
    finished = "openplatform_uploads_finished_last_24h"
    assert value(samples, finished, status="succeeded", errcode="") == 5
    assert value(samples, finished, status="failed", errcode="45009") == 3
    assert value(samples, finished, status="failed", errcode="48001") == 2
    assert value(samples, finished, status="rejected", errcode="") == 1
    assert value(samples, finished, status="failed", errcode="40001") is None  # two days old
    assert value(samples, finished, status="failed", errcode="") == 0  # always present, for ratios
    assert value(samples, "openplatform_authorizers", status="authorized") == 2
    assert value(samples, "openplatform_authorizers", status="reauthorization_required") == 1
    assert value(samples, "openplatform_authorizers", status="revoked") == 2
    assert value(samples, "openplatform_token_refreshes_persisted_total", kind="authorizer") == 6
    assert value(samples, "openplatform_token_refreshes_persisted_total", kind="component") == 7
    appid = django_settings.WECHAT_COMPONENT_APPID
    assert 3500 <= value(samples, "openplatform_component_token_seconds_left", component_appid=appid) <= 3600
    age = value(samples, "openplatform_component_ticket_age_seconds", component_appid=appid)
    assert TICKET_AGE.total_seconds() <= age <= TICKET_AGE.total_seconds() + 60

    # And nothing secret is in the output
    for secret in (*SECRETS, METRICS_TOKEN, django_settings.WECHAT_COMPONENT_APPSECRET,
                   *django_settings.FIELD_ENCRYPTION_KEYS):
        assert secret not in text
    assert "gAAAAA" not in text  # no Fernet ciphertext either


def test_a_component_without_any_ticket_has_an_infinite_ticket_age(scrape):
    samples, _ = scrape()
    age = value(samples, "openplatform_component_ticket_age_seconds",
                component_appid=django_settings.WECHAT_COMPONENT_APPID)
    assert age == float("inf")
    assert value(samples, "openplatform_upload_queue_depth", status="queued") == 0


@pytest.mark.redis
def test_broker_queue_length_is_exported_for_a_redis_broker(scrape):
    from openplatform.celery import app

    # given an empty queue on the test's Redis broker (no worker consumes from it here)
    queue = app.conf.task_default_queue
    app.control.purge()
    try:
        samples, _ = scrape()
        assert [(labels, v) for (name, labels), v in samples.items() if name == "openplatform_broker_queue_length"] == [
            (frozenset({("queue", queue)}), 0)
        ]

        # when three messages are published and wait there
        for i in range(3):
            app.send_task("tests.metrics.never_consumed", args=[i], queue=queue)

        # then the scrape counts exactly them
        samples, _ = scrape()
        assert value(samples, "openplatform_broker_queue_length", queue=queue) == 3
    finally:
        app.control.purge()


# --- observations from log records -------------------------------------------------------------------


def test_every_token_refresh_record_counted_is_still_logged_by_its_service():
    """The refresh counter matches records by logger and message: a reworded message must fail here."""
    import importlib
    import inspect

    from openplatform.ops.metrics import TOKEN_REFRESH_RECORDS

    for logger_name, message in TOKEN_REFRESH_RECORDS:
        source = inspect.getsource(importlib.import_module(logger_name))
        assert f'"{message}"' in source, (logger_name, message)


def test_wechat_call_latency_and_token_refreshes_are_observed_from_the_logs(
    authorizer, component, scrape
):
    from tenants.services.tokens import authorizer_access_token_get
    from tests.fixtures import expire_access_token

    calls_before = in_process("openplatform_wechat_request_duration_seconds_count", path=AUTHORIZER_TOKEN_PATH)
    refreshed_before = in_process("openplatform_token_refreshes_total", kind="authorizer", outcome="refreshed")
    failed_before = in_process("openplatform_token_refreshes_total", kind="authorizer", outcome="failed")
    quota_before = in_process(
        "openplatform_wechat_requests_total", path=AUTHORIZER_TOKEN_PATH, outcome="QuotaExceeded", errcode="45009"
    )

    # When an expired token is refreshed through the simulator
    expire_access_token(authorizer)
    authorizer_access_token_get(authorizer=authorizer)

    # Then the call's latency and the refresh are counted
    assert in_process("openplatform_wechat_request_duration_seconds_count", path=AUTHORIZER_TOKEN_PATH) == calls_before + 1
    assert in_process("openplatform_token_refreshes_total", kind="authorizer", outcome="refreshed") == refreshed_before + 1

    # When WeChat answers the next refresh with its daily-quota error
    component.inject_fault(AUTHORIZER_TOKEN_PATH, "errcode", count=5, errcode=45009)
    expire_access_token(authorizer)
    with pytest.raises(Exception, match="45009"):
        authorizer_access_token_get(authorizer=authorizer)

    # Then the failure is counted with its errcode, and the scrape shows all of it
    assert in_process("openplatform_token_refreshes_total", kind="authorizer", outcome="failed") == failed_before + 1
    assert in_process(
        "openplatform_wechat_requests_total", path=AUTHORIZER_TOKEN_PATH, outcome="QuotaExceeded", errcode="45009"
    ) == quota_before + 1
    samples, text = scrape()
    # the two calls made here (the refresh, the refused one), on top of what earlier tests observed
    assert value(samples, "openplatform_wechat_request_duration_seconds_count", path=AUTHORIZER_TOKEN_PATH) == (
        calls_before + 2
    )
    assert value(samples, "openplatform_wechat_request_duration_seconds_bucket", path=AUTHORIZER_TOKEN_PATH,
                 le="+Inf") == calls_before + 2
    # from the database: onboarding stores the first token without a refresh; one refresh succeeded
    assert value(samples, "openplatform_token_refreshes_persisted_total", kind="authorizer") == 1
    lease_token = authorizer.get_access_token()
    assert lease_token and lease_token not in text


def test_with_a_multiprocess_dir_the_scrape_aggregates_what_other_processes_observed(scrape, tmp_path, monkeypatch):
    # Given another process (a worker, say) that observed a WeChat call through its logs
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "DJANGO_SETTINGS_MODULE": "tests.settings"}
    worker = textwrap.dedent(
        """
        import logging
        import django
        django.setup()
        logging.getLogger("openplatform.wechat").info(
            "wechat call",
            extra={"path": "/cgi-bin/media/uploadimg", "latency_ms": 87.5, "errcode": None, "outcome": "ok"},
        )
        """
    )
    subprocess.run([sys.executable, "-c", worker], env=env, check=True, timeout=60, cwd=django_settings.BASE_DIR)
    assert any(tmp_path.iterdir())

    # When this process scrapes with the same directory
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    samples, _ = scrape()

    # Then the other process's observation is there, next to the database aggregates
    upload_path = "/cgi-bin/media/uploadimg"
    assert value(samples, "openplatform_wechat_request_duration_seconds_count", path=upload_path) == 1
    assert value(samples, "openplatform_wechat_request_duration_seconds_bucket", path=upload_path, le="0.1") == 1
    assert value(samples, "openplatform_wechat_request_duration_seconds_bucket", path=upload_path, le="0.05") == 0
    assert value(samples, "openplatform_wechat_requests_total", path=upload_path, outcome="ok", errcode="") == 1
    assert value(samples, "openplatform_metrics_database_up") == 1
