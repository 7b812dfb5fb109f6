#!/usr/bin/env bash
# The README's first command (`make run`): the whole product, offline, on embedded defaults.
# SQLite under var/, kombu's filesystem broker, the built-in WeChat simulator; with DATABASE_URL and
# CELERY_BROKER_URL set, the same processes run on PostgreSQL and Redis. Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."

export DEBUG="${DEBUG:-1}"
export WEB_PORT="${WEB_PORT:-8000}"
export SIMULATOR_PORT="${SIMULATOR_PORT:-9000}"
export PUBLIC_BASE_URL="${PUBLIC_BASE_URL:-http://127.0.0.1:${WEB_PORT}}"
export WECHAT_API_BASE="${WECHAT_API_BASE:-http://127.0.0.1:${SIMULATOR_PORT}}"
export WECHAT_MP_BASE="${WECHAT_MP_BASE:-http://127.0.0.1:${SIMULATOR_PORT}}"
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
exec .venv/bin/honcho -f Procfile.dev start
