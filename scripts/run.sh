#!/usr/bin/env bash
# The README's first command (`make run`): the whole product, offline, on embedded defaults.
# SQLite under var/, kombu's filesystem broker, the built-in WeChat simulator; with DATABASE_URL and
# CELERY_BROKER_URL set, the same processes run on PostgreSQL and Redis. Ctrl-C (or SIGTERM, or closing
# the terminal) stops everything within 10 s.
set -euo pipefail
cd "$(dirname "$0")/.."

export DEBUG="${DEBUG:-1}"
export WEB_PORT="${WEB_PORT:-8000}"
export SIMULATOR_PORT="${SIMULATOR_PORT:-9000}"
export PUBLIC_BASE_URL="${PUBLIC_BASE_URL:-http://127.0.0.1:${WEB_PORT}}"
export WECHAT_API_BASE="${WECHAT_API_BASE:-http://127.0.0.1:${SIMULATOR_PORT}}"
export WECHAT_MP_BASE="${WECHAT_MP_BASE:-http://127.0.0.1:${SIMULATOR_PORT}}"
export WECHAT_OPEN_BASE="${WECHAT_OPEN_BASE:-http://127.0.0.1:${SIMULATOR_PORT}}"
# Dev-only component credentials, known to the local simulator. Never use them in production.
export WECHAT_COMPONENT_APPID="${WECHAT_COMPONENT_APPID:-wxd0000000000dev01}"
export WECHAT_COMPONENT_APPSECRET="${WECHAT_COMPONENT_APPSECRET:-dev-only-component-secret}"
export WECHAT_COMPONENT_TOKEN="${WECHAT_COMPONENT_TOKEN:-devonlytoken}"
export WECHAT_COMPONENT_AES_KEY="${WECHAT_COMPONENT_AES_KEY:-DevOnlyEncodingAESKeyDevOnlyEncodingAESKey0}"
# The local run's webhooks may go to a receiver on this machine (production: public https only).
export WEBHOOK_ALLOWED_NETWORKS="${WEBHOOK_ALLOWED_NETWORKS:-127.0.0.0/8}"
export PYTHONUNBUFFERED=1

.venv/bin/python manage.py migrate --noinput -v0
echo "make run: simulator on http://127.0.0.1:${SIMULATOR_PORT}, web on http://127.0.0.1:${WEB_PORT}"
echo "make run: database ${DATABASE_URL:-sqlite (${VAR_DIR:-var}/db.sqlite3)}, broker ${CELERY_BROKER_URL:-filesystem (${VAR_DIR:-var}/broker)}"

# Stopping. honcho starts each process in a session of its own and, on SIGINT/SIGTERM, sends SIGTERM to
# each process group, then SIGKILL 5 s after the first one exits. Alone that is not enough: a closed
# terminal (SIGHUP) or a SIGKILL ends honcho alone and orphans every process, and the prefork (jobs) worker,
# whose pool children get the SIGTERM too, can hang in its warm shutdown. So this shell stays in front
# of honcho and, when it ends, stops whatever of this run is still there: every process of the run
# carries MAKE_RUN_ID in its environment, which /proc shows even once a process is orphaned.
# All within 10 s of the signal.
MAKE_RUN_ID="$$-${EPOCHREALTIME//[!0-9]/}"
export MAKE_RUN_ID
HONCHO_GRACE=6     # honcho's own 5 s, and some room on a loaded machine
LEFTOVER_GRACE=2

leftovers() {
  # The pids of this run's processes, one a line. This shell's own /proc environment predates the
  # export and the forked subshells share it; grep runs without the variable: none of them match.
  local file
  while IFS= read -r file; do
    file=${file#/proc/}
    echo "${file%/environ}"
  done < <(env -u MAKE_RUN_ID grep -lzx "MAKE_RUN_ID=${MAKE_RUN_ID}" /proc/[0-9]*/environ 2>/dev/null)
}

signal_leftovers() {  # signal_leftovers SIGNAL: false when none is left
  local pids
  pids=$(leftovers)
  [ -n "$pids" ] || return 1
  # shellcheck disable=SC2086  # one pid a word
  kill "-$1" $pids 2>/dev/null || true
}

now_us() { now=${EPOCHREALTIME//[!0-9]/}; }  # in $now, microseconds (no subshell)

wait_while() {  # wait_while SECONDS COMMAND...: until COMMAND fails, at most SECONDS
  local now deadline
  now_us
  deadline=$((now + $1 * 1000000))
  shift
  while "$@"; do
    now_us
    [ "$now" -lt "$deadline" ] || return 0
    sleep 0.1
  done
}

honcho_running() { kill -0 "$honcho" 2>/dev/null; }
leftovers_running() { [ -n "$(leftovers)" ]; }

stop() {
  trap 'stop_now' INT TERM HUP  # a second Ctrl-C does not wait
  kill -TERM "$honcho" 2>/dev/null || true
  wait_while "$HONCHO_GRACE" honcho_running
  stop_now
}

stop_now() {
  trap '' INT TERM HUP
  kill -KILL "$honcho" 2>/dev/null || true
  if signal_leftovers TERM; then
    wait_while "$LEFTOVER_GRACE" leftovers_running
    signal_leftovers KILL || true
  fi
  wait "$honcho" 2>/dev/null || true
  exit "$exit_code"
}

exit_code=0
honcho=""
trap 'exit_code=130; stop' INT
trap 'exit_code=143; stop' TERM
trap 'exit_code=129; stop' HUP
.venv/bin/honcho -f Procfile.dev start &
honcho=$!
wait "$honcho" || exit_code=$?
stop_now  # honcho ended by itself (one process exited, so it stopped the others): the same sweep
