"""The pages people open, in a real browser against a live server: the admin index with the operator's
dashboard, an upload's page in the admin, and the API docs (Swagger UI).

Chromium is the OS's (Debian: apt-get install chromium; `.ci/run` installs it), driven by Playwright;
`playwright install` and its bundled browsers are never used. Each page must show what the data says
and log no console error and no page error: a stylesheet or script that does not load, a CDN that cannot
be reached, a script that throws, all show up there. Requests leaving the machine are refused and
reported. Every page is served with the Content-Security-Policy (settings.py) and must pass it: a
`securitypolicyviolation` event (an inline script or style, an asset from elsewhere) is reported too.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.operations_seed import SECRETS, make_authorizer_row, make_upload_row, seed_operations
from uploads.models import Upload, UploadAttempt

# Data committed where the live server's thread sees it.
pytestmark = pytest.mark.django_db(transaction=True)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
LAUNCH_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]
VIEWPORT = {"width": 1280, "height": 1400}
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}
OPERATOR, PASSWORD = "operator", "operator-pw-123"


@dataclass
class Browsing:
    """One page in one browser context, with everything it reported that a person would call broken."""

    base_url: str
    page: object
    errors: list[str] = field(default_factory=list)

    def open(self, path: str, status: int = 200) -> None:
        response = self.page.goto(self.base_url + path, wait_until="load")
        assert response is not None and response.status == status, (path, response and response.status)
        if status >= 400:  # the page's own answer, expected: not something that broke
            self.errors[:] = [e for e in self.errors if e != f"HTTP {status}: {response.url}"
                              and not e.startswith(f"console error: Failed to load resource: the server responded with a status of {status}")]
        assert_csp(response)

    def log_in(self, username: str, password: str) -> None:
        self.open("/admin/login/?next=/admin/")
        self.page.fill("#id_username", username)
        self.page.fill("#id_password", password)
        with self.page.expect_navigation(wait_until="load") as navigation:
            self.page.click("input[type=submit]")
        assert urlsplit(self.page.url).path == "/admin/", self.page.url
        assert_csp(navigation.value)

    def text(self, selector: str) -> str:
        return self.page.locator(selector).inner_text().strip()

    def computed(self, selector: str, prop: str) -> str:
        return self.page.eval_on_selector(selector, f"e => getComputedStyle(e).{prop}")


def assert_csp(response) -> None:
    """The page came with the policy settings.py sets: scripts and styles from this origin only."""
    policy = response.headers.get("content-security-policy", "")
    directives = {d.split()[0]: d.split()[1:] for d in policy.split(";") if d.strip()}
    assert directives.get("script-src") == ["'self'"], (response.url, policy)
    assert directives.get("style-src") == ["'self'"], (response.url, policy)
    assert directives.get("default-src") == ["'self'"] and directives.get("object-src") == ["'none'"], policy


# Reports every violation of the page's Content-Security-Policy, on every page of the context, to Python.
REPORT_CSP_VIOLATIONS = """
document.addEventListener("securitypolicyviolation", (e) => window.reportCspViolation(
  `${e.effectiveDirective} blocked ${e.blockedURI} at ${e.sourceFile || e.documentURI}:${e.lineNumber}`));
"""


@contextmanager
def browsing(base_url: str) -> Iterator[Browsing]:
    """Chromium with one page on `base_url`; at the end, no console error, page error or failed request.

    Open it once the test's rows are written: while Playwright's sync API runs, its event loop is the
    running loop of this thread, and Django refuses database calls from there.
    """
    if CHROMIUM is None:
        pytest.skip("needs chromium (Debian: apt-get install chromium; .ci/run installs it)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright (`make install`)")

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS, headless=True)
        try:
            context = browser.new_context(viewport=VIEWPORT, color_scheme="light")
            page = context.new_page()
            page.set_default_timeout(20_000)
            session = Browsing(base_url, page)

            def only_loopback(route) -> None:
                host = urlsplit(route.request.url).hostname or ""
                if route.request.url.startswith(("data:", "blob:")) or host in LOOPBACK:
                    route.continue_()
                else:
                    session.errors.append(f"request off the machine: {route.request.url}")
                    route.abort()

            context.route("**/*", only_loopback)
            context.expose_binding("reportCspViolation", lambda source, text: session.errors.append(
                f"CSP violation: {text}"))
            context.add_init_script(REPORT_CSP_VIOLATIONS)
            page.on("console", lambda msg: msg.type == "error" and session.errors.append(
                f"console error: {msg.text} ({msg.location.get('url')})"))
            page.on("pageerror", lambda exc: session.errors.append(f"page error: {exc}"))
            def request_failed(req) -> None:
                # An image the browser cancelled itself (net::ERR_ABORTED: the admin's date widgets restyle
                # the calendar and clock icons while they load) is not a failure of the server; a missing
                # one is an HTTP 404 (below), and any other failed request counts.
                if not (req.resource_type == "image" and req.failure == "net::ERR_ABORTED"):
                    session.errors.append(f"request failed: {req.url} ({req.failure})")

            page.on("requestfailed", request_failed)
            page.on("response", lambda resp: resp.status >= 400 and session.errors.append(
                f"HTTP {resp.status}: {resp.url}"))
            try:
                yield session
            except Exception as exc:
                exc.add_note("the browser reported:\n" + "\n".join(session.errors))
                raise
            page.wait_for_load_state("networkidle")
            assert not session.errors, "the browser reported:\n" + "\n".join(session.errors)
        finally:
            browser.close()


@pytest.fixture
def operator(django_user_model):
    return django_user_model.objects.create_superuser(OPERATOR, "operator@example.com", PASSWORD)


def test_admin_index_shows_the_dashboard_with_the_admin_styles(live_server, operator, tmp_path):
    from PIL import Image

    # Given a day of operations
    seed_operations()

    # When the operator logs in and the admin index opens
    with browsing(live_server.url) as session:
        session.log_in(OPERATOR, PASSWORD)

        # Then the dashboard is above the app list, with the seeded numbers
        page = session.page
        assert page.locator("#operator-dashboard").is_visible()
        dashboard_top = page.locator("#operator-dashboard").bounding_box()["y"]
        assert dashboard_top < page.locator(".app-uploads").bounding_box()["y"]
        headings = page.locator("#operator-dashboard h2").all_inner_texts()
        assert headings[:3] == [
            "Uploads in the last 24 hours", "Top WeChat errcodes, last 24 hours", "Component verify ticket",
        ]
        assert "Authorizers that need attention (4)" in headings
        for status, count in {"queued": 1, "uploading": 1, "succeeded": 5, "failed": 5, "rejected": 1}.items():
            assert session.text(f'#op-uploads [data-status="{status}"] .op-number') == str(count), status
        assert "45.5%" in session.text("#op-uploads")
        errcodes = session.text("#op-errcodes")
        assert errcodes.index("45009") < errcodes.index("48001")
        assert "45 min" in session.text("#op-ticket")
        # the admin's stylesheet and the dashboard's own styles applied
        assert session.computed("#header", "backgroundColor") == "rgb(65, 118, 144)"  # --secondary
        assert session.computed(".op-status-failed .op-number", "color") == "rgb(186, 33, 33)"  # --error-fg
        assert SECRETS[0] not in page.content()

        # And a screenshot of it has the admin's colours and the stale-ticket warning
        shot = tmp_path / "dashboard.png"
        page.screenshot(path=str(shot))
    image = Image.open(shot).convert("RGB")
    assert image.size == (VIEWPORT["width"], VIEWPORT["height"])
    colours = image.getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50
    present = {rgb for _, rgb in colours}
    assert (0x41, 0x76, 0x90) in present  # the admin header (--secondary)
    assert (0xFF, 0xFF, 0xCC) in present  # the ticket warning (--message-warning-bg)
    assert (0xBA, 0x21, 0x21) in present  # failed count and warnings (--error-fg)
    print(f"dashboard screenshot: {shot}")


def _failed_upload_with_two_attempts() -> Upload:
    from django.utils import timezone

    from tenants.models import Tenant

    now = timezone.now()
    authorizer = make_authorizer_row(Tenant.objects.create(slug="acme", name="Acme"), "wxbrowser0000001",
                                     nick_name="Acme News", func_info=[1, 11])
    upload = make_upload_row(authorizer, Upload.Status.FAILED, created=now - timedelta(minutes=3),
                             errcode=45009, errmsg="reach max api daily quota limit")
    Upload.objects.filter(pk=upload.pk).update(attempts=2)
    UploadAttempt.objects.create(upload=upload, number=1, started_at=now - timedelta(minutes=2), duration_ms=31.5,
                                 http_status=200, errcode=-1, errmsg="system error",
                                 outcome=UploadAttempt.Outcome.TRANSIENT, token_generation=1, worker="w1@host")
    UploadAttempt.objects.create(upload=upload, number=2, started_at=now - timedelta(minutes=1), duration_ms=12.0,
                                 http_status=200, errcode=45009, errmsg="reach max api daily quota limit",
                                 outcome=UploadAttempt.Outcome.FAILED, token_generation=1, worker="w1@host")
    return upload


def test_an_uploads_admin_page_shows_its_status_and_attempts(live_server, operator):
    # Given a failed upload, tried twice
    upload = _failed_upload_with_two_attempts()

    # When the operator opens it in the admin
    with browsing(live_server.url) as session:
        session.log_in(OPERATOR, PASSWORD)
        session.open(f"/admin/uploads/upload/{upload.pk}/change/")

        # Then its status, errcode and attempts are shown, and each attempt's outcome
        assert session.text(".field-status .readonly") == "Failed"
        assert session.text(".field-attempts .readonly") == "2"
        assert session.text(".field-errcode .readonly") == "45009"
        assert "wxbrowser0000001" in session.text(".field-authorizer .readonly")
        rows = session.page.locator(".inline-related tbody tr.has_original")
        assert rows.count() == 2
        assert "Transient error (retried)" in rows.nth(0).inner_text()
        assert "Failed" in rows.nth(1).inner_text() and "45009" in rows.nth(1).inner_text()
        assert session.computed("#header", "backgroundColor") == "rgb(65, 118, 144)"


def test_api_docs_render_the_operations_in_swagger_ui(live_server):
    # When anyone opens the API docs
    with browsing(live_server.url) as session:
        session.open("/api/docs/")

        # Then Swagger UI (served from our static files) lists the merchant API's operations
        page = session.page
        uploads = page.locator('.opblock-summary-path[data-path="/api/v1/uploads/"]')
        uploads.first.wait_for(state="visible")
        assert uploads.count() == 2  # list and create
        assert page.locator('.opblock-summary-path[data-path="/api/v1/authorizers/"]').count() == 1
        assert "WeChat third-party platform: merchant API" in session.text(".info .title")
        scripts = page.eval_on_selector_all("script[src]", "els => els.map(e => e.src)")
        assert scripts and all(urlsplit(src).hostname in LOOPBACK for src in scripts), scripts
        # Swagger UI from the sidecar package's static files, and its init script as a file of its own
        # (the split view's ?script), never inline: the Content-Security-Policy allows no inline script.
        sidecar = [src for src in scripts if Path(urlsplit(src).path).parts[1:3] == ("static", "drf_spectacular_sidecar")]
        assert len(sidecar) == 2, scripts
        assert [src for src in scripts if src not in sidecar] == [live_server.url + "/api/docs/?script="], scripts
        assert page.eval_on_selector_all("script:not([src]), style", "els => els.length") == 0


def test_the_policy_is_enforced_and_its_violations_are_caught(live_server, operator):
    # Given the admin open in the browser, under the Content-Security-Policy
    with browsing(live_server.url) as session:
        session.log_in(OPERATOR, PASSWORD)
        assert not session.errors, session.errors  # the admin itself passes the policy

        # When markup injected into the page tries an inline script, an inline style and a foreign script
        outcome = session.page.evaluate("""async () => {
            const seen = [];
            document.addEventListener("securitypolicyviolation", (e) => seen.push(e.effectiveDirective));
            const inline = document.createElement("script");
            inline.textContent = "window.injected = true;";
            document.head.appendChild(inline);
            const style = document.createElement("style");
            style.textContent = "body { display: none; }";
            document.head.appendChild(style);
            const foreign = document.createElement("script");
            foreign.src = "https://cdn.example.com/x.js";
            document.head.appendChild(foreign);
            await new Promise((resolve) => setTimeout(resolve, 300));
            return {ran: window.injected === true, hidden: getComputedStyle(document.body).display === "none", seen};
        }""")

        # Then none of it ran or applied, and each was reported as a violation (here and to the test's hook)
        assert outcome["ran"] is False and outcome["hidden"] is False, outcome
        assert {"script-src-elem", "style-src-elem"} <= set(outcome["seen"]), outcome
        reported = [e for e in session.errors if e.startswith("CSP violation")]
        assert any("script-src-elem blocked inline" in e for e in reported), session.errors
        assert any("style-src-elem blocked inline" in e for e in reported), session.errors
        assert any("cdn.example.com" in e for e in reported), session.errors
        # (provoked on purpose: forgiven; anything else reported still fails the test)
        session.errors[:] = [e for e in session.errors if not (
            e.startswith("CSP violation") or "Content Security Policy" in e or e.endswith("(csp)"))]


def test_the_page_merchants_land_on_after_authorizing_passes_the_policy(live_server, db):
    # When a merchant comes back from WeChat with a link that is not valid (the page is the same)
    with browsing(live_server.url) as session:
        session.open("/wechat/component/authorized/?state=forged&auth_code=abc", status=400)

        # Then the page is styled (its stylesheet is a file of ours) and nothing broke the policy
        assert session.text("h1.err") == "Authorization failed"
        assert session.computed("h1.err", "color") == "rgb(180, 35, 24)"
        assert session.page.eval_on_selector_all("script:not([src]), style", "els => els.length") == 0


ADMIN_PAGES = [
    "/admin/uploads/upload/", "/admin/uploads/upload/?status__exact=failed", "/admin/tenants/tenant/",
    "/admin/tenants/tenant/add/", "/admin/tenants/authorizer/", "/admin/tenants/tenantapikey/add/",
    "/admin/openplatform/componentevent/", "/admin/django_celery_beat/periodictask/",
    "/admin/auth/user/add/", "/admin/auth/group/add/", "/admin/password_change/",
]


def test_the_admins_lists_and_forms_pass_the_policy(live_server, operator):
    # Given a day of operations (lists with rows, filters and actions)
    seed_operations()

    # When the operator goes through the admin's lists and forms
    with browsing(live_server.url) as session:
        session.log_in(OPERATOR, PASSWORD)
        for path in [*ADMIN_PAGES, f"/admin/auth/user/{operator.pk}/change/"]:
            session.open(path)
            # Then each is the admin's page, styled, with nothing inline (checked at the end: no violation)
            assert session.computed("#header", "backgroundColor") == "rgb(65, 118, 144)", path
            assert session.page.eval_on_selector_all("script:not([src])", "els => els.length") == 0, path
