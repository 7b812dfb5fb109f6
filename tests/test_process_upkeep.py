"""What the long-running processes do for themselves: the garbage collector kept off startup's objects
(openplatform/core/garbage.py) and gunicorn's access line built from the atoms its format names
(openplatform/ops/access_log.py). docs/architecture.md §7."""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
from gunicorn.config import Config
from gunicorn.glogging import Logger

from openplatform.ops.access_log import AccessLogger

# -- the garbage collector -------------------------------------------------------------------------------

_COUNTS = "import gc, json, sys; print(json.dumps([gc.get_freeze_count(), len(gc.get_objects()), 'uploads.api' in sys.modules]))"


def _counts_after(code: str) -> tuple[int, int, bool]:
    """In a fresh interpreter: objects frozen, objects still tracked, whether the upload views are imported."""
    out = subprocess.run([sys.executable, "-c", f"{code}\n{_COUNTS}"], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "DJANGO_SETTINGS_MODULE": "openplatform.settings"})
    assert out.returncode == 0, out.stderr[-3000:]
    frozen, tracked, views = json.loads(out.stdout.strip().splitlines()[-1])
    return frozen, tracked, views


def test_the_web_application_imports_its_views_and_freezes_them_before_the_first_request():
    frozen, tracked, views = _counts_after("import openplatform.wsgi")
    assert views, "the URLconf's views are imported at the first request, after the freeze"
    # Django, DRF and the views: tens of thousands of objects a full collection no longer walks.
    assert frozen > 50_000
    assert tracked < frozen / 10, (frozen, tracked)


def test_without_the_freeze_a_full_collection_walks_everything_startup_made():
    """The comparison that gives the test above its meaning: the same imports, nothing frozen."""
    frozen, tracked, _ = _counts_after("import django; django.setup(); from django.urls import get_resolver; "
                                       "get_resolver().url_patterns")
    assert frozen == 0 and tracked > 50_000


@pytest.mark.parametrize("signal_name", ["worker_ready", "worker_process_init"])
def test_a_worker_freezes_what_startup_made_when_it_is_ready(signal_name):
    """worker_ready fires in the worker's own process (where the threads pool runs its tasks),
    worker_process_init in each prefork child."""
    frozen, tracked, _ = _counts_after(
        "import django; django.setup(); import openplatform.celery as c; from celery import signals; "
        f"signals.{signal_name}.send(sender=None)"
    )
    assert frozen > 50_000
    assert tracked < frozen / 10, (frozen, tracked)


# -- the access line -------------------------------------------------------------------------------------


def _loggers(access_log_format: str | None = None) -> tuple[Logger, AccessLogger]:
    cfg = Config()
    cfg.set("accesslog", "-")
    if access_log_format:
        cfg.set("access_log_format", access_log_format)
    return Logger(cfg), AccessLogger(cfg)


_ENVIRON = {
    "REMOTE_ADDR": "127.0.0.1", "REQUEST_METHOD": "POST", "RAW_URI": "/api/v1/uploads/?fit=true",
    "SERVER_PROTOCOL": "HTTP/1.1", "PATH_INFO": "/api/v1/uploads/", "QUERY_STRING": "fit=true",
    "HTTP_REFERER": 'https://example.com/"quoted"', "HTTP_USER_AGENT": "curl/8.5.0",
    "HTTP_AUTHORIZATION": "Basic dXNlcjpwYXNz", "wsgi.url_scheme": "http", "X_OWN": "environ value",
}
_RESP = SimpleNamespace(status="202 Accepted", sent=251, headers=[("Content-Type", "application/json")])
_REQ = SimpleNamespace(headers=[("HOST", "127.0.0.1:8000"), ("X-REQUEST-ID", "abc")])
_TOOK = datetime.timedelta(seconds=1, microseconds=234_567)


def _line(logger: Logger, monkeypatch) -> str:
    monkeypatch.setattr(logger, "now", lambda: "[01/Dec/2026:12:00:00 +0000]")
    atoms = logger.atoms_wrapper_class(logger.atoms(_RESP, _REQ, _ENVIRON, _TOOK))
    return logger.cfg.access_log_format % atoms


@pytest.mark.parametrize("fmt", [
    None,  # gunicorn's default
    '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s %(B)s "%(f)s" "%(a)s" %(m)s %(U)s %(q)s %(H)s %(T)s %(D)s %(M)s %(L)s %(p)s',
    '%(h)s "%(r)s" %(s)s {%({x-request-id}i)s} %({content-type}o)s %({x_own}e)s',  # names headers and environ
])
def test_the_access_line_is_gunicorns_for_any_format(fmt, monkeypatch):
    theirs, ours = _loggers(fmt)
    line = _line(ours, monkeypatch)
    assert line == _line(theirs, monkeypatch)
    if fmt is None or "%(u)s" in fmt:
        assert " user " in line  # the Basic user, as gunicorn reads it
    if fmt and "{" in fmt:
        assert "abc" in line and "application/json" in line and "environ value" in line


def test_only_the_plain_atoms_are_built_when_the_format_names_no_other():
    _, ours = _loggers()
    atoms = ours.atoms(_RESP, _REQ, _ENVIRON, _TOOK)
    assert not any(k.startswith("{") for k in atoms), sorted(atoms)
    _, with_header = _loggers('%(h)s %({x-request-id}i)s')
    assert "{x-request-id}i" in with_header.atoms(_RESP, _REQ, _ENVIRON, _TOOK)


def test_the_logged_record_carries_the_finished_line(monkeypatch):
    """Formatted once: each filter and formatter on the way reads the line as it is."""
    _, ours = _loggers()
    monkeypatch.setattr(ours, "now", lambda: "[01/Dec/2026:12:00:00 +0000]")
    records = []
    monkeypatch.setattr(ours.access_log, "info", lambda msg, *args: records.append(msg % args))
    ours.access(_RESP, _REQ, _ENVIRON, _TOOK)
    assert records == ['127.0.0.1 - user [01/Dec/2026:12:00:00 +0000] "POST /api/v1/uploads/?fit=true HTTP/1.1" '
                       '202 251 "https://example.com/\\"quoted\\"" "curl/8.5.0"']


def test_no_access_line_when_gunicorn_would_write_none(monkeypatch):
    cfg = Config()  # no accesslog, no logging configuration: gunicorn writes no access line
    ours = AccessLogger(cfg)
    records = []
    monkeypatch.setattr(ours.access_log, "info", lambda *a: records.append(a))
    ours.access(_RESP, _REQ, _ENVIRON, _TOOK)
    assert records == []
    monkeypatch.delattr(Logger, "access_log_enabled", raising=False)  # as in gunicorn before 27
    ours.access(_RESP, _REQ, _ENVIRON, _TOOK)
    assert records == []
