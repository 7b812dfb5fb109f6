"""Tenants, API keys, the merchant authorizer API and the operator admin (issue #3)."""

from __future__ import annotations

import io
import re
from datetime import timedelta
from html import unescape
from urllib.parse import parse_qs, urlsplit

import pytest
from django.conf import settings as django_settings
from django.core.management import CommandError, call_command
from django.utils import timezone
from rest_framework.test import APIClient

from openplatform.component.models import ComponentAccessToken, ComponentEvent, ComponentVerifyTicket
from tenants.models import Authorizer, Tenant, TenantAPIKey
from tenants.services.keys import api_key_create, api_key_revoke
from tests.fixtures import sim_count

APPID = django_settings.WECHAT_COMPONENT_APPID

pytestmark = pytest.mark.django_db


def run_command(*args) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO())
    return out.getvalue().strip().splitlines()[-1]


def key_client(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}")
    return client


# -- commands and keys -----------------------------------------------------------------------------------


def test_create_tenant_and_api_key_commands_print_slug_and_key_last():
    assert run_command("create_tenant", "acme-coffee", "--name", "Acme Coffee") == "acme-coffee"
    tenant = Tenant.objects.get(slug="acme-coffee")
    assert tenant.name == "Acme Coffee" and tenant.is_active
    assert run_command("create_tenant", "acme-coffee") == "acme-coffee"  # re-running reuses it
    assert Tenant.objects.count() == 1

    key = run_command("create_api_key", "acme-coffee")

    response = key_client(key).get("/api/v1/authorizers/")
    assert response.status_code == 200
    assert response.json() == {"count": 0, "next": None, "previous": None, "results": []}


@pytest.mark.parametrize("slug", ["Acme", "acme coffee", "acme/../x", "", "ünï"])
def test_create_tenant_refuses_bad_slugs(slug):
    with pytest.raises(CommandError):
        run_command("create_tenant", slug)
    assert not Tenant.objects.exists()


def test_create_api_key_for_an_unknown_tenant_fails():
    with pytest.raises(CommandError):
        run_command("create_api_key", "nobody")


def test_api_keys_are_stored_hashed(tenant):
    api_key, key = api_key_create(tenant=tenant, name="ci")
    stored = TenantAPIKey.objects.get(pk=api_key.pk)
    secret_part = key.partition(".")[2]
    row_text = " ".join(str(v) for v in TenantAPIKey.objects.filter(pk=api_key.pk).values().first().values())
    assert secret_part and secret_part not in row_text
    assert key not in row_text
    assert stored.hashed_key != secret_part
    assert stored.is_valid(key)


def test_disabled_tenant_is_403_and_revoked_key_is_401(make_tenant):
    tenant = make_tenant("acme")
    _, key = api_key_create(tenant=tenant)
    revoked, revoked_key = api_key_create(tenant=tenant)
    api_key_revoke(api_key=revoked)

    assert key_client(revoked_key).get("/api/v1/authorizers/").status_code == 401
    assert key_client(revoked_key).get("/api/v1/authorizers/").json()["code"] == "authentication_failed"
    Tenant.objects.filter(pk=tenant.pk).update(is_active=False)
    response = key_client(key).get("/api/v1/authorizers/")
    assert response.status_code == 403
    assert response.json()["code"] == "permission_denied"


def test_expired_key_is_401(tenant):
    api_key, key = api_key_create(tenant=tenant)
    TenantAPIKey.objects.filter(pk=api_key.pk).update(expiry_date=timezone.now() - timedelta(days=1))
    assert key_client(key).get("/api/v1/authorizers/").status_code == 401


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Api-Key",
        "Api-Key ",
        "Api-Key a b",
        "Api-Key nodot",
        "Api-Key abc.def",
        "Api-Key \u00e9\u00e9\u00e9.x",
        "Api-Key ab\x00cd.efgh",
        "Api-Key " + "A" * 10000,
        "Bearer something",
        "Token abc",
    ],
)
def test_bad_credentials_are_401_never_500(tenant, header):
    api_key_create(tenant=tenant)
    client = APIClient()
    if header is not None:
        client.credentials(HTTP_AUTHORIZATION=header)
    response = client.get("/api/v1/authorizers/")
    assert response.status_code == 401, (header[:40] if header else header, response.status_code)
    assert set(response.json()) == {"code", "detail"}


def test_key_of_one_tenant_with_the_prefix_of_another_is_401(make_tenant):
    _, key_a = api_key_create(tenant=make_tenant("alpha"))
    _, key_b = api_key_create(tenant=make_tenant("beta"))
    forged = key_a.partition(".")[0] + "." + key_b.partition(".")[2]
    assert key_client(forged).get("/api/v1/authorizers/").status_code == 401


# -- guessing keys, and rates per key --------------------------------------------------------------------

AUTHORIZERS_URL = "/api/v1/authorizers/"


def test_failed_keys_from_one_address_are_refused_with_a_429_before_any_key_is_looked_up(
    tenant, settings, django_assert_num_queries
):
    # given a limit of 3 failed keys per address, and a guesser at 203.0.113.7
    settings.API_KEY_FAILURE_LIMIT = 3
    _, good = api_key_create(tenant=tenant)
    guesser = {"REMOTE_ADDR": "203.0.113.7"}
    wrong = [key_client(f"{good.partition('.')[0]}.guess{n}") for n in range(3)] + [key_client("Z.Z")]

    # when it fails three times
    assert [c.get(AUTHORIZERS_URL, **guesser).status_code for c in wrong[:3]] == [401, 401, 401]

    # then even a right key from that address is refused, without a query, for the rest of the window
    with django_assert_num_queries(0):
        refused = key_client(good).get(AUTHORIZERS_URL, **guesser)
    assert refused.status_code == 429, refused.content
    assert refused.json()["code"] == "throttled"
    assert 0 < int(refused["Retry-After"]) <= settings.API_KEY_FAILURE_WINDOW_SECONDS
    # a client-sent X-Forwarded-For changes nothing (no proxy is trusted)
    spoofed = wrong[3].get(AUTHORIZERS_URL, HTTP_X_FORWARDED_FOR="198.51.100.9", **guesser)
    assert spoofed.status_code == 429
    # and other addresses are not affected
    assert key_client(good).get(AUTHORIZERS_URL, REMOTE_ADDR="203.0.113.8").status_code == 200


def test_failed_keys_are_counted_per_client_behind_a_trusted_proxy(tenant, settings):
    # given one trusted proxy (TRUSTED_PROXY_COUNT=1 sets DRF's NUM_PROXIES)
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}
    settings.API_KEY_FAILURE_LIMIT = 2
    _, good = api_key_create(tenant=tenant)
    via_proxy = {"REMOTE_ADDR": "10.0.0.2"}

    # when one client behind it fails twice
    for _ in range(2):
        key_client("nope.nope").get(AUTHORIZERS_URL, HTTP_X_FORWARDED_FOR="198.51.100.1", **via_proxy)

    # then that client is refused, and another client behind the same proxy is not
    assert key_client(good).get(AUTHORIZERS_URL, HTTP_X_FORWARDED_FOR="198.51.100.1", **via_proxy).status_code == 429
    assert key_client(good).get(AUTHORIZERS_URL, HTTP_X_FORWARDED_FOR="198.51.100.2", **via_proxy).status_code == 200


def test_a_successful_key_does_not_reset_the_failures_of_its_address(tenant, settings):
    settings.API_KEY_FAILURE_LIMIT = 2
    _, good = api_key_create(tenant=tenant)
    key_client("nope.nope").get(AUTHORIZERS_URL)
    assert key_client(good).get(AUTHORIZERS_URL).status_code == 200  # one failure left...
    key_client("nope.nope").get(AUTHORIZERS_URL)
    assert key_client(good).get(AUTHORIZERS_URL).status_code == 429  # ...a valid key does not buy more guesses


def test_a_clean_address_is_read_once_a_second_and_a_block_seen_elsewhere_holds_within_it(tenant, settings,
                                                                                          monkeypatch):
    from tenants import auth

    settings.API_KEY_FAILURE_LIMIT = 2
    _, good = api_key_create(tenant=tenant)
    here = {"REMOTE_ADDR": "203.0.113.20"}
    reads = []
    real = auth.window_hits

    def counted(key, *, window, add=1):
        if add == 0:
            reads.append(key)
        return real(key, window=window, add=add)

    monkeypatch.setattr(auth, "window_hits", counted)
    now = [1000.0]
    monkeypatch.setattr(auth.time, "monotonic", lambda: now[0])

    # given an address that has never failed: its counter is read once, then trusted for a second
    assert [key_client(good).get(AUTHORIZERS_URL, **here).status_code for _ in range(3)] == [200, 200, 200]
    assert len(reads) == 1

    # when another web process sees it fail up to the limit (its counter is shared in the cache)
    counter = f"api-key-failures:{here['REMOTE_ADDR']}"
    real(counter, window=settings.API_KEY_FAILURE_WINDOW_SECONDS, add=2)
    # then this process refuses it once its memo of a clean counter is a second old
    now[0] += auth.CLEAN_MEMO_SECONDS
    assert key_client(good).get(AUTHORIZERS_URL, **here).status_code == 429
    assert len(reads) == 2


def test_a_failure_seen_here_drops_the_memo_at_once(tenant, settings, monkeypatch):
    from tenants import auth

    settings.API_KEY_FAILURE_LIMIT = 2
    _, good = api_key_create(tenant=tenant)
    here = {"REMOTE_ADDR": "203.0.113.21"}
    monkeypatch.setattr(auth.time, "monotonic", lambda: 5000.0)  # the memo never ages in this test
    assert key_client(good).get(AUTHORIZERS_URL, **here).status_code == 200  # remembered as clean
    # two guesses: the first drops the memo, so the limit holds exactly
    assert [key_client("nope.nope").get(AUTHORIZERS_URL, **here).status_code for _ in range(2)] == [401, 401]
    assert key_client(good).get(AUTHORIZERS_URL, **here).status_code == 429


def test_each_key_has_a_rate_of_its_own_within_its_tenants(tenant, make_tenant, monkeypatch):
    from tenants.auth import APIKeyRateThrottle, TenantRateThrottle

    # given 2 requests a minute per key and 100 per tenant
    monkeypatch.setattr(APIKeyRateThrottle, "THROTTLE_RATES", {"api_key": "2/min"})
    monkeypatch.setattr(TenantRateThrottle, "THROTTLE_RATES", {"tenant": "100/min"})
    busy, other = (key_client(api_key_create(tenant=tenant)[1]) for _ in range(2))

    # when one key makes three requests
    statuses = [busy.get(AUTHORIZERS_URL).status_code for _ in range(3)]

    # then its third is refused, and the tenant's other key still works
    assert statuses == [200, 200, 429]
    assert other.get(AUTHORIZERS_URL).status_code == 200


@pytest.mark.redis
@pytest.mark.parametrize("backend", ["openplatform.core.cache.RedisCache", "django.core.cache.backends.redis.RedisCache"])
def test_the_rate_counters_lose_no_hit_when_processes_count_at_once(settings, backend):
    # The throttles' counter on the production cache (Redis), hit from many threads at once: every hit
    # gets its own count (a read-modify-write would hand two requests the same one). Our backend counts in
    # one script (INCRBY + EXPIRE NX); Django's own goes through the cache API (add, then incr).
    import os
    import threading
    import time
    import uuid

    from django.core.cache import cache

    from openplatform.core.http import window_hits

    settings.CACHES = {"default": {"BACKEND": backend,
                                   "LOCATION": os.environ["TEST_REDIS_URL"], "KEY_PREFIX": uuid.uuid4().hex}}
    key, counts, start = "race", [], threading.Barrier(8)

    def hit() -> None:
        start.wait()
        counts.extend(window_hits(key, window=3600)[0] for _ in range(25))

    threads = [threading.Thread(target=hit) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    try:
        assert sorted(counts) == list(range(1, 201))
        assert window_hits(key, window=3600, add=0)[0] == 200
        # The window's counter expires with the window (plus a second), not never.
        bucket = cache.make_key(f"{key}:{int(time.time() // 3600)}")
        assert 0 < cache._cache.get_client(write=True).ttl(bucket) <= 3601
    finally:
        cache.delete_many([f"{key}:{int(time.time() // 3600) + d}" for d in (-1, 0)])


# -- the merchant API: scoped to the key's tenant ----------------------------------------------------------


def test_authorizer_list_shows_only_the_key_tenants_accounts(make_tenant, make_authorizer, make_api_client, component):
    alpha, beta = make_tenant("alpha"), make_tenant("beta")
    a1 = make_authorizer(alpha, func_info=(1, 11))
    a2 = make_authorizer(alpha, func_info=(2,), account_type="official_account")
    b1 = make_authorizer(beta, func_info=(18,), account_type="mini_program")
    Authorizer.objects.filter(pk=a2.pk).update(status=Authorizer.Status.REAUTHORIZATION_REQUIRED)

    alpha_view = make_api_client(alpha).get("/api/v1/authorizers/").json()
    beta_view = make_api_client(beta).get("/api/v1/authorizers/").json()

    assert alpha_view["count"] == 2
    assert {a["appid"] for a in alpha_view["results"]} == {a1.appid, a2.appid}
    assert [a["appid"] for a in beta_view["results"]] == [b1.appid]
    by_appid = {a["appid"]: a for a in alpha_view["results"]}
    first = by_appid[a1.appid]
    assert first["status"] == "authorized"
    assert first["can_upload_images"] is True
    assert first["permission_sets"] == [
        {"id": 1, "name": "Message management (消息管理)"},
        {"id": 11, "name": "Material management (素材管理)"},
    ]
    assert first["nick_name"] and first["account_type"] == "official_account"
    assert by_appid[a2.appid]["status"] == "reauthorization_required"
    assert by_appid[a2.appid]["can_upload_images"] is False
    assert beta_view["results"][0]["account_type"] == "mini_program"
    # no token, secret or ciphertext in the answer
    assert not {"access_token", "refresh_token", "access_token_ciphertext"} & set(first)


def test_unbound_authorizers_are_visible_to_no_tenant(component, ticket, make_api_client, tenant):
    grant = component.authorize(APPID)
    from tenants.services.authorization import authorization_code_exchange

    authorization_code_exchange(auth_code=grant["auth_code"])  # e.g. from the event, before any redirect
    assert make_api_client(tenant).get("/api/v1/authorizers/").json()["count"] == 0


def test_unauthenticated_api_is_401_with_the_error_shape(db):
    for method, path in (("get", "/api/v1/authorizers/"), ("post", "/api/v1/authorization-links/")):
        response = getattr(APIClient(), method)(path)
        assert response.status_code == 401
        assert response.json()["code"] == "not_authenticated"
        assert response["WWW-Authenticate"] == "Api-Key"


def test_api_schema_and_docs_are_served(client):
    assert client.get("/api/schema/").status_code == 200
    assert client.get("/api/docs/").status_code == 200


# -- the admin -------------------------------------------------------------------------------------------


@pytest.fixture
def onboarded(make_tenant, make_authorizer, component):
    tenant = make_tenant("acme")
    authorizer = make_authorizer(tenant, func_info=(1, 11))
    Authorizer.objects.filter(pk=authorizer.pk).update(last_error="61023 refresh_token is invalid (an example)")
    authorizer.refresh_from_db()
    api_key_create(tenant=tenant)
    return tenant, authorizer


def _secrets_of(authorizer, component) -> list[str]:
    sim = component.authorizer(authorizer.appid)
    values = [sim["access_token"], sim["refresh_token"], authorizer.access_token_ciphertext,
              authorizer.refresh_token_ciphertext]
    values += [row.access_token_ciphertext for row in ComponentAccessToken.objects.all()]
    values += [row.ticket_ciphertext for row in ComponentVerifyTicket.objects.all()]
    values += [row.get_ticket() for row in ComponentVerifyTicket.objects.all()]
    values += [row.get_access_token() for row in ComponentAccessToken.objects.all()]
    # (An API key's *hash* is its primary key in djangorestframework-api-key, so the admin's URLs carry it;
    # the key itself is never stored, so it cannot be shown.)
    return [v for v in values if v]


def test_admin_pages_render_with_health_and_without_secrets(admin_client, onboarded, component):
    tenant, authorizer = onboarded
    pages = {
        "/admin/": None,
        "/admin/tenants/tenant/": [b"acme"],
        f"/admin/tenants/tenant/{tenant.pk}/change/": [authorizer.appid.encode()],
        "/admin/tenants/authorizer/": [authorizer.appid.encode(), b"61023 refresh_token is invalid"],
        f"/admin/tenants/authorizer/{authorizer.pk}/change/": [
            b"Message management (\xe6\xb6\x88\xe6\x81\xaf\xe7\xae\xa1\xe7\x90\x86)",
            b"Material management",
            b"Can upload images:</label>",
            b'icon-yes.svg" alt="True"',
            b"Access token expires at:</label>",
            b"Refresh token stored:</label>",
            b"61023 refresh_token is invalid (an example)",
            b"Authorized",
        ],
        "/admin/tenants/tenantapikey/": None,
        "/admin/openplatform/componentverifyticket/": None,
        "/admin/openplatform/componentaccesstoken/": None,
        "/admin/openplatform/componentevent/": None,
        "/admin/django_celery_beat/periodictask/": None,
        "/admin/tenants/authorizer/?status__exact=authorized": [authorizer.appid.encode()],
        "/admin/tenants/authorizer/?q=" + authorizer.appid: [authorizer.appid.encode()],
    }
    token_row = ComponentAccessToken.objects.get()
    pages[f"/admin/openplatform/componentaccesstoken/{token_row.pk}/change/"] = None
    pages[f"/admin/openplatform/componentverifyticket/{ComponentVerifyTicket.objects.first().pk}/change/"] = None
    secrets = _secrets_of(authorizer, component)
    for url, expected in pages.items():
        response = admin_client.get(url)
        assert response.status_code == 200, url
        html = response.content
        for needle in expected or []:
            assert needle in html, (url, needle)
        for secret in secrets:
            assert secret.encode() not in html, url


def test_admin_authorizer_change_page_saves_without_touching_tokens(admin_client, onboarded):
    tenant, authorizer = onboarded
    other = Tenant.objects.create(slug="other")
    before = Authorizer.objects.get(pk=authorizer.pk)
    url = f"/admin/tenants/authorizer/{authorizer.pk}/change/"
    response = admin_client.post(url, {"tenant": other.pk, "_save": "Save"})
    assert response.status_code == 302, response.content[:2000]
    after = Authorizer.objects.get(pk=authorizer.pk)
    assert after.tenant == other  # an operator moves an account between merchants here
    assert after.access_token_ciphertext == before.access_token_ciphertext
    assert after.refresh_token_ciphertext == before.refresh_token_ciphertext


def _action(admin_client, model: str, action: str, pks) -> object:
    return admin_client.post(
        f"/admin/{model}/", {"action": action, "_selected_action": [str(pk) for pk in pks]}, follow=True
    )


def test_admin_action_refresh_token_now(admin_client, onboarded, component):
    _, authorizer = onboarded
    response = _action(admin_client, "tenants/authorizer", "refresh_token_now", [authorizer.pk])
    assert response.status_code == 200
    refreshed = Authorizer.objects.get(pk=authorizer.pk)
    assert refreshed.token_generation == authorizer.token_generation + 1
    assert refreshed.get_access_token() == component.authorizer(authorizer.appid)["access_token"]
    assert sim_count(component, "api_authorizer_token") == 1
    assert f"token generation {refreshed.token_generation}".encode() in response.content
    assert refreshed.get_access_token().encode() not in response.content


def test_admin_action_refresh_reports_a_revoked_account(admin_client, onboarded, component):
    _, authorizer = onboarded
    component.revoke(authorizer.appid)
    response = _action(admin_client, "tenants/authorizer", "refresh_token_now", [authorizer.pk])
    assert response.status_code == 200
    assert b"authorize again" in response.content
    assert Authorizer.objects.get(pk=authorizer.pk).status == Authorizer.Status.REAUTHORIZATION_REQUIRED


def test_admin_action_resync(admin_client, onboarded, component):
    _, authorizer = onboarded
    component.reauthorize(authorizer.appid, func_info=[11, 7])  # WeChat now says 7 and 11
    response = _action(admin_client, "tenants/authorizer", "resync_from_wechat", [authorizer.pk])
    assert response.status_code == 200
    assert b"synced at" in response.content
    synced = Authorizer.objects.get(pk=authorizer.pk)
    assert synced.func_info == [7, 11]
    assert synced.get_refresh_token() == component.authorizer(authorizer.appid)["refresh_token"]


def test_admin_action_resync_reports_wechat_errors(admin_client, onboarded, component):
    _, authorizer = onboarded
    component.revoke(authorizer.appid)
    response = _action(admin_client, "tenants/authorizer", "resync_from_wechat", [authorizer.pk])
    assert response.status_code == 200
    assert b"61003" in response.content


def test_admin_action_revoke(admin_client, onboarded):
    _, authorizer = onboarded
    response = _action(admin_client, "tenants/authorizer", "revoke", [authorizer.pk])
    assert response.status_code == 200
    assert b"1 authorizer(s) revoked" in response.content
    revoked = Authorizer.objects.get(pk=authorizer.pk)
    assert revoked.status == Authorizer.Status.REVOKED
    assert revoked.access_token_ciphertext == revoked.refresh_token_ciphertext == ""
    assert "revoked by" in revoked.last_error


def test_admin_action_make_authorization_link(admin_client, onboarded, component):
    tenant, _ = onboarded
    response = _action(admin_client, "tenants/tenant", "make_authorization_link", [tenant.pk])
    assert response.status_code == 200
    assert b"PC link" in response.content and b"mobile link" in response.content
    assert b"/cgi-bin/componentloginpage?" in response.content
    assert sim_count(component, "api_create_preauthcode") == 1


def test_admin_action_make_authorization_link_without_ticket_says_why(admin_client, tenant, component):
    response = _action(admin_client, "tenants/tenant", "make_authorization_link", [tenant.pk])
    assert response.status_code == 200
    assert b"component_verify_ticket" in response.content


def test_admin_component_event_page_hides_the_auth_code(admin_client, component, db):
    event = ComponentEvent(component_appid=APPID, info_type="authorized", authorizer_appid="wxabc")
    event.set_auth_code("queryauthcode@@@secret-code")
    event.save()
    response = admin_client.get(f"/admin/openplatform/componentevent/{event.pk}/change/")
    assert response.status_code == 200
    assert b"secret-code" not in response.content
    assert event.auth_code_ciphertext.encode() not in response.content


def test_admin_cannot_add_an_authorizer_by_hand(admin_client, tenant):
    # An empty add form used to store an authorizer with no appid; the second one was a 500.
    assert admin_client.get("/admin/tenants/authorizer/add/").status_code == 403
    assert admin_client.post("/admin/tenants/authorizer/add/", {"tenant": tenant.pk}).status_code == 403
    assert not Authorizer.objects.exists()


def _tenant_form(tenant, **extra) -> dict:
    data = {
        "slug": tenant.slug, "name": tenant.name, "is_active": "on",
        "created_at_0": "2024-01-01", "created_at_1": "00:00:00", "_save": "Save",
    }
    for prefix, initial in (("api_keys", 0), ("authorizers", 0)):
        data.update({f"{prefix}-TOTAL_FORMS": "0", f"{prefix}-INITIAL_FORMS": str(initial),
                     f"{prefix}-MIN_NUM_FORMS": "0", f"{prefix}-MAX_NUM_FORMS": "1000"})
    data.update(extra)
    return data


def test_tenant_page_cannot_add_keys_without_a_key(admin_client, tenant):
    # An inline "add another API key" used to store a row with an empty id, prefix and hash.
    page = admin_client.get(f"/admin/tenants/tenant/{tenant.pk}/change/").content.decode()
    assert 'name="api_keys-__prefix__-name"' not in page
    data = _tenant_form(tenant, **{"api_keys-TOTAL_FORMS": "1", "api_keys-0-name": "via inline",
                                   "api_keys-0-tenant": str(tenant.pk)})
    response = admin_client.post(f"/admin/tenants/tenant/{tenant.pk}/change/", data)
    # the tenant form itself is valid and saved; the added inline row is ignored (no add permission)
    assert response.status_code == 302, response.content[:3000]
    assert response["Location"] == "/admin/tenants/tenant/"
    assert not TenantAPIKey.objects.exists()


def test_tenant_page_revokes_an_existing_key(admin_client, tenant):
    api_key, key = api_key_create(tenant=tenant, name="old")
    data = _tenant_form(tenant, **{
        "api_keys-TOTAL_FORMS": "1", "api_keys-INITIAL_FORMS": "1",
        "api_keys-0-id": api_key.pk, "api_keys-0-tenant": str(tenant.pk), "api_keys-0-name": "old",
        "api_keys-0-revoked": "on",
    })
    response = admin_client.post(f"/admin/tenants/tenant/{tenant.pk}/change/", data)
    assert response.status_code == 302, response.content[:3000]
    assert TenantAPIKey.objects.get(pk=api_key.pk).revoked
    assert key_client(key).get("/api/v1/authorizers/").status_code == 401


def test_api_key_admin_creates_a_key_and_shows_it_once(admin_client, tenant):
    response = admin_client.post("/admin/tenants/tenantapikey/add/", {"name": "ops", "tenant": tenant.pk}, follow=True)
    assert response.status_code == 200
    match = re.search(rb"([A-Za-z0-9]{8}\.[A-Za-z0-9]{32})", response.content)
    assert match, "the new key is shown in the admin's message"
    key = match.group(1).decode()
    assert key_client(key).get("/api/v1/authorizers/").status_code == 200
    # and never again
    listing = admin_client.get("/admin/tenants/tenantapikey/").content
    assert key.encode() not in listing


@pytest.mark.parametrize(
    "method, path, kwargs, status, code",
    [
        # not a page number: 400 since issue 11 (every malformed parameter is a 400); past the end: 404
        ("get", "/api/v1/authorizers/?page=abc", {}, 400, "invalid_page"),
        ("get", "/api/v1/authorizers/?page=999999", {}, 404, "not_found"),
        ("get", "/api/v1/authorizers/?page=-1&format=xml", {}, 404, "not_found"),  # no such format
        ("get", "/api/v1/authorizers/?format=api", {}, 404, "not_found"),  # no browsable API
        ("get", "/api/v1/authorizers/?status=%00&appid=%FF", {}, 200, None),  # matches nothing
        ("post", "/api/v1/authorizers/", {"data": {"appid": "x"}, "format": "json"}, 405, "method_not_allowed"),
        ("delete", "/api/v1/authorizers/", {}, 405, "method_not_allowed"),
        # the link endpoint takes an optional JSON (or form) body: category_id_list
        ("post", "/api/v1/authorization-links/", {"data": b"\xff\xfe{not json", "content_type": "application/json"},
         400, "parse_error"),
        ("post", "/api/v1/authorization-links/", {"data": "<xml/>", "content_type": "text/xml"}, 415,
         "unsupported_media_type"),
        ("post", "/api/v1/authorization-links/", {"data": {"category_id_list": [11, 999]}, "format": "json"}, 400,
         "unknown_permission_set"),
        ("post", "/api/v1/authorization-links/", {"data": {"category_id_list": [11]}, "format": "json"}, 201, None),
        ("put", "/api/v1/authorization-links/", {}, 405, "method_not_allowed"),
    ],
)
def test_odd_api_requests_get_their_exact_answer_never_a_5xx(api_client, ticket, method, path, kwargs, status, code):
    response = getattr(api_client, method)(path, **kwargs)
    assert response.status_code == status, (path, response.status_code, response.content[:300])
    body = response.json()
    if code is not None:
        assert set(body) == {"code", "detail"} and body["code"] == code, body
    elif status == 200:
        assert body == {"count": 0, "next": None, "previous": None, "results": []}
    else:
        assert set(body) == {"url", "mobile_url", "expires_at"}


def test_admin_action_links_for_chosen_permission_sets(admin_client, onboarded, component):
    tenant, _ = onboarded
    # first the operator ticks the sets: the upload sets are ticked already
    form = _action(admin_client, "tenants/tenant", "make_authorization_link_for_sets", [tenant.pk])
    assert form.status_code == 200
    page = form.content.decode()
    assert re.findall(r'name="category_id" value="(\d+)" checked', page) == ["11", "18"]
    assert sim_count(component, "api_create_preauthcode") == 0

    done = admin_client.post(
        "/admin/tenants/tenant/",
        {"action": "make_authorization_link_for_sets", "_selected_action": [tenant.pk], "apply": "1",
         "category_id": ["11"]},
        follow=True,
    )

    assert done.status_code == 200
    links = re.findall(r'href="([^"]+)"', done.content.decode())
    pc = [unescape(u) for u in links if "componentloginpage" in u]
    mobile = [unescape(u) for u in links if "wxaopen/safe/bindcomponent" in u]
    assert len(pc) == len(mobile) == 1
    for url in pc + mobile:
        assert parse_qs(urlsplit(url).query)["category_id_list"] == ["11"]
    assert sim_count(component, "api_create_preauthcode") == 1


def test_admin_action_token_leaked_says_what_it_can_and_cannot_do(admin_client, onboarded, component):
    _, authorizer = onboarded
    before = Authorizer.objects.get(pk=authorizer.pk).token_generation
    response = _action(admin_client, "tenants/authorizer", "replace_leaked_token", [authorizer.pk])
    assert response.status_code == 200
    assert b"cannot cut the previous token off" in response.content  # component mode: it lapses on its own
    assert Authorizer.objects.get(pk=authorizer.pk).token_generation == before + 1


@pytest.mark.redis
def test_a_request_counts_its_key_and_its_tenant_in_one_round_trip(tenant, settings, monkeypatch):
    import os
    import uuid

    import redis

    from tenants.auth import APIKeyRateThrottle, TenantRateThrottle

    settings.CACHES = {"default": {"BACKEND": "openplatform.core.cache.RedisCache",
                                   "LOCATION": os.environ["TEST_REDIS_URL"], "KEY_PREFIX": uuid.uuid4().hex}}
    monkeypatch.setattr(APIKeyRateThrottle, "THROTTLE_RATES", {"api_key": "2/min"})
    monkeypatch.setattr(TenantRateThrottle, "THROTTLE_RATES", {"tenant": "3/min"})
    executed = []
    real_execute = redis.Redis.execute_command

    def execute(client, *args, **kwargs):
        if args[0] != "GET":  # the failed-key counter is a plain read before the throttles
            executed.append(args[0])
        return real_execute(client, *args, **kwargs)

    monkeypatch.setattr(redis.Redis, "execute_command", execute)
    busy, other = (key_client(api_key_create(tenant=tenant)[1]) for _ in range(2))
    redis.Redis.from_url(os.environ["TEST_REDIS_URL"]).script_flush()  # the script is loaded again, once
    executed.clear()

    # each request: one script call (EVALSHA) counting both counters; a server that does not know the
    # script yet is sent it once (SCRIPT LOAD)
    statuses = [busy.get(AUTHORIZERS_URL).status_code for _ in range(3)]
    assert executed == ["EVALSHA", "SCRIPT LOAD", "EVALSHA", "EVALSHA", "EVALSHA"]
    # the key's own limit (2), then the tenant's (3 in all): each counted once per request, as before
    assert statuses == [200, 200, 429]
    assert other.get(AUTHORIZERS_URL).status_code == 429
