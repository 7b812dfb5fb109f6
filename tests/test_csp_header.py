"""Our CSP middleware (openplatform/core/csp.py) writes what django-csp's own would, with the header built once."""

from __future__ import annotations

import pytest
from csp.middleware import CSPMiddleware as DjangoCSPMiddleware
from django.http import HttpResponse
from django.test import RequestFactory, override_settings

from openplatform.core.csp import CSPMiddleware

HEADERS = ("Content-Security-Policy", "Content-Security-Policy-Report-Only")


def _run(middleware_class, path="/api/v1/uploads/", *, prepare=None, status=200):
    request = RequestFactory().get(path)
    middleware = middleware_class(lambda r: None)
    middleware.process_request(request)
    response = HttpResponse(status=status)
    if prepare is not None:
        prepare(request, response)
    middleware.process_response(request, response)
    return {h: response.get(h) for h in HEADERS}, request


def _both(**kwargs):
    ours, request = _run(CSPMiddleware, **kwargs)
    theirs, _ = _run(DjangoCSPMiddleware, **kwargs)
    return ours, theirs, request


def test_the_site_policy_is_django_csps():
    ours, theirs, _ = _both()
    assert ours == theirs
    assert "default-src 'self'" in ours["Content-Security-Policy"] and "frame-ancestors 'none'" in ours[HEADERS[0]]


def test_the_header_follows_a_changed_setting():
    _both()  # the cache is filled
    policy = {"DIRECTIVES": {"default-src": ["'none'"]}}
    with override_settings(CONTENT_SECURITY_POLICY=policy, CONTENT_SECURITY_POLICY_REPORT_ONLY=policy):
        ours, theirs, _ = _both()
        assert ours == theirs and ours == {h: "default-src 'none'" for h in HEADERS}
    ours, theirs, _ = _both()
    assert ours == theirs and ours[HEADERS[1]] is None


@pytest.mark.parametrize("prepare", [
    lambda request, response: setattr(response, "_csp_update", {"img-src": ["https://img.example"]}),
    lambda request, response: setattr(response, "_csp_replace", {"script-src": None}),
    lambda request, response: setattr(response, "_csp_config", {"default-src": ["'none'"]}),
    lambda request, response: str(request.csp_nonce),  # a template used the nonce
    lambda request, response: setattr(response, "_csp_exempt", True),
    lambda request, response: response.__setitem__("Content-Security-Policy", "default-src 'none'"),
], ids=["update", "replace", "config", "nonce", "exempt", "already-set"])
def test_per_view_policies_nonces_and_exemptions_are_django_csps(prepare):
    ours, theirs, _ = _both(prepare=prepare)
    if "nonce-" in (theirs[HEADERS[0]] or ""):  # each run makes its own nonce
        assert ours[HEADERS[0]].split("'nonce-")[0] == theirs[HEADERS[0]].split("'nonce-")[0]
    else:
        assert ours == theirs


def test_an_excluded_prefix_gets_no_header():
    policy = {"EXCLUDE_URL_PREFIXES": ["/api/"], "DIRECTIVES": {"default-src": ["'self'"]}}
    with override_settings(CONTENT_SECURITY_POLICY=policy):
        ours, theirs, _ = _both()
        assert ours == theirs and ours[HEADERS[0]] is None
        assert _both(path="/admin/")[0][HEADERS[0]] == "default-src 'self'"


def test_a_nonce_asked_for_after_the_header_is_written_is_an_error():
    from csp.exceptions import CSPNonceError

    _, request = _run(CSPMiddleware)
    with pytest.raises(CSPNonceError):
        str(request.csp_nonce)


@override_settings(DEBUG=True)
def test_debug_error_pages_are_left_alone_as_django_csp_leaves_them():
    ours, theirs, _ = _both(status=404)
    assert ours == theirs == {h: None for h in HEADERS}


@pytest.mark.django_db
def test_api_answers_and_admin_pages_carry_the_policy(client):
    expected = _run(DjangoCSPMiddleware)[0][HEADERS[0]]
    for path in ("/api/v1/uploads/", "/healthz", "/api/docs/"):
        assert client.get(path)["Content-Security-Policy"] == expected, path
