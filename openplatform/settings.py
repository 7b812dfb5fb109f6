"""Django settings, read once from the environment (and a `.env` file at the root).

The names are part of the public contract (docs/contract.md, "Configuration"). Production secrets have
no default: with DEBUG off, a missing SECRET_KEY or FIELD_ENCRYPTION_KEYS stops the process at start.
"""

from __future__ import annotations

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
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
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
    DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=60)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True

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
# An upload is at most 1 MiB; the multipart envelope adds a little. Larger bodies are refused early.
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
WECHAT_HTTP_TIMEOUT = env.float("WECHAT_HTTP_TIMEOUT", default=10.0)
WECHAT_HTTP_MAX_RETRIES = env.int("WECHAT_HTTP_MAX_RETRIES", default=2)
PUBLIC_BASE_URL = env.str("PUBLIC_BASE_URL", default="http://127.0.0.1:8000")

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
    }
CELERY_TASK_ALWAYS_EAGER = False
CELERY_TASK_IGNORE_RESULT = True
CELERY_RESULT_BACKEND = None
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TIME_LIMIT = env.int("CELERY_TASK_TIME_LIMIT", default=120)
CELERY_TASK_SOFT_TIME_LIMIT = env.int("CELERY_TASK_SOFT_TIME_LIMIT", default=100)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# Celery's Django fix-up closes every database connection before and after each task unless this is set,
# so each upload task opened a new PostgreSQL connection (a server process, authentication, cold
# caches). With it, workers keep their connections as web processes do, CONN_MAX_AGE and
# CONN_HEALTH_CHECKS apply per task (openplatform/celery.py), and Celery still recycles them after this
# many tasks.
CELERY_DB_REUSE_MAX = 1000
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_TIMEZONE = TIME_ZONE

# --- REST framework ---
REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
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
        "DEFAULT_THROTTLE_CLASSES": ["tenants.auth.TenantRateThrottle"],
        "DEFAULT_THROTTLE_RATES": {"tenant": env.str("API_THROTTLE_RATE", default="1200/min")},
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

# Throttle counters and other shared state: Redis when CACHE_URL says so, else per-process memory.
CACHES = {"default": env.cache_url("CACHE_URL", default="locmemcache://")}

# --- Uploads ---
#: A worker owns an `uploading` upload this long; must outlive every timeout inside one task run.
UPLOAD_LEASE_SECONDS = env.int("UPLOAD_LEASE_SECONDS", default=90)
UPLOAD_MAX_ATTEMPTS = env.int("UPLOAD_MAX_ATTEMPTS", default=6)
UPLOAD_RETRY_BASE_SECONDS = env.float("UPLOAD_RETRY_BASE_SECONDS", default=2.0)
UPLOAD_RETRY_MAX_SECONDS = env.float("UPLOAD_RETRY_MAX_SECONDS", default=60.0)
UPLOAD_BYTES_RETENTION_DAYS = env.int("UPLOAD_BYTES_RETENTION_DAYS", default=7)

# --- Scheduled jobs (openplatform/ops/schedules.py; written to the beat tables on every `migrate`) ---
#: The beat jobs refreshing the component and authorizer tokens run this often; each refreshes the tokens
#: with less than twice this left (openplatform/core/tokens.py derives its margins from it).
TOKEN_REFRESH_EVERY_SECONDS = env.int("TOKEN_REFRESH_EVERY_SECONDS", default=240)
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
