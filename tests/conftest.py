import os

import pytest

from tests import loopback_only
from tests.allowed_skips import skip_allowed

pytest_plugins = ["openplatform.wechat.simulator.testing", "tests.fixtures", "pytester", "tests.webhook_receiver"]

IN_CI = os.environ.get("CI") == "true"

loopback_only.install()  # no test sends traffic beyond 127.0.0.0/8 (tests/loopback_only.py)


def _require(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"{reason} (required in CI)", pytrace=False)
    pytest.skip(reason)


def _fail_unlisted_skip(report) -> None:
    """In CI, a skip becomes a failure unless tests/allowed_skips.py lists the test. Read at each report
    (not once at import) so that tests/test_ci_skips.py can run it both ways."""
    if os.environ.get("CI") != "true" or not report.skipped or hasattr(report, "wasxfail"):
        return  # an expected failure (xfail) is reported as a skip too; it is not one
    if skip_allowed(report.nodeid):
        return
    longrepr = report.longrepr
    reason = (longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)).removeprefix("Skipped: ")
    report.outcome = "failed"
    report.longrepr = (
        f"skipped in CI: {reason}\n"
        "A skip in CI is a failure unless tests/allowed_skips.py lists the test with its reason."
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    _fail_unlisted_skip((yield).get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    """The same for a module skipped as a whole at import (`pytest.importorskip` at its top, say)."""
    _fail_unlisted_skip((yield).get_result())


@pytest.fixture(autouse=True)
def _service_markers(request):
    """`@pytest.mark.postgres` / `redis` / `worker`: skip with the reason when the server is missing
    (a failure in CI, where scripts/test.sh has already checked they answer)."""
    needs_pg = request.node.get_closest_marker("postgres") or request.node.get_closest_marker("worker")
    needs_redis = request.node.get_closest_marker("redis") or request.node.get_closest_marker("worker")
    if needs_pg:
        from django.db import connection

        if connection.vendor != "postgresql":
            _require("needs PostgreSQL: run `make test` with PostgreSQL on 127.0.0.1:5432 (or TEST_DATABASE_URL)")
    if needs_redis and not os.environ.get("TEST_REDIS_URL"):
        _require("needs Redis: run `make test` with Redis on 127.0.0.1:6379 (or TEST_REDIS_URL)")


@pytest.fixture(autouse=True)
def _fresh_caches():
    """Component config/client caches and throttle counters must not leak between tests."""
    from django.core.cache import cache

    cache.clear()
    yield

