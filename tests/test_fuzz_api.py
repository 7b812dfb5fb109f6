"""Schema-driven fuzzing of the merchant API (schemathesis): no 5xx, responses match the schema.

Runs against a real server (`live_server`) with a valid API key, so authentication, throttling,
parsing and the database are all in the loop. Bounded: a few dozen examples per operation.
"""

from __future__ import annotations

import json

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)


def _load_schema() -> dict:
    import django

    django.setup()
    from drf_spectacular.generators import SchemaGenerator
    from drf_spectacular.renderers import OpenApiJsonRenderer

    return json.loads(OpenApiJsonRenderer().render(SchemaGenerator().get_schema(request=None, public=True)))


schema = schemathesis.openapi.from_dict(_load_schema())


@pytest.fixture
def fuzz_key(transactional_db, settings, component, ticket):
    from tenants.models import Authorizer, Tenant
    from tenants.services.keys import api_key_create

    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK,
                               "DEFAULT_THROTTLE_RATES": {"tenant": "100000/min"}}
    tenant, _ = Tenant.objects.get_or_create(slug="fuzz", defaults={"name": "Fuzz"})
    Authorizer.objects.get_or_create(
        component_appid=settings.WECHAT_COMPONENT_APPID, appid="wxfuzz000000000001",
        defaults={"tenant": tenant, "func_info": [11], "account_type": "official_account"},
    )
    _, key = api_key_create(tenant=tenant, name="fuzz")
    return key


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_merchant_api_never_errors_and_matches_its_schema(case, live_server, fuzz_key):
    case.call_and_validate(
        base_url=live_server.url,
        headers={"Authorization": f"Api-Key {fuzz_key}"},
        checks=[not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance],
    )
