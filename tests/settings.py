"""Test settings: the production settings module with test-only secrets filled in."""

import os

os.environ.setdefault("SECRET_KEY", "test-only-secret-key")
# Two keys so that every test exercises MultiFernet decryption with a non-primary key available.
os.environ.setdefault(
    "FIELD_ENCRYPTION_KEYS",
    "dGVzdC1vbmx5LWZpZWxkLWtleS1udW1iZXItb25lISE=,dGVzdC1vbmx5LWZpZWxkLWtleS1udW1iZXItdHdvISE=",
)
os.environ.setdefault("WECHAT_COMPONENT_APPID", "wxcomponent0000001")
os.environ.setdefault("WECHAT_COMPONENT_APPSECRET", "test-component-appsecret")
os.environ.setdefault("WECHAT_COMPONENT_TOKEN", "testtoken")
os.environ.setdefault("WECHAT_COMPONENT_AES_KEY", "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG")
# The real broker when the suite has Redis (worker tests need it), else an in-process one.
os.environ.setdefault("CELERY_BROKER_URL", os.environ.get("TEST_REDIS_URL") or "memory://")
os.environ.setdefault("CELERY_VISIBILITY_TIMEOUT", "20")
os.environ.setdefault("WECHAT_HTTP_TIMEOUT", "5")
# One process (the live server is a thread of it): its own memory is a shared cache here. Production
# refuses to start without CACHE_URL (tests/test_deploy.py).
os.environ.setdefault("CACHE_URL", "locmemcache://")

from openplatform.settings import *  # noqa: E402,F403

# A test database of its own per run, so concurrent runs on one PostgreSQL never drop each other's.
if DATABASES["default"]["ENGINE"] != "django.db.backends.sqlite3":  # noqa: F405 (SQLite tests run in memory)
    DATABASES["default"].setdefault("TEST", {})["NAME"] = (  # noqa: F405
        f"test_openplatform_{os.environ.get('TEST_DB_SUFFIX') or os.getpid()}"
    )

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# Admin tests sign in with force_login; two-factor sign-in has its own tests (test_admin_security.py).
ADMIN_REQUIRE_2FA = False
