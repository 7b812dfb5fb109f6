import os

import pytest

pytest_plugins = ["openplatform.wechat.simulator.testing", "tests.fixtures", "tests.webhook_receiver"]

IN_CI = os.environ.get("CI") == "true"


def _require(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"{reason} (required in CI)", pytrace=False)
    pytest.skip(reason)


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

