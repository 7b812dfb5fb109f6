"""Shared fixtures for Django-side tests: the component wired to the simulator, tenants, keys, authorizers.

Everything goes through the real code paths (onboarding via the simulator's auth codes), never mocks.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import pytest
from django.conf import settings as django_settings
from PIL import Image
from rest_framework.test import APIClient

from openplatform.component.tickets import component_ticket_store


@pytest.fixture
def component(simulator, settings):
    """The component registered in the simulator, our settings pointed at it, and a ticket stored."""
    settings.WECHAT_API_BASE = simulator.url
    settings.WECHAT_MP_BASE = simulator.url
    settings.WECHAT_OPEN_BASE = simulator.url
    settings.WECHAT_HTTP_MAX_RETRIES = 1
    simulator.register_component(
        component_appid=django_settings.WECHAT_COMPONENT_APPID,
        component_appsecret=django_settings.WECHAT_COMPONENT_APPSECRET,
        token=django_settings.WECHAT_COMPONENT_TOKEN,
        encoding_aes_key=django_settings.WECHAT_COMPONENT_AES_KEY,
        events_url=None,
    )
    return simulator


@pytest.fixture
def ticket(component, db):
    """A valid component_verify_ticket issued by the simulator and stored as if pushed."""
    from django.utils import timezone

    raw = component.issue_ticket(django_settings.WECHAT_COMPONENT_APPID)
    component_ticket_store(component_appid=django_settings.WECHAT_COMPONENT_APPID, ticket=raw, pushed_at=timezone.now())
    return raw


@pytest.fixture
def make_tenant(db) -> Callable:
    from tenants.models import Tenant

    def make(slug: str = "acme", **kwargs):
        return Tenant.objects.create(slug=slug, name=kwargs.pop("name", slug.title()), **kwargs)

    return make


@pytest.fixture
def tenant(make_tenant):
    return make_tenant("acme")


@pytest.fixture
def make_api_client(db) -> Callable:
    from tenants.services.keys import api_key_create

    def make(tenant) -> APIClient:
        _, key = api_key_create(tenant=tenant, name="test")
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}")
        client.raw_key = key
        return client

    return make


@pytest.fixture
def api_client(make_api_client, tenant) -> APIClient:
    return make_api_client(tenant)


@pytest.fixture
def make_authorizer(component, ticket) -> Callable:
    """Onboard an authorizer for `tenant` through the simulator (auth code -> api_query_auth -> info)."""
    from tenants.services.authorization import authorization_code_exchange

    def make(tenant, *, func_info=(1, 11), account_type: str = "official_account", appid: str | None = None):
        grant = component.authorize(
            django_settings.WECHAT_COMPONENT_APPID,
            authorizer_appid=appid,
            func_info=list(func_info),
            account_type=account_type,
        )
        return authorization_code_exchange(auth_code=grant["auth_code"], tenant=tenant)

    return make


@pytest.fixture
def authorizer(make_authorizer, tenant):
    return make_authorizer(tenant)


def image_bytes(fmt: str = "PNG", size=(64, 48), color=(200, 30, 30), mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, format=fmt)
    return buf.getvalue()


def media_file(data: bytes, name: str = "image.png", content_type: str = "image/png"):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile(name, data, content_type=content_type)


# --- Added for issue #3: live events URL, signed pushes, counters, direct accounts ---------------------

COMPONENT_EVENTS_PATH = "/wechat/component/events/"
AUTHORIZED_REDIRECT_PATH = "/wechat/component/authorized/"


@pytest.fixture
def live_component(component, live_server, settings):
    """The component re-registered with its events URL on our live server (real pushes, real redirects).

    Request it *before* `ticket`/`authorizer`: re-registering resets the component's state in the
    simulator. A fresh ticket is issued and stored so the component token works either way.
    """
    from django.utils import timezone

    settings.PUBLIC_BASE_URL = live_server.url
    component.register_component(
        component_appid=django_settings.WECHAT_COMPONENT_APPID,
        component_appsecret=django_settings.WECHAT_COMPONENT_APPSECRET,
        token=django_settings.WECHAT_COMPONENT_TOKEN,
        encoding_aes_key=django_settings.WECHAT_COMPONENT_AES_KEY,
        events_url=live_server.url + COMPONENT_EVENTS_PATH,
    )
    raw = component.issue_ticket(django_settings.WECHAT_COMPONENT_APPID)
    component_ticket_store(component_appid=django_settings.WECHAT_COMPONENT_APPID, ticket=raw, pushed_at=timezone.now())
    component.live_server_url = live_server.url
    return component


def signed_event(
    plaintext: str,
    *,
    token: str | None = None,
    aes_key: str | None = None,
    appid: str | None = None,
    timestamp: str | None = None,
    nonce: str = "1590219412",
) -> tuple[str, dict[str, str]]:
    """(body, query params) of a push as WeChat sends it, encrypted and signed for our component by default.

    `timestamp` defaults to now: the events URLs refuse one further than WECHAT_PUSH_MAX_AGE_SECONDS away.
    """
    import time

    from openplatform.wechat.crypto import WXBizMsgCrypt

    timestamp = str(int(time.time())) if timestamp is None else timestamp

    appid = appid or django_settings.WECHAT_COMPONENT_APPID
    crypt = WXBizMsgCrypt(
        token or django_settings.WECHAT_COMPONENT_TOKEN, aes_key or django_settings.WECHAT_COMPONENT_AES_KEY, appid
    )
    encrypt = crypt.encrypt(plaintext)
    body = f"<xml><AppId><![CDATA[{appid}]]></AppId><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"
    params = {
        "timestamp": timestamp,
        "nonce": nonce,
        "encrypt_type": "aes",
        "msg_signature": crypt.sign(timestamp, nonce, encrypt),
    }
    return body, params


def post_raw(client, path: str, body: bytes | str, params: dict[str, str] | None = None, **extra):
    """POST a raw XML body through the Django test client (which re-raises any unhandled exception)."""
    from urllib.parse import urlencode

    url = path + ("?" + urlencode(params) if params else "")
    return client.generic("POST", url, body, content_type="text/xml", **extra)


def sim_count(simulator, path: str) -> int:
    """How many requests the simulator has seen on `path` (e.g. "api_authorizer_token")."""
    if not path.startswith("/"):
        path = "/cgi-bin/component/" + path
    return simulator.counters().get(path, 0)


def expire_access_token(authorizer, *, seconds_ago: int = 60) -> None:
    """Make the stored access token look expired, in the database (as if time had passed)."""
    from datetime import timedelta

    from django.utils import timezone

    from tenants.models import Authorizer

    Authorizer.objects.filter(pk=authorizer.pk).update(
        access_token_expires_at=timezone.now() - timedelta(seconds=seconds_ago)
    )
    authorizer.refresh_from_db()


@pytest.fixture
def make_direct_authorizer(component, db) -> Callable:
    """An account that gave us its own AppID/AppSecret (tokens from stable_token), registered in the simulator."""
    from tenants.models import Authorizer

    def make(tenant, *, appid: str = "wxdirect00000001", secret: str = "direct-app-secret", func_info=(1, 11)):
        component.register_direct_account(appid, secret, list(func_info))
        authorizer = Authorizer(
            tenant=tenant,
            component_appid=django_settings.WECHAT_COMPONENT_APPID,
            appid=appid,
            mode=Authorizer.Mode.DIRECT,
            account_type=Authorizer.AccountType.OFFICIAL_ACCOUNT,
            func_info=sorted(func_info),
        )
        authorizer.set_app_secret(secret)
        authorizer.save()
        return authorizer

    return make


def noise_bytes(fmt: str = "PNG", size=(900, 900), mode: str = "RGB", seed: int = 0, **save_kwargs) -> bytes:
    """An image of seeded random noise: it does not compress, so it is as large as its pixel count says."""
    import random

    width, height = size
    pixels = random.Random(seed).randbytes(width * height * len(mode))
    buf = io.BytesIO()
    Image.frombytes(mode, size, pixels).save(buf, format=fmt, **save_kwargs)
    return buf.getvalue()


@pytest.fixture
def make_upload(db) -> Callable:
    """Accept an upload through the real service (its task is not run: callers run it themselves)."""
    from uploads.services.accept import upload_create

    def make(authorizer, data: bytes | None = None, **kwargs):
        return upload_create(
            tenant=authorizer.tenant,
            authorizer_appid=authorizer.appid,
            data=data if data is not None else image_bytes("PNG"),
            **kwargs,
        ).upload

    return make


@pytest.fixture
def bulk_uploads(db) -> Callable:
    """Insert `count` upload records (and their bytes) in two queries: history for scale tests."""
    import hashlib
    from datetime import timedelta

    from django.utils import timezone

    from uploads.models import Upload, UploadBlob

    def make(authorizer, count: int, **fields) -> list:
        data = image_bytes("PNG")
        now = timezone.now()
        defaults = {
            "sha256": hashlib.sha256(data).hexdigest(),
            "size": len(data),
            "original_size": len(data),
            "content_type": "image/png",
            "status": Upload.Status.SUCCEEDED,
        }
        rows = Upload.objects.bulk_create(
            Upload(
                tenant=authorizer.tenant,
                authorizer=authorizer,
                **{**defaults, "created_at": now - timedelta(seconds=count - i), **fields},
            )
            for i in range(count)
        )
        UploadBlob.objects.bulk_create(UploadBlob(upload=row, data=data) for row in rows)
        return rows

    return make


@pytest.fixture
def published_tasks():
    """Every Celery message published during the test, as (task name, args), seen at the broker boundary."""
    from celery.signals import before_task_publish

    seen: list[tuple[str, list]] = []

    def record(sender=None, body=None, headers=None, **kwargs) -> None:
        seen.append((headers.get("task", sender), list(body[0])))

    before_task_publish.connect(record, weak=False)
    yield seen
    before_task_publish.disconnect(record)


# The real-worker fixtures (tests/worker.py), available to every test module like the ones above.
from tests.worker import (  # noqa: E402,F401
    _supervise_celery_worker,
    celery_worker,
    jobs_worker,
    worker_broker,
    worker_concurrency,
    worker_env,
)
