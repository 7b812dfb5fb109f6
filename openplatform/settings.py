"""Django settings, read once from the environment (and a `.env` file at the root).

The names are part of the public contract (docs/contract.md, "Configuration"). Production secrets have
no default: with DEBUG off, a missing SECRET_KEY or FIELD_ENCRYPTION_KEYS stops the process at start.
"""

from __future__ import annotations

import ipaddress
from datetime import timedelta
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
if (BASE_DIR / ".env").is_file():
    environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

# Local state (SQLite file, filesystem broker, collected static files, the demo's files). VAR_DIR moves
# it elsewhere, e.g. for a smoke test that must not touch a developer's var/.
VAR_DIR = Path(env.str("VAR_DIR", default="") or BASE_DIR / "var").resolve()

DEBUG = env.bool("DEBUG", default=False)

# Dev-only values: usable only with DEBUG on, never in production.
_DEV_SECRET_KEY = "dev-only-insecure-secret-key-do-not-use-in-production"  # noqa: S105
_DEV_FIELD_KEY = "ZGV2LW9ubHktZmllbGQta2V5LWRvLW5vdC11c2UhISE="  # base64 of a 32-byte dev key


def _required(name: str, dev_default: str) -> str:
    value = env.str(name, default="")
    if value:
        return value
    if DEBUG:
        return dev_default
    raise ImproperlyConfigured(f"{name} must be set when DEBUG is off")


SECRET_KEY = _required("SECRET_KEY", _DEV_SECRET_KEY)
FIELD_ENCRYPTION_KEYS = [k.strip() for k in _required("FIELD_ENCRYPTION_KEYS", _DEV_FIELD_KEY).split(",") if k.strip()]

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["*"] if DEBUG else ["localhost", "127.0.0.1"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "openplatform.ops.admin_apps.OperatorAdminConfig",  # django.contrib.admin with 2FA (ADMIN_REQUIRE_2FA)
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework_api_key",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "axes",
    "openplatform.component.apps.ComponentConfig",
    "openplatform.ops.apps.OpsConfig",
    "tenants.apps.TenantsConfig",
    "uploads.apps.UploadsConfig",
    "webhooks.apps.WebhooksConfig",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "openplatform.core.csp.CSPMiddleware",  # django-csp's, the header built once: CONTENT_SECURITY_POLICY below
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_otp.middleware.OTPMiddleware",
    "openplatform.ops.admin_site.AdminNetworkMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "axes.middleware.AxesMiddleware",  # last, as django-axes asks
]

ROOT_URLCONF = "openplatform.urls"
WSGI_APPLICATION = "openplatform.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "openplatform" / "ops" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# Database: SQLite under var/ by default, PostgreSQL through DATABASE_URL.
DATABASES = {"default": env.db_url("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'db.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The web server and worker processes share one file: WAL lets readers run beside a writer, and
    # IMMEDIATE transactions take the write lock at BEGIN, so the token-refresh critical section is
    # serialized on SQLite too (SQLite ignores SELECT ... FOR UPDATE).
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            "transaction_mode": "IMMEDIATE",
            "timeout": 30,
        }
    )
    VAR_DIR.mkdir(parents=True, exist_ok=True)
else:
    # Kept open across requests and tasks: one connection per gunicorn thread and per worker thread or
    # process (deploy/OPERATIONS.md, "PostgreSQL connections").
    DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=60)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    # DATABASE_URL points at a pooler in transaction mode (PgBouncer `pool_mode = transaction`): each
    # transaction may get another server connection, so a cursor must not outlive its transaction
    # (Django's server-side cursors for .iterator() do, WITH HOLD). Prepared statements are already
    # off: Django's psycopg 3 backend leaves prepare_threshold at None unless OPTIONS sets it, and the
    # upload path's own statements (openplatform/core/sql.py) are prepared only without such a pooler.
    DATABASES["default"]["DISABLE_SERVER_SIDE_CURSORS"] = env.bool("DATABASE_TRANSACTION_POOLING", default=False)
    if not DATABASES["default"]["DISABLE_SERVER_SIDE_CURSORS"]:
        # Those prepared statements are each a primary-key or unique-key lookup: their generic plan is the
        # right one, and planning it once per connection instead of per run saves ~0.25 ms of
        # PostgreSQL CPU per upload (docs/architecture.md §7, "Cost"). Django's own queries are not
        # prepared, so this setting does not touch them. (A pooler may refuse startup options.)
        _pg_options = DATABASES["default"].setdefault("OPTIONS", {})
        _pg_options["options"] = (_pg_options.get("options", "") + " -c plan_cache_mode=force_generic_plan").strip()
        # psycopg prepares nothing, not even a statement executed with prepare=True, while the
        # connection's prepare_threshold is None (Django's default). A threshold no statement reaches
        # leaves the choice to each call: the hot-path statements ask for it, and Django's own queries
        # (client-side binding cursors) are never prepared whatever the threshold.
        _pg_options.setdefault("prepare_threshold", 2**31 - 1)

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(env.str("STATIC_ROOT", default="") or VAR_DIR / "static")
# gunicorn serves the collected static files (the admin's CSS and JS) through WhiteNoise: the image
# needs no web server of its own. Only once `collectstatic` has run (the image runs it at build).
if STATIC_ROOT.is_dir():
    MIDDLEWARE.insert(MIDDLEWARE.index("django.middleware.security.SecurityMiddleware") + 1,
                      "whitenoise.middleware.WhiteNoiseMiddleware")

# --- Security (production) ---
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if env.bool("BEHIND_TLS_PROXY", default=False) else None
SILENCED_SYSTEM_CHECKS: list[str] = []
if not DEBUG:
    SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=True)
    CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=True)
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_CONTENT_TYPE_NOSNIFF = True
    X_FRAME_OPTIONS = "DENY"
    # HTTP -> HTTPS redirects are the TLS proxy's job (WeChat only calls https:// URLs, so one is always in
    # front). Off by default because the container HEALTHCHECK and in-cluster callers (the staging
    # simulator's ticket pushes) speak plain HTTP to gunicorn. SECURE_SSL_REDIRECT=1 makes Django redirect
    # too (set BEHIND_TLS_PROXY=1 with it); the probes stay reachable over HTTP.
    SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=False)
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]
    # Preload is a commitment for the whole domain that is hard to undo: the domain owner's call.
    SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
    # `check --deploy` stays quiet about the two decisions above, taken on purpose (deploy/OPERATIONS.md).
    if not SECURE_SSL_REDIRECT:
        SILENCED_SYSTEM_CHECKS.append("security.W008")
    if not SECURE_HSTS_PRELOAD:
        SILENCED_SYSTEM_CHECKS.append("security.W021")

# --- Content-Security-Policy (django-csp) ---
# Every page (the admin, the operator dashboard, the API docs, the page merchants land on after
# authorizing) loads scripts, styles, fonts and images from this origin only, with no inline script or
# style: our templates link static files, Swagger UI comes from drf-spectacular-sidecar with its init
# script served as a file (SpectacularSwaggerSplitView), and Django 5.2's admin has no inline code
# (its one inline <style>, in change_list.html, appears only for a ModelAdmin without actions; we have
# none). Injected markup cannot run, and nothing is fetched from another host. data: images: Swagger UI's
# and the admin's CSS embed their icons that way. tests/test_browser.py checks the pages in Chromium.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'none'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    },
}

# --- Admin console (docs/operations.md) ---
#: Where the admin lives; another path keeps it out of scanners' way (it is not a secret).
ADMIN_URL = env.str("ADMIN_URL", default="admin/").strip("/") + "/"
#: Staff sign in with a TOTP code too (django-otp; `manage.py admin_2fa_enroll <username>`). Off under
#: DEBUG so `make run` keeps its one-step local login.
ADMIN_REQUIRE_2FA = env.bool("ADMIN_REQUIRE_2FA", default=not DEBUG)
#: Comma-separated CIDRs allowed to reach the admin at all (others get a 404); empty: anyone.
ADMIN_ALLOWED_NETWORKS = env.list("ADMIN_ALLOWED_NETWORKS", default=[])
#: Proxies in front of the app whose X-Forwarded-For is trusted for the client's address (throttles,
#: the admin allow-list, the login lockout); 0: REMOTE_ADDR.
TRUSTED_PROXY_COUNT = env.int("TRUSTED_PROXY_COUNT", default=0)
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",  # refuses locked-out logins before the password is checked
    "django.contrib.auth.backends.ModelBackend",
]
# Password guessing: after ADMIN_LOGIN_FAILURE_LIMIT failures for one username from one address, that
# pair is locked out for ADMIN_LOGIN_LOCKOUT_MINUTES; a success resets the count. Per pair, so an
# attacker cannot lock an operator out from elsewhere.
AXES_FAILURE_LIMIT = env.int("ADMIN_LOGIN_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env.int("ADMIN_LOGIN_LOCKOUT_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_IPWARE_PROXY_COUNT = TRUSTED_PROXY_COUNT or None
AXES_IPWARE_META_PRECEDENCE_ORDER = ["HTTP_X_FORWARDED_FOR", "REMOTE_ADDR"] if TRUSTED_PROXY_COUNT else ["REMOTE_ADDR"]
AXES_VERBOSE = False
OTP_TOTP_ISSUER = env.str("OTP_TOTP_ISSUER", default="WeChat Open Platform")

# --- Request size limits ---
# Form fields (not files) Django keeps in memory for any request. The upload API caps its own body
# more tightly while it streams it (uploads/api.py: 1 MiB of image, or UPLOAD_FIT_MAX_BYTES with fit).
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("DATA_UPLOAD_MAX_MEMORY_SIZE", default=2 * 1024 * 1024)
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024

# --- WeChat ---
WECHAT_API_BASE = env.str("WECHAT_API_BASE", default="https://api.weixin.qq.com")
WECHAT_MP_BASE = env.str("WECHAT_MP_BASE", default="https://mp.weixin.qq.com")
#: Host of the mobile authorization page (/wxaopen/safe/bindcomponent), opened inside WeChat.
WECHAT_OPEN_BASE = env.str("WECHAT_OPEN_BASE", default="https://open.weixin.qq.com")
WECHAT_COMPONENT_APPID = env.str("WECHAT_COMPONENT_APPID", default="")
WECHAT_COMPONENT_APPSECRET = env.str("WECHAT_COMPONENT_APPSECRET", default="")
WECHAT_COMPONENT_TOKEN = env.str("WECHAT_COMPONENT_TOKEN", default="")
WECHAT_COMPONENT_AES_KEY = env.str("WECHAT_COMPONENT_AES_KEY", default="")
# Production never starts half-configured: without the component's credentials no ticket can be verified
# and no token obtained. ALLOW_MISSING_COMPONENT=1 is the escape hatch for steps that only need the
# settings to import (collectstatic while building the image); never set it on a running service.
ALLOW_MISSING_COMPONENT = env.bool("ALLOW_MISSING_COMPONENT", default=False)
if not DEBUG and not ALLOW_MISSING_COMPONENT:
    _missing = [
        name
        for name, value in (
            ("WECHAT_COMPONENT_APPID", WECHAT_COMPONENT_APPID),
            ("WECHAT_COMPONENT_APPSECRET", WECHAT_COMPONENT_APPSECRET),
            ("WECHAT_COMPONENT_TOKEN", WECHAT_COMPONENT_TOKEN),
            ("WECHAT_COMPONENT_AES_KEY", WECHAT_COMPONENT_AES_KEY),
        )
        if not value
    ]
    if _missing:
        raise ImproperlyConfigured(
            f"{', '.join(_missing)} must be set when DEBUG is off (the component's credentials, from the "
            "WeChat Open Platform console; ALLOW_MISSING_COMPONENT=1 only for build steps like collectstatic)"
        )
    _aes_key = WECHAT_COMPONENT_AES_KEY
    if len(_aes_key) != 43 or not (_aes_key.isascii() and _aes_key.isalnum()):
        raise ImproperlyConfigured(
            "WECHAT_COMPONENT_AES_KEY must be the 43-character EncodingAESKey ([A-Za-z0-9]) set on the "
            "WeChat Open Platform console"
        )
#: A push to the events URLs whose `timestamp` is further than this from now, either way, is refused
#: (403): a captured push cannot be replayed later. 0 turns the check off, to replay published test
#: vectors, which carry fixed old timestamps. docs/wechat-protocol.md §1.
WECHAT_PUSH_MAX_AGE_SECONDS = env.int("WECHAT_PUSH_MAX_AGE_SECONDS", default=600)
WECHAT_HTTP_TIMEOUT = env.float("WECHAT_HTTP_TIMEOUT", default=10.0)
WECHAT_HTTP_MAX_RETRIES = env.int("WECHAT_HTTP_MAX_RETRIES", default=2)
PUBLIC_BASE_URL = env.str("PUBLIC_BASE_URL", default="http://127.0.0.1:8000")
#: Staging only: the bearer token the WeChat simulator's control API (/_sim/) requires
#: (`manage.py wechat_simulator`; `seed_demo` sends it). Empty: the control API is open, and the
#: simulator listens on loopback only.
SIMULATOR_CONTROL_TOKEN = env.str("SIMULATOR_CONTROL_TOKEN", default="")

# --- Celery ---
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="filesystem://")
if CELERY_BROKER_URL.startswith("filesystem://"):
    _broker_dir = VAR_DIR / "broker"
    for sub in ("in", "processed", "control"):
        (_broker_dir / sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "in"),
        "data_folder_out": str(_broker_dir / "in"),
        "processed_folder": str(_broker_dir / "processed"),
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
        "polling_interval": 0.1,
    }
else:
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        # With acks_late, a message whose worker died is redelivered after this long.
        "visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", default=600),
        # ...by a worker's sweep of unacknowledged messages, every 10 s (kombu scans on every 10th by
        # default: 100 s). On the threads pool a lost worker is the whole process, and nothing hands its
        # messages back at once (prefork's WorkerLostError does for a lost pool process): this sweep does.
        "unacked_restore_throttle": 1,
    }
# Two queues, two kinds of worker (docs/architecture.md §4, "Workers"). An upload is almost all waiting
# for WeChat, so `uploads` runs on a threads pool sized for calls in flight (`--pool threads -Q uploads`);
# every other task (token refresh batches, reconciliation, sweepers, purges, component events) stays on
# the default queue, `celery`, run by a prefork worker (`--pool prefork -Q celery`), where the time limits
# below are enforced and a CPU-heavy or long job cannot hold up uploads. A webhook delivery is waiting
# too (a receiver has up to WEBHOOK_TIMEOUT_SECONDS), bounded by its timeout and its lease: it shares the
# I/O pool.
CELERY_TASK_DEFAULT_QUEUE = "celery"
CELERY_TASK_ROUTES = {"uploads.upload_image": {"queue": "uploads"}, "webhooks.deliver": {"queue": "uploads"}}
CELERY_TASK_ALWAYS_EAGER = False
CELERY_TASK_IGNORE_RESULT = True
CELERY_RESULT_BACKEND = None
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
# One message per pool slot for the jobs worker (a long job must not hold a short one back). The upload
# worker runs with `--prefetch-multiplier 2` (deploy/Procfile): the next message is already at hand when
# a thread finishes, instead of a broker round trip later (6.3 -> 2.8 ms from one result to the next
# claim on a thread in one bench --quick; over full runs, a median of 3 each, the drain went 0.48 ->
# 0.51 x a direct loop and two clients stayed at 0.77). A killed worker's
# reserved messages come back through the broker's visibility timeout or the sweeper (2 minutes).
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Enforced by the prefork pool only: a threads pool cannot stop a thread, and ignores both. Uploads are
# bounded by their lease and per-call timeouts instead (uploads/tasks.py).
CELERY_TASK_TIME_LIMIT = env.int("CELERY_TASK_TIME_LIMIT", default=120)
CELERY_TASK_SOFT_TIME_LIMIT = env.int("CELERY_TASK_SOFT_TIME_LIMIT", default=100)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# Celery's Django fix-up closes every database connection before and after each task unless this is set,
# so each upload task opened a new PostgreSQL connection (a server process, authentication, cold
# caches). With it, workers keep their connections as web processes do, CONN_MAX_AGE and
# CONN_HEALTH_CHECKS apply per task (openplatform/celery.py), and Celery still recycles them after this
# many tasks. Django's connections are per thread: a threads-pool worker holds one per thread that has
# run a task (at most its --concurrency), a prefork worker one per pool process.
CELERY_DB_REUSE_MAX = 1000
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_TIMEZONE = TIME_ZONE

# --- REST framework ---
REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "openplatform.core.api.ApiPagination",
    "PAGE_SIZE": 50,
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "WeChat third-party platform: merchant API",
    "DESCRIPTION": "Upload images for your authorized Official Accounts and Mini Programs.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI and ReDoc from our own static files (drf-spectacular-sidecar), not a CDN: /api/docs/
    # works where the browser cannot reach one, and serves what was tested.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    # No badge fetched from swagger.io's online validator: /api/docs/ loads nothing from another host.
    "SWAGGER_UI_SETTINGS": {"deepLinking": True, "validatorUrl": None},
    "REDOC_DIST": "SIDECAR",
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "openplatform.core.api_schema.add_common_error_responses",
    ],
}

# --- Logging: one line per event, never a secret (see openplatform/logging.py) ---
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
LOG_JSON = env.bool("LOG_JSON", default=False)
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"redact": {"()": "openplatform.logging.RedactSecretsFilter"}},
    "formatters": {
        "plain": {
            "()": "openplatform.logging.RedactingFormatter",
            "format": "%(asctime)s %(levelname)s %(name)s %(message)s",
        },
        "json": {"()": "openplatform.logging.JsonFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "json" if LOG_JSON else "plain",
            "filters": ["redact"],
        }
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        # runserver's access lines ("GET /wechat/component/authorized/?state=...&auth_code=...") go
        # through the redacting handler instead of Django's own.
        "django.server": {"handlers": ["console"], "level": "INFO", "propagate": False},
    },
}

REST_FRAMEWORK.update(
    {
        "DEFAULT_AUTHENTICATION_CLASSES": ["tenants.auth.TenantAPIKeyAuthentication"],
        "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
        # Counted per key and per tenant (tenants/auth.py): a request needs room in both.
        "DEFAULT_THROTTLE_CLASSES": ["tenants.auth.APIKeyRateThrottle", "tenants.auth.TenantRateThrottle"],
        "DEFAULT_THROTTLE_RATES": {
            "tenant": env.str("API_THROTTLE_RATE", default="1200/min"),
            "api_key": env.str("API_KEY_THROTTLE_RATE", default="600/min"),
        },
        "EXCEPTION_HANDLER": "openplatform.core.api.api_exception_handler",
        # 0: REMOTE_ADDR; DRF's default (None) would trust a client-sent X-Forwarded-For.
        "NUM_PROXIES": TRUSTED_PROXY_COUNT,
        "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
        "DEFAULT_PARSER_CLASSES": [
            "rest_framework.parsers.JSONParser",
            "rest_framework.parsers.MultiPartParser",
            "rest_framework.parsers.FormParser",
        ],
    }
)

#: Quota burn (docs/architecture.md §3.3): authorization links per tenant (each costs an
#: api_create_preauthcode call), requests to the redirect URL per client address (each new code there
#: costs an api_query_auth call). DRF rates: N/sec, N/min, N/hour, N/day.
AUTHORIZATION_LINK_THROTTLE_RATE = env.str("AUTHORIZATION_LINK_THROTTLE_RATE", default="20/hour")
AUTHORIZED_REDIRECT_THROTTLE_RATE = env.str("AUTHORIZED_REDIRECT_THROTTLE_RATE", default="30/hour")

#: Failed API-key checks per client address (openplatform/core/http.py) before that address is refused
#: with a 429 for the rest of a window of this many seconds; 0 turns the limit off.
API_KEY_FAILURE_LIMIT = env.int("API_KEY_FAILURE_LIMIT", default=20)
API_KEY_FAILURE_WINDOW_SECONDS = env.int("API_KEY_FAILURE_WINDOW_SECONDS", default=600)

# Throttle counters, the failed-key counts and the events URLs' replay memory: shared state, so Redis in
# production. Per-process memory (the default under DEBUG) is no limit at all with several processes:
# each grants the whole rate again, and a push replayed to another process is processed again.
_cache_url = env.str("CACHE_URL", default="")
if not _cache_url and not DEBUG:
    raise ImproperlyConfigured(
        "CACHE_URL must be set when DEBUG is off (e.g. redis://redis:6379/1): the throttles and the replay "
        "memory of the events URLs must be shared by every web process; locmemcache:// only for one process"
    )
CACHES = {"default": env.cache_url_config(_cache_url or "locmemcache://")}
if CACHES["default"]["BACKEND"] == "django.core.cache.backends.redis.RedisCache":
    # The same backend, with one redis client object per pool instead of one per operation.
    CACHES["default"]["BACKEND"] = "openplatform.core.cache.RedisCache"

# --- Uploads ---
#: A worker owns an `uploading` upload this long; must outlive every timeout inside one task run.
UPLOAD_LEASE_SECONDS = env.int("UPLOAD_LEASE_SECONDS", default=90)
# A run starts an upload call only with 2 x WECHAT_HTTP_TIMEOUT + 1 s of its lease left (uploads/services/
# process.py): with a shorter lease no upload would ever be sent.
if UPLOAD_LEASE_SECONDS <= 2 * WECHAT_HTTP_TIMEOUT + 1:
    raise ImproperlyConfigured(
        f"UPLOAD_LEASE_SECONDS ({UPLOAD_LEASE_SECONDS}) must be longer than 2 x WECHAT_HTTP_TIMEOUT + 1 s "
        f"({2 * WECHAT_HTTP_TIMEOUT + 1:g} s): a run needs that much of its lease left to start an upload call"
    )
UPLOAD_MAX_ATTEMPTS = env.int("UPLOAD_MAX_ATTEMPTS", default=6)
UPLOAD_RETRY_BASE_SECONDS = env.float("UPLOAD_RETRY_BASE_SECONDS", default=2.0)
UPLOAD_RETRY_MAX_SECONDS = env.float("UPLOAD_RETRY_MAX_SECONDS", default=60.0)
UPLOAD_BYTES_RETENTION_DAYS = env.int("UPLOAD_BYTES_RETENTION_DAYS", default=7)
#: The largest image POST /api/v1/uploads/ takes with fit=true (it stays in memory while it is decoded;
#: uploads/images.py keeps the rest of the request within docs/architecture.md §3.5's 64 MB).
UPLOAD_FIT_MAX_BYTES = env.int("UPLOAD_FIT_MAX_BYTES", default=10 * 1024 * 1024)

#: An upload of bytes that already succeeded for the same authorizer within this many days reuses that
#: URL (no WeChat call); 0 turns it off.
UPLOAD_DEDUPE_DAYS = env.int("UPLOAD_DEDUPE_DAYS", default=30)

# --- Webhooks (read through webhooks/config.py) ---
#: CIDRs webhook URLs may resolve to although they are loopback/private (local runs, tests, staging);
#: plain http:// is accepted for them too. Everything else must be a public address over https.
WEBHOOK_ALLOWED_NETWORKS = env.list("WEBHOOK_ALLOWED_NETWORKS", default=[])
for _cidr in WEBHOOK_ALLOWED_NETWORKS:
    try:
        ipaddress.ip_network(_cidr.strip(), strict=False)
    except ValueError as _exc:
        raise ImproperlyConfigured(f"WEBHOOK_ALLOWED_NETWORKS: {_cidr!r} is not a CIDR ({_exc})") from None
WEBHOOK_TIMEOUT_SECONDS = env.float("WEBHOOK_TIMEOUT_SECONDS", default=10.0)
#: Backoff between attempts (exponential, jittered): base and cap, in seconds.
WEBHOOK_RETRY_BASE_SECONDS = env.float("WEBHOOK_RETRY_BASE_SECONDS", default=30.0)
WEBHOOK_RETRY_MAX_SECONDS = env.float("WEBHOOK_RETRY_MAX_SECONDS", default=3 * 3600.0)
#: Retries last this long (3 days); an endpoint whose deliveries all fail this long is disabled.
WEBHOOK_RETRY_WINDOW_SECONDS = env.float("WEBHOOK_RETRY_WINDOW_SECONDS", default=3 * 86400.0)
WEBHOOK_EVENT_RETENTION_DAYS = env.int("WEBHOOK_EVENT_RETENTION_DAYS", default=30)

# --- Scheduled jobs (openplatform/ops/schedules.py; written to the beat tables on every `migrate`) ---
#: The beat jobs refreshing the component and authorizer tokens run this often; each refreshes the tokens
#: with less than twice this left (openplatform/core/tokens.py derives its margins from it).
TOKEN_REFRESH_EVERY_SECONDS = env.int("TOKEN_REFRESH_EVERY_SECONDS", default=240)
#: The authorizer token job splits the due accounts into batch tasks of this many, each started after a
#: random delay of up to AUTHORIZER_REFRESH_SPREAD_SECONDS so the refreshes do not all hit WeChat at once.
AUTHORIZER_REFRESH_BATCH_SIZE = env.int("AUTHORIZER_REFRESH_BATCH_SIZE", default=100)
AUTHORIZER_REFRESH_SPREAD_SECONDS = env.float("AUTHORIZER_REFRESH_SPREAD_SECONDS", default=60.0)
#: A caller that finds another worker refreshing a token polls for the new one at most this long, then
#: uses the stored token if it is still good, or fails with a retryable error (an upload is requeued).
TOKEN_REFRESH_WAIT_SECONDS = env.float("TOKEN_REFRESH_WAIT_SECONDS", default=5.0)
#: A refresh lease lasts this long: longer than the WeChat calls of one refresh take (each call is bounded
#: by WECHAT_HTTP_TIMEOUT and its retries). A worker that dies mid-refresh holds it up for at most this.
TOKEN_REFRESH_LEASE_SECONDS = env.float("TOKEN_REFRESH_LEASE_SECONDS", default=60.0)
#: Other jobs' intervals in seconds, by task name, over their defaults: "uploads.sweep_stuck_uploads=30,...".
SCHEDULE_EVERY_SECONDS = {task: int(every) for task, every in env.dict("SCHEDULE_EVERY_SECONDS", default={}).items()}

# --- Metrics ---
#: Bearer token for GET /metrics (`Authorization: Bearer <token>`); unset and DEBUG off -> 404.
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
