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

from openplatform.services import component_ticket_store


@pytest.fixture
def component(simulator, settings):
    """The component registered in the simulator, our settings pointed at it, and a ticket stored."""
    settings.WECHAT_API_BASE = simulator.url
    settings.WECHAT_MP_BASE = simulator.url
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
