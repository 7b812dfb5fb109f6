#!/usr/bin/env bash
# `make bench`: the benchmarks of docs/architecture.md §7 (bench/run.py), printed as one table.
# They need PostgreSQL and Redis (the bench owns database `openplatform_bench`, dropped and recreated,
# and Redis db 14, flushed). Arguments go to bench.run: --quick for smaller sizes, --help for the rest.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
export BENCH_DATABASE_URL=${BENCH_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/openplatform_bench}
export BENCH_REDIS_URL=${BENCH_REDIS_URL:-redis://127.0.0.1:6379/14}

missing=0
if ! $PY scripts/probe.py postgres "$BENCH_DATABASE_URL"; then
  echo "bench: PostgreSQL did not answer at ${BENCH_DATABASE_URL}" >&2
  echo "       (apt-get install postgresql and start it, or set BENCH_DATABASE_URL)" >&2
  missing=1
fi
if ! $PY scripts/probe.py redis "$BENCH_REDIS_URL"; then
  echo "bench: Redis did not answer at ${BENCH_REDIS_URL}" >&2
  echo "       (apt-get install redis-server and start it, or set BENCH_REDIS_URL)" >&2
  missing=1
fi
if [ "$missing" = 1 ]; then
  echo "bench: the benchmarks measure the production set-up and need both servers; nothing was run" >&2
  exit 1
fi

exec $PY -m bench.run "$@"
