"""The admin index lists each model once (the API-key library's own admin used to sit beside ours)."""

from __future__ import annotations

import re
from collections import Counter

import pytest
from django.contrib import admin

pytestmark = pytest.mark.django_db


def test_no_two_registered_models_share_a_name():
    names = Counter(str(model._meta.verbose_name_plural).lower() for model in admin.site._registry)
    assert [name for name, count in names.items() if count > 1] == []


def test_the_admin_index_lists_each_model_once_and_api_keys_are_the_tenants(admin_client):
    response = admin_client.get("/admin/")
    assert response.status_code == 200

    listed = [(app["app_label"], model["name"]) for app in response.context["app_list"] for model in app["models"]]
    names = Counter(str(name).lower() for _, name in listed)
    assert [name for name, count in names.items() if count > 1] == []
    assert ("tenants", "API keys") in listed
    assert "rest_framework_api_key" not in {label for label, _ in listed}

    # And on the page itself: one row links to the API keys, the tenants' changelist.
    html = response.content.decode()
    rows = re.findall(r'<th scope="row"[^>]*>\s*<a href="([^"]+)"[^>]*>API keys</a>', html)
    assert rows == ["/admin/tenants/tenantapikey/"]
    assert "/admin/rest_framework_api_key/" not in html
