"""Prometheus metrics, served at GET /metrics.

Two sources, because the web server and the Celery workers are separate processes:

* **The database, read at scrape time** (`DatabaseCollector`): upload queue depth and the age of its
  oldest entry, uploads finished in the last 24 h by status and errcode, authorizers by status,
  token refreshes persisted (the `refresh_count` columns), component token lifetime left, and the age
  of the newest `component_verify_ticket`. These describe the whole deployment, whichever process
  answers the scrape. Each family is one aggregate query on an indexed column (five in all), plus
  one LLEN-like call to the broker when it is Redis.
* **Log records, observed in-process** (`MetricsLogHandler`, installed in `OpenPlatformConfig.ready`):
  WeChat call latency per endpoint and call outcomes (from the one structured record per HTTP attempt
  that `openplatform.wechat.client` writes to the "openplatform.wechat" logger: `path`, `latency_ms`,
  `errcode`, `outcome`), and token refreshes by outcome (from the records of
  `tenants.services.tokens` and `openplatform.component.token`). The protocol layer knows nothing of
  Prometheus or Django; it only logs.

  In-process metrics cover only the process that answers /metrics. Uploads and token refreshes
  mostly run in Celery workers, so in production set `PROMETHEUS_MULTIPROC_DIR` (the
  prometheus-client convention) to a directory shared by the web and worker processes *of one host*,
  emptied before they start: every process then writes its samples there and /metrics aggregates them.
  The persisted refresh count (`openplatform_token_refreshes_persisted_total`) comes from the
  database and needs none of this.

  These records are logged at INFO: with `LOG_LEVEL` above INFO only failed calls are observed.

Access: allowed when DEBUG is on, or with `Authorization: Bearer <METRICS_TOKEN>`; anything else is a
404 (the endpoint does not admit it exists). No label carries a secret: paths come without their query
string, appids are not labels at all except the component's own (public) appid.
"""

from __future__ import annotations

import hmac
import logging
import os
from datetime import timedelta

from django.conf import settings
from django.db import DatabaseError
from django.db.models import Count, Max, Min, Sum
from django.http import Http404, HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

from openplatform.component.config import component_config
from openplatform.component.models import TICKET_STALE_AFTER, ComponentAccessToken, ComponentVerifyTicket
from tenants.models import Authorizer
from uploads.models import Upload

logger = logging.getLogger(__name__)

WECHAT_LOGGER = "openplatform.wechat"
#: (logger name, unformatted message) of the token services' records -> (kind, outcome).
TOKEN_REFRESH_RECORDS: dict[tuple[str, str], tuple[str, str]] = {
    ("tenants.services.tokens", "authorizer token refreshed"): ("authorizer", "refreshed"),
    ("tenants.services.tokens", "authorizer token refresh failed: %s"): ("authorizer", "failed"),
    ("tenants.services.tokens", "authorizer needs re-authorization"): ("authorizer", "reauthorization_required"),
    ("openplatform.component.token", "component token refreshed"): ("component", "refreshed"),
    ("openplatform.component.token", "component token refresh failed: %s"): ("component", "failed"),
}
OBSERVED_LOGGERS = (WECHAT_LOGGER, *sorted({name for name, _ in TOKEN_REFRESH_RECORDS}))

#: WeChat answers in 30-200 ms; the client's timeout is 10 s by default.
LATENCY_BUCKETS = (0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0)
RECENT_WINDOW = timedelta(hours=24)

WECHAT_REQUEST_SECONDS = Histogram(
    "openplatform_wechat_request_duration_seconds",
    "Latency of one HTTP attempt to the WeChat API, by endpoint path (in-process, see PROMETHEUS_MULTIPROC_DIR).",
    ["path"],
    buckets=LATENCY_BUCKETS,
)
WECHAT_REQUESTS = Counter(
    "openplatform_wechat_requests",
    "HTTP attempts to the WeChat API by endpoint path, outcome (ok or the error class) and errcode.",
    ["path", "outcome", "errcode"],
)
TOKEN_REFRESHES = Counter(
    "openplatform_token_refreshes",
    "Token refreshes by kind (component, authorizer) and outcome, observed in-process from the token services' logs.",
    ["kind", "outcome"],
)
for _kind, _outcome in TOKEN_REFRESH_RECORDS.values():
    TOKEN_REFRESHES.labels(kind=_kind, outcome=_outcome)  # exported as 0 before the first event


# --- in-process observations, from log records -------------------------------------------------------


class MetricsLogHandler(logging.Handler):
    """Turns the structured log records of the WeChat client and token services into observations.

    It writes nothing anywhere; it never raises into the code that logged.
    """

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if record.name == WECHAT_LOGGER:
                self._observe_wechat_call(record)
                return
            event = TOKEN_REFRESH_RECORDS.get((record.name, record.msg if isinstance(record.msg, str) else ""))
            if event is not None:
                TOKEN_REFRESHES.labels(kind=event[0], outcome=event[1]).inc()
        except Exception:
            self.handleError(record)

    @staticmethod
    def _observe_wechat_call(record: logging.LogRecord) -> None:
        path = getattr(record, "path", None)
        latency_ms = getattr(record, "latency_ms", None)
        if not isinstance(path, str) or not isinstance(latency_ms, int | float):
            return  # not a per-attempt record
        errcode = getattr(record, "errcode", None)
        WECHAT_REQUEST_SECONDS.labels(path=path).observe(latency_ms / 1000.0)
        WECHAT_REQUESTS.labels(
            path=path,
            outcome=str(getattr(record, "outcome", "") or ""),
            errcode="" if errcode in (None, 0) else str(errcode),
        ).inc()


def metrics_log_handler_install() -> MetricsLogHandler:
    """Attach one handler to the observed loggers (idempotent). Called from OpenPlatformConfig.ready()."""
    existing = next((h for h in logging.getLogger(WECHAT_LOGGER).handlers if isinstance(h, MetricsLogHandler)), None)
    handler = existing or MetricsLogHandler()
    for name in OBSERVED_LOGGERS:
        observed = logging.getLogger(name)
        if handler not in observed.handlers:
            observed.addHandler(handler)
    if not logging.getLogger(WECHAT_LOGGER).isEnabledFor(logging.INFO):
        logger.warning("LOG_LEVEL is above INFO: WeChat call metrics will only count failed calls")
    return handler


# --- from the database, at scrape time --------------------------------------------------------------


class DatabaseCollector:
    """Aggregates read at scrape time; true for every process. A failing database is reported, not raised."""

    def collect(self):
        up = GaugeMetricFamily("openplatform_metrics_database_up", "1 if the database aggregates were read.")
        try:
            families = list(self._families())
        except DatabaseError as exc:
            logger.warning("metrics: database aggregates unavailable (%s)", exc.__class__.__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families
        broker = _broker_queue_length()
        if broker is not None:
            yield broker

    def _families(self) -> list:
        now = timezone.now()
        authorizers, authorizer_refreshes = _authorizer_family()
        component_token, component_refreshes = _component_token_family(now)
        persisted = CounterMetricFamily(
            "openplatform_token_refreshes_persisted",
            "Successful token refreshes recorded in the database (every process), by kind.",
            labels=["kind"],
        )
        persisted.add_metric(["authorizer"], authorizer_refreshes)
        persisted.add_metric(["component"], component_refreshes)
        return [
            *_upload_queue_families(now),
            _uploads_finished_family(now),
            authorizers,
            component_token,
            persisted,
            _ticket_age_family(now),
        ]


def _upload_queue_families(now) -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
    depth = GaugeMetricFamily(
        "openplatform_upload_queue_depth", "Uploads not yet final, by status (queued, uploading).", labels=["status"]
    )
    oldest = GaugeMetricFamily(
        "openplatform_upload_queue_oldest_age_seconds",
        "Age (since it was created) of the oldest upload not yet final, by status.",
        labels=["status"],
    )
    rows = {
        row["status"]: row
        for row in Upload.objects.in_flight()
        .values("status")
        .annotate(n=Count("pk"), oldest=Min("created_at"))
        .order_by()
    }
    for status in Upload.IN_FLIGHT_STATUSES:
        row = rows.get(status)
        depth.add_metric([status], row["n"] if row else 0)
        oldest.add_metric([status], max(0.0, (now - row["oldest"]).total_seconds()) if row else 0)
    return depth, oldest


def _uploads_finished_family(now) -> GaugeMetricFamily:
    family = GaugeMetricFamily(
        "openplatform_uploads_finished_last_24h",
        "Uploads that reached a final status in the last 24 hours, by status and WeChat errcode ('' for none).",
        labels=["status", "errcode"],
    )
    rows = (
        Upload.objects.filter(finished_at__gte=now - RECENT_WINDOW)
        .values("status", "errcode")
        .annotate(n=Count("pk"))
        .order_by()
    )
    counts: dict[tuple[str, str], int] = {}
    for row in rows:
        key = (row["status"], "" if row["errcode"] in (None, 0) else str(row["errcode"]))
        counts[key] = counts.get(key, 0) + row["n"]
    for status in Upload.FINAL_STATUSES:
        counts.setdefault((str(status), ""), 0)  # so that rate and ratio queries always find the series
    for (status, errcode), n in sorted(counts.items()):
        family.add_metric([status, errcode], n)
    return family


def _authorizer_family() -> tuple[GaugeMetricFamily, int]:
    """Authorizers by status, and the sum of their persisted refresh counts (one query)."""
    by_status = GaugeMetricFamily("openplatform_authorizers", "Authorizers by status.", labels=["status"])
    rows = {
        row["status"]: row
        for row in Authorizer.objects.values("status").annotate(n=Count("pk"), refreshes=Sum("refresh_count")).order_by()
    }
    for status in Authorizer.Status.values:
        by_status.add_metric([status], rows[status]["n"] if status in rows else 0)
    return by_status, sum(row["refreshes"] or 0 for row in rows.values())


def _component_token_family(now) -> tuple[GaugeMetricFamily, int]:
    """The component token's lifetime left, and the sum of its persisted refresh counts (one query)."""
    rows = list(ComponentAccessToken.objects.values_list("component_appid", "refresh_count", "expires_at"))
    left = GaugeMetricFamily(
        "openplatform_component_token_seconds_left",
        "Seconds until the stored component access token expires (0 when none).",
        labels=["component_appid"],
    )
    for appid, _, expires_at in rows:
        left.add_metric([appid], max(0.0, (expires_at - now).total_seconds()) if expires_at else 0.0)
    return left, sum(count for _, count, _ in rows)


def _ticket_age_family(now) -> GaugeMetricFamily:
    family = GaugeMetricFamily(
        "openplatform_component_ticket_age_seconds",
        "Age of the newest component_verify_ticket (+Inf when the configured component has none). "
        f"WeChat pushes one every 10 minutes; over {TICKET_STALE_AFTER.total_seconds():.0f} s means pushes are "
        "not arriving.",
        labels=["component_appid"],
    )
    latest = {
        row["component_appid"]: row["latest"]
        for row in ComponentVerifyTicket.objects.values("component_appid").annotate(latest=Max("received_at")).order_by()
    }
    configured = component_config().appid
    if configured and configured not in latest:
        family.add_metric([configured], float("inf"))
    for appid, received_at in sorted(latest.items()):
        family.add_metric([appid], max(0.0, (now - received_at).total_seconds()))
    return family


def _broker_queue_length() -> GaugeMetricFamily | None:
    """Messages waiting in the Celery queue, when the broker is Redis (else None: not exported)."""
    if not str(settings.CELERY_BROKER_URL).startswith(("redis://", "rediss://")):
        return None
    from openplatform.celery import app

    queue = app.conf.task_default_queue
    family = GaugeMetricFamily(
        "openplatform_broker_queue_length", "Messages waiting in the Celery queue (Redis broker).", labels=["queue"]
    )
    try:
        with app.connection_for_read() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
            try:
                size = conn.default_channel.queue_declare(queue=queue, passive=True).message_count
            except conn.channel_errors:  # the queue's list does not exist: nothing waiting
                size = 0
    except Exception as exc:
        logger.warning("metrics: broker queue length unavailable (%s)", exc.__class__.__name__)
        return None
    family.add_metric([queue], size)
    return family


# --- the endpoint -----------------------------------------------------------------------------------


def metrics_registry() -> CollectorRegistry:
    """What one scrape exports: in-process (or, with PROMETHEUS_MULTIPROC_DIR, every process's) metrics
    plus the database aggregates. Built per scrape so that nothing queries the database at import."""
    registry = CollectorRegistry(auto_describe=False)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        MultiProcessCollector(registry)
    else:
        registry.register(REGISTRY)
    registry.register(DatabaseCollector())
    return registry


def operator_token_presented(request: HttpRequest) -> bool:
    """The request carries `Authorization: Bearer $METRICS_TOKEN` (or DEBUG is on): it may read
    operational detail (metrics, readiness checks). Compared in constant time."""
    if settings.DEBUG:
        return True
    expected = settings.METRICS_TOKEN
    if not expected:
        return False
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), expected.encode())


@never_cache
@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    if not operator_token_presented(request):
        raise Http404
    return HttpResponse(generate_latest(metrics_registry()), content_type=CONTENT_TYPE_LATEST)
