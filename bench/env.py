"""The bench's own world: environment variables, its PostgreSQL database and Redis db, Django set-up.

Everything here runs before `django.setup()`: the settings module reads the environment once, and the
web server and worker subprocesses inherit the same environment.
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent

PG_URL = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/openplatform_bench")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")

# Bench-only component credentials, known only to the in-process simulator.
COMPONENT = {
    "component_appid": "wxbench0000component",
    "component_appsecret": "bench-only-component-secret",
    "token": "benchonlytoken",
    "encoding_aes_key": "BenchOnlyEncodingAESKeyBenchOnlyEncodingAES",
}
assert len(COMPONENT["encoding_aes_key"]) == 43


def database_name() -> str:
    return urlsplit(PG_URL).path.lstrip("/")


def _admin_dsn() -> str:
    """The same server, database `postgres`: where DROP/CREATE DATABASE run."""
    parts = urlsplit(PG_URL)
    return urlunsplit(("postgresql", parts.netloc, "/postgres", "", ""))


def reset_database() -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(_admin_dsn(), autocommit=True, connect_timeout=5) as conn:
        name = sql.Identifier(database_name())
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(name))


def reset_redis() -> None:
    import redis

    redis.Redis.from_url(REDIS_URL).flushdb()


def configure_environ(*, simulator_url: str) -> dict[str, str]:
    """Production-like settings (DEBUG off) pointed at the bench database, Redis db and the simulator."""
    from cryptography.fernet import Fernet

    values = {
        "DJANGO_SETTINGS_MODULE": "openplatform.settings",
        "DEBUG": "0",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "FIELD_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        "DATABASE_URL": PG_URL,
        "CONN_MAX_AGE": "600",
        "CELERY_BROKER_URL": REDIS_URL,
        # Several web processes share the throttle counters, as in production.
        "CACHE_URL": REDIS_URL,
        "API_THROTTLE_RATE": "100000000/min",
        "API_KEY_THROTTLE_RATE": "100000000/min",
        "WECHAT_API_BASE": simulator_url,
        "WECHAT_MP_BASE": simulator_url,
        "WECHAT_OPEN_BASE": simulator_url,
        "WECHAT_COMPONENT_APPID": COMPONENT["component_appid"],
        "WECHAT_COMPONENT_APPSECRET": COMPONENT["component_appsecret"],
        "WECHAT_COMPONENT_TOKEN": COMPONENT["token"],
        "WECHAT_COMPONENT_AES_KEY": COMPONENT["encoding_aes_key"],
        "ALLOWED_HOSTS": "127.0.0.1,localhost,testserver",
        "LOG_LEVEL": "WARNING",
        "PYTHONUNBUFFERED": "1",
        "VAR_DIR": str(ROOT / "var" / "bench"),
    }
    os.environ.update(values)
    return values


def setup_django() -> None:
    import django
    from django.core.management import call_command

    sys.path.insert(0, str(ROOT))
    django.setup()
    call_command("migrate", interactive=False, verbosity=0)


def versions() -> dict[str, str]:
    """The machine description printed above the results."""
    import platform
    from datetime import UTC, datetime

    import redis
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        pg = cursor.fetchone()[0]
    rd = redis.Redis.from_url(REDIS_URL).info("server")["redis_version"]
    mem_kb = 0
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": f"{os.cpu_count()} x {cpu}",
        "ram": f"{mem_kb / 1024 / 1024:.1f} GiB" if mem_kb else "unknown",
        "os": platform.platform(terse=True),
        "python": platform.python_version(),
        "postgresql": pg.split()[0],
        "redis": rd,
    }
