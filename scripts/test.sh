#!/usr/bin/env bash
# The README's test command (`make test`) runs this after installing into .venv.
# With PostgreSQL and Redis reachable, the whole suite runs against them. Without them, the suite
# runs on SQLite and the tests that need a server are skipped, with the reason printed.
# In CI (CI=true) a missing service is a failure, not a skip.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
PG_URL=${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/openplatform}
REDIS_URL=${TEST_REDIS_URL:-redis://127.0.0.1:6379/15}

if $PY scripts/probe.py postgres "$PG_URL"; then
  export DATABASE_URL="$PG_URL"
  echo "tests: PostgreSQL at ${PG_URL}"
elif [ "${CI:-}" = "true" ]; then
  echo "tests: PostgreSQL is required in CI and did not answer at ${PG_URL}" >&2; exit 1
else
  unset DATABASE_URL
  echo "tests: PostgreSQL not reachable at ${PG_URL}: running on SQLite; tests that need it are skipped" >&2
  echo "       (apt-get install postgresql, or set TEST_DATABASE_URL)" >&2
fi

if $PY scripts/probe.py redis "$REDIS_URL"; then
  export TEST_REDIS_URL="$REDIS_URL"
  echo "tests: Redis at ${REDIS_URL}"
elif [ "${CI:-}" = "true" ]; then
  echo "tests: Redis is required in CI and did not answer at ${REDIS_URL}" >&2; exit 1
else
  unset TEST_REDIS_URL
  echo "tests: Redis not reachable at ${REDIS_URL}: tests that need it (and the Celery worker) are skipped" >&2
  echo "       (apt-get install redis-server, or set TEST_REDIS_URL)" >&2
fi

# Dependencies point one way (docs/architecture.md §2): the import-linter contract in pyproject.toml.
.venv/bin/lint-imports --no-cache >/dev/null || { .venv/bin/lint-imports --no-cache; exit 1; }
echo "tests: import layers kept (lint-imports)"

exec $PY -m pytest "$@"
