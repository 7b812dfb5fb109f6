"""/healthz (the process answers) and /readyz (database, broker, ticket age)."""

from __future__ import annotations

from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_GET

from openplatform.component.config import component_config
from openplatform.component.models import TICKET_STALE_AFTER
from openplatform.component.tickets import component_ticket_age
from openplatform.ops.metrics import operator_token_presented


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def _check_database() -> dict:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return {"ok": True}
    except Exception as exc:
        return {"ok": False, "error": exc.__class__.__name__}


def _check_broker() -> dict:
    from openplatform.celery import app

    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        return {"ok": True}
    except Exception as exc:
        return {"ok": False, "error": exc.__class__.__name__}


def _check_ticket() -> dict:
    config = component_config()
    if not config.appid:
        return {"ok": True, "detail": "component not configured"}
    try:
        age = component_ticket_age(component_appid=config.appid)
    except Exception as exc:
        return {"ok": False, "error": exc.__class__.__name__}
    if age is None:
        return {"ok": False, "error": "no component_verify_ticket received yet"}
    seconds = int(age.total_seconds())
    if seconds > TICKET_STALE_AFTER.total_seconds():
        limit = int(TICKET_STALE_AFTER.total_seconds() // 60)
        return {"ok": False, "age_seconds": seconds, "error": f"newest ticket is older than {limit} minutes"}
    return {"ok": True, "age_seconds": seconds}


@require_GET
def readyz(request: HttpRequest) -> JsonResponse:
    """503 when the database or broker is unreachable. A stale ticket is reported as an error in the
    body ("degraded") without failing readiness: taking the web tier out would not bring tickets back.

    Anonymous callers (load balancers, the internet) get the status only; the checks (which backend
    failed and how, the ticket's age) need the metrics bearer token, like /metrics."""
    checks = {"database": _check_database(), "broker": _check_broker(), "ticket": _check_ticket()}
    ready = checks["database"]["ok"] and checks["broker"]["ok"]
    status = "ok" if ready and checks["ticket"]["ok"] else ("degraded" if ready else "unavailable")
    body = {"status": status, "checks": checks} if operator_token_presented(request) else {"status": status}
    return JsonResponse(body, status=200 if ready else 503)


@require_GET
def favicon(request: HttpRequest) -> HttpResponse:
    """No icon: an empty answer browsers cache for a day, instead of a 404 on every first page."""
    response = HttpResponse(status=204)
    response["Cache-Control"] = "public, max-age=86400"
    return response


def not_found(request: HttpRequest, exception=None):
    """JSON 404 under /api/ (the merchant API's error shape); Django's page elsewhere."""
    if request.path.startswith("/api/"):
        return JsonResponse({"code": "not_found", "detail": "No such endpoint."}, status=404)
    from django.views.defaults import page_not_found

    return page_not_found(request, exception)
