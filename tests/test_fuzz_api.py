"""Schema-driven fuzzing of the merchant API (schemathesis): no 5xx, responses match the schema, and no
tenant ever sees another tenant's object.

Runs against a real server (`live_server`) on PostgreSQL (marked `postgres`: in CI, a run without it is a
failure, not a skip), so authentication, throttling, parsing and the database, which refuses NUL in text,
are all in the loop. Two tenants, each with an API key, an authorized account and uploads; the suite runs
once with each key. The other tenant's upload ids and appid are in the schema as examples (schemathesis
sends them), and a check fails any answer that carries one of the other tenant's objects.
Bounded: a few dozen examples per operation.
"""

from __future__ import annotations

import json
import uuid

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

pytestmark = pytest.mark.postgres

#: Each tenant's fixed identifiers, so that the schema (loaded at import) can offer them as examples.
TENANTS = {
    "a": {"appid": "wxfuzz00000000000a", "uploads": [uuid.UUID(int=0xA1), uuid.UUID(int=0xA2)]},
    "b": {"appid": "wxfuzz00000000000b", "uploads": [uuid.UUID(int=0xB1), uuid.UUID(int=0xB2)]},
}


def _examples(values) -> dict:
    return {f"e{i}": {"value": v} for i, v in enumerate(values)}


def _load_schema() -> dict:
    import django

    django.setup()
    from drf_spectacular.generators import SchemaGenerator
    from drf_spectacular.renderers import OpenApiJsonRenderer

    raw = json.loads(OpenApiJsonRenderer().render(SchemaGenerator().get_schema(request=None, public=True)))
    # Both tenants' ids and appids as examples of the parameters that name an object.
    ids = [str(u) for t in TENANTS.values() for u in t["uploads"]]
    appids = [t["appid"] for t in TENANTS.values()]
    for path in raw["paths"].values():
        for operation in path.values():
            for parameter in operation.get("parameters", []) if isinstance(operation, dict) else []:
                if parameter["name"] == "upload_id":
                    parameter["examples"] = _examples(ids)
                elif parameter["name"] == "authorizer_appid":
                    parameter["examples"] = _examples(appids)
    return raw


schema = schemathesis.openapi.from_dict(_load_schema())


@pytest.fixture
def fuzz_tenants(transactional_db, settings, component, ticket):
    """Two tenants, each with an API key, an authorized account and two uploads; returns their keys."""
    from tenants.models import Authorizer, Tenant
    from tenants.services.keys import api_key_create
    from uploads.models import Upload

    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"tenant": "100000/min"}}
    keys = {}
    for name, known in TENANTS.items():
        tenant = Tenant.objects.create(slug=f"fuzz-{name}", name=f"Fuzz {name.upper()}")
        authorizer = Authorizer.objects.create(
            tenant=tenant, component_appid=settings.WECHAT_COMPONENT_APPID, appid=known["appid"],
            func_info=[11], account_type="official_account",
        )
        for pk in known["uploads"]:
            Upload.objects.create(id=pk, tenant=tenant, authorizer=authorizer, status=Upload.Status.SUCCEEDED,
                                  sha256="0" * 64, size=100, original_size=100, content_type="image/png",
                                  url=f"https://mmbiz.qpic.cn/{pk}.png")
        _, keys[name] = api_key_create(tenant=tenant, name="fuzz")
    return keys


def _objects(body):
    """Every JSON object in an answer, at any depth."""
    if isinstance(body, dict):
        yield body
        for value in body.values():
            yield from _objects(value)
    elif isinstance(body, list):
        for value in body:
            yield from _objects(value)


def no_other_tenants_object(other: str):
    """A schemathesis check: the answer holds no upload or account of tenant `other`."""
    foreign_ids = {str(u) for u in TENANTS[other]["uploads"]}
    foreign_appid = TENANTS[other]["appid"]

    def check(ctx, response, case):
        try:
            body = response.json()
        except ValueError:
            return None
        for obj in _objects(body):
            named = {str(obj.get(key)) for key in ("id", "appid", "authorizer_appid") if key in obj}
            leaked = named & (foreign_ids | {foreign_appid})
            assert not leaked, f"tenant {other}'s object in the answer to {case.operation.label}: {obj}"
        return None

    check.__name__ = f"no_object_of_tenant_{other}"
    return check


@pytest.mark.parametrize("who", ["a", "b"])
@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_merchant_api_never_errors_matches_its_schema_and_keeps_tenants_apart(case, live_server, fuzz_tenants, who):
    other = "b" if who == "a" else "a"
    case.call_and_validate(
        base_url=live_server.url,
        headers={"Authorization": f"Api-Key {fuzz_tenants[who]}"},
        checks=[not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
                no_other_tenants_object(other)],
    )


def test_each_tenant_sees_its_own_objects_and_none_of_the_others(live_server, fuzz_tenants):
    """The same two tenants, every operation that names an object, with the other tenant's ids: the
    follow-up to the fuzzing, asserting what the objects are rather than only what they are not."""
    import requests

    for who, other in (("a", "b"), ("b", "a")):
        session = requests.Session()
        session.headers["Authorization"] = f"Api-Key {fuzz_tenants[who]}"
        base = f"{live_server.url}/api/v1"
        mine, theirs = TENANTS[who], TENANTS[other]

        listed = session.get(f"{base}/uploads/", timeout=10).json()
        assert {r["id"] for r in listed["results"]} == {str(u) for u in mine["uploads"]}
        assert [a["appid"] for a in session.get(f"{base}/authorizers/", timeout=10).json()["results"]] == [mine["appid"]]
        assert session.get(f"{base}/uploads/", params={"authorizer_appid": theirs["appid"]}, timeout=10).json()[
            "count"] == 0
        for pk in theirs["uploads"]:
            answer = session.get(f"{base}/uploads/{pk}/", timeout=10)
            assert (answer.status_code, answer.json()["code"]) == (404, "not_found")
        for pk in mine["uploads"]:
            assert session.get(f"{base}/uploads/{pk}/", timeout=10).json()["authorizer_appid"] == mine["appid"]
        refused = session.post(f"{base}/uploads/", data={"authorizer_appid": theirs["appid"]},
                               files={"media": ("a.png", _png(), "image/png")}, timeout=10)
        assert (refused.status_code, refused.json()["code"]) == (400, "unknown_authorizer")


def _png() -> bytes:
    from tests.fixtures import image_bytes

    return image_bytes()
