"""/readyz tells anonymous callers only whether the service is ready; the operator's metrics token
also gets the checks (which backend failed, the ticket's age) (issue #11, point 13)."""

from __future__ import annotations

import pytest

from tests.worker import app_broker, free_port

TOKEN = "operator-metrics-token"


@pytest.fixture
def production_like(settings):
    settings.DEBUG = False
    settings.METRICS_TOKEN = TOKEN


@pytest.mark.django_db
def test_anonymous_callers_get_the_status_only(production_like, client, component, ticket):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.django_db
@pytest.mark.parametrize("header", ["Bearer wrong-token", f"Basic {TOKEN}", TOKEN, ""])
def test_a_wrong_or_missing_token_gets_the_status_only(production_like, client, component, ticket, header):
    response = client.get("/readyz", HTTP_AUTHORIZATION=header)
    assert response.json() == {"status": "ok"}


@pytest.mark.django_db
def test_the_metrics_token_gets_every_check(production_like, client, component, ticket):
    body = client.get("/readyz", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").json()
    assert body["status"] == "ok"
    assert set(body["checks"]) == {"database", "broker", "ticket"}
    assert body["checks"]["ticket"]["age_seconds"] < 60


@pytest.mark.django_db
def test_an_unreachable_broker_is_503_for_everyone_with_the_reason_for_the_operator_only(
    production_like, client, component, ticket
):
    with app_broker(f"redis://127.0.0.1:{free_port()}/0"):  # nothing listens there
        anonymous = client.get("/readyz")
        operator = client.get("/readyz", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert anonymous.status_code == operator.status_code == 503
    assert anonymous.json() == {"status": "unavailable"}
    assert operator.json()["checks"]["broker"]["ok"] is False
    assert operator.json()["checks"]["database"]["ok"] is True


def test_the_favicon_is_an_empty_cacheable_answer_not_a_404(client):
    response = client.get("/favicon.ico")
    assert response.status_code == 204 and "max-age=86400" in response["Cache-Control"]
