"""Onboarding (issue #3): authorization links (command and API), the redirect back from WeChat, and the
whole flow through the simulator's authorization page.
"""

from __future__ import annotations

import io
import re
import time
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from django.conf import settings as django_settings
from django.core import signing
from django.core.management import CommandError, call_command
from django.utils.dateparse import parse_datetime

from openplatform.component.models import ComponentEvent
from tenants.models import AuthCodeExchange, Authorizer
from tenants.services.authorization import _STATE_SALT, authorization_state_make
from tenants.tasks import process_component_event
from tests.fixtures import AUTHORIZED_REDIRECT_PATH, sim_count

APPID = django_settings.WECHAT_COMPONENT_APPID


def run_command(*args) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


def redirect_state(url: str) -> str:
    redirect_uri = parse_qs(urlsplit(url).query)["redirect_uri"][0]
    return parse_qs(urlsplit(redirect_uri).query)["state"][0]


class _OldSigner(signing.TimestampSigner):
    """Signs as if two hours ago (the state lives one hour)."""

    def timestamp(self):
        return signing.b62_encode(int(time.time()) - 7200)


# -- links -----------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_authorization_link_command_prints_the_pc_url_last(ticket, tenant, settings):
    settings.PUBLIC_BASE_URL = "https://op.example.com"
    out, err = run_command("authorization_link", tenant.slug)

    url = last_line(out)
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    assert parts.path == "/cgi-bin/componentloginpage"
    assert query["component_appid"] == [APPID]
    assert query["pre_auth_code"][0].startswith("preauthcode@@@")
    assert query["auth_type"] == ["3"]
    redirect_uri = query["redirect_uri"][0]
    assert redirect_uri.startswith("https://op.example.com/wechat/component/authorized/?state=")
    assert "valid until" in err


@pytest.mark.django_db
def test_authorization_link_command_mobile(ticket, tenant):
    out, _ = run_command("authorization_link", tenant.slug, "--mobile")
    url = last_line(out)
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    assert parts.path == "/wxaopen/safe/bindcomponent"  # WeChat's current mobile page
    assert parts.fragment == "wechat_redirect"
    assert query["action"] == ["bindcomponent"] and query["no_scan"] == ["1"]
    assert query["pre_auth_code"][0].startswith("preauthcode@@@")


@pytest.mark.django_db
def test_authorization_link_command_refuses_unknown_or_disabled_tenants(ticket, make_tenant):
    make_tenant("sleepy", is_active=False)
    for slug in ("nobody", "sleepy"):
        with pytest.raises(CommandError):
            run_command("authorization_link", slug)


@pytest.mark.django_db
def test_authorization_link_command_without_ticket_says_why(component, tenant):
    with pytest.raises(CommandError) as caught:
        run_command("authorization_link", tenant.slug)
    assert "component_verify_ticket" in str(caught.value)


@pytest.mark.django_db
def test_merchant_api_creates_an_authorization_link(ticket, api_client, tenant):
    response = api_client.post("/api/v1/authorization-links/")

    assert response.status_code == 201, response.content
    body = response.json()
    assert set(body) == {"url", "mobile_url", "expires_at"}
    assert urlsplit(body["url"]).path == "/cgi-bin/componentloginpage"
    assert urlsplit(body["mobile_url"]).path == "/wxaopen/safe/bindcomponent"
    expires_at = parse_datetime(body["expires_at"])
    assert 500 < (expires_at.timestamp() - time.time()) <= 600  # the simulator's pre_auth_code lives 600 s
    # and the state names this tenant
    state = redirect_state(body["url"])
    assert signing.loads(state, salt=_STATE_SALT)["tenant"] == tenant.pk


@pytest.mark.django_db
def test_merchant_api_link_without_ticket_is_a_clear_503(component, api_client):
    response = api_client.post("/api/v1/authorization-links/")
    assert response.status_code == 503
    body = response.json()
    assert body["code"] == "wechat_unavailable"
    assert "component_verify_ticket" in body["detail"]


# -- the redirect back -----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_redirect_binds_the_authorizer_to_the_tenant(ticket, component, tenant, client):
    grant = component.authorize(APPID, nick_name="Acme Tea", func_info=[11])
    state = authorization_state_make(tenant=tenant)

    response = client.get(AUTHORIZED_REDIRECT_PATH, {"state": state, "auth_code": grant["auth_code"], "expires_in": 600})

    assert response.status_code == 200
    assert b"Authorization complete" in response.content
    assert b"Acme Tea" in response.content
    authorizer = Authorizer.objects.get(appid=grant["authorizer_appid"])
    assert authorizer.tenant == tenant
    assert authorizer.func_info == [11]
    assert authorizer.nick_name == "Acme Tea"
    assert authorizer.can_upload_images
    assert grant["auth_code"].encode() not in response.content


@pytest.mark.django_db
def test_redirect_twice_with_the_same_code_exchanges_once(ticket, component, tenant, client):
    grant = component.authorize(APPID)
    params = {"state": authorization_state_make(tenant=tenant), "auth_code": grant["auth_code"]}
    assert client.get(AUTHORIZED_REDIRECT_PATH, params).status_code == 200
    assert client.get(AUTHORIZED_REDIRECT_PATH, params).status_code == 200  # a browser reload
    assert sim_count(component, "api_query_auth") == 1
    assert AuthCodeExchange.objects.count() == 1


@pytest.mark.django_db
def test_account_bound_to_another_tenant_is_not_moved(ticket, component, make_tenant, make_authorizer, client):
    alpha, beta = make_tenant("alpha"), make_tenant("beta")
    authorizer = make_authorizer(alpha)
    grant = component.authorize(APPID, authorizer_appid=authorizer.appid)

    response = client.get(
        AUTHORIZED_REDIRECT_PATH, {"state": authorization_state_make(tenant=beta), "auth_code": grant["auth_code"]}
    )

    assert response.status_code == 409
    assert b"already connected to another merchant" in response.content
    authorizer.refresh_from_db()
    assert authorizer.tenant == alpha
    # WeChat's new tokens are stored all the same: the old refresh token died with the re-authorization
    assert authorizer.get_refresh_token() == component.authorizer(authorizer.appid)["refresh_token"]


@pytest.mark.django_db
@pytest.mark.parametrize("kind", ["forged", "expired", "garbage", "missing", "other_salt", "disabled_tenant"])
def test_bad_state_binds_nothing(ticket, component, make_tenant, client, kind):
    tenant = make_tenant("acme")
    grant = component.authorize(APPID)
    state = {
        "forged": authorization_state_make(tenant=tenant)[:-3] + "abc",
        "expired": _OldSigner(salt=_STATE_SALT).sign_object({"tenant": tenant.pk}, compress=True),
        "garbage": "%00<script>alert(1)</script>",
        "missing": "",
        "other_salt": signing.dumps({"tenant": tenant.pk}, salt="someone-else"),
        "disabled_tenant": authorization_state_make(tenant=make_tenant("gone", is_active=False)),
    }[kind]

    response = client.get(AUTHORIZED_REDIRECT_PATH, {"state": state, "auth_code": grant["auth_code"]})

    assert response.status_code == 400
    assert b"Authorization failed" in response.content
    assert b"<script>" not in response.content
    assert not Authorizer.objects.exists()
    assert sim_count(component, "api_query_auth") == 0


@pytest.mark.django_db
def test_redirect_without_auth_code_is_400(ticket, tenant, client):
    response = client.get(AUTHORIZED_REDIRECT_PATH, {"state": authorization_state_make(tenant=tenant)})
    assert response.status_code == 400
    assert not Authorizer.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("code", ["queryauthcode@@@made-up", "x" * 3000, "%00", "\x00", "\u4f60\u597d"])
def test_unknown_or_used_auth_code_is_a_client_error_not_a_5xx(ticket, component, tenant, client, code):
    response = client.get(AUTHORIZED_REDIRECT_PATH, {"state": authorization_state_make(tenant=tenant), "auth_code": code})
    assert response.status_code == 400
    assert b"Authorization failed" in response.content
    assert not Authorizer.objects.exists()


@pytest.mark.django_db
def test_wechat_down_during_the_redirect_is_reported_and_can_be_retried(ticket, component, tenant, client):
    grant = component.authorize(APPID)
    params = {"state": authorization_state_make(tenant=tenant), "auth_code": grant["auth_code"]}
    component.inject_fault("/cgi-bin/component/api_query_auth", "http_status", count=3, status=502)

    response = client.get(AUTHORIZED_REDIRECT_PATH, params)

    assert response.status_code == 502
    assert b"try again" in response.content
    assert not Authorizer.objects.exists()
    # the merchant reloads the page once WeChat answers again
    component.clear_faults()
    assert client.get(AUTHORIZED_REDIRECT_PATH, params).status_code == 200
    assert Authorizer.objects.get().tenant == tenant


@pytest.mark.django_db
def test_redirect_only_answers_get(client, db):
    assert client.post(AUTHORIZED_REDIRECT_PATH).status_code == 405


# -- the whole flow through the simulator's authorization page --------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_merchant_authorizes_on_the_simulated_wechat_page(live_component, tenant, make_api_client):
    # given a merchant asks us for a link through the API
    api = make_api_client(tenant)
    link = api.post("/api/v1/authorization-links/").json()
    session = requests.Session()

    # when its account administrator opens it, "scans", and confirms the permission sets
    page = session.get(link["url"], timeout=10)
    assert page.status_code == 200 and "<form" in page.text
    appid = re.search(r"name='appid' value='([^']+)'", page.text).group(1)
    confirmed = session.post(
        link["url"],
        data={"appid": appid, "nick_name": "Acme Roasters", "account_type": "official_account", "func": ["1", "11"]},
        allow_redirects=False,
        timeout=10,
    )
    assert confirmed.status_code == 302
    back = confirmed.headers["Location"]
    assert back.startswith(live_component.live_server_url + AUTHORIZED_REDIRECT_PATH)
    # WeChat pushes `authorized` meanwhile; let it land first (SQLite's in-memory test database
    # cannot take two writers at once; the race itself is tested in test_events.py on PostgreSQL)
    push = _wait_for(lambda: next((e for e in live_component.events() if e["info_type"] == "authorized"), None))
    assert push["status_code"] == 200 and push["response_text"] == "success"
    landing = session.get(back, timeout=10)  # WeChat sends the browser back to us

    # then the account is connected to this merchant
    assert landing.status_code == 200, landing.text
    assert "Authorization complete" in landing.text
    authorizer = Authorizer.objects.get(appid=appid)
    assert authorizer.tenant == tenant
    assert authorizer.func_info == [1, 11]
    assert authorizer.nick_name == "Acme Roasters"

    # and the `authorized` event pushed meanwhile is stored; processing it exchanges nothing more
    event = _wait_for_event("authorized")
    process_component_event(event.pk)
    assert sim_count(live_component, "api_query_auth") == 1
    event.refresh_from_db()
    assert event.processed_at is not None and event.error == ""
    listed = api.get("/api/v1/authorizers/").json()["results"]
    assert [a["appid"] for a in listed] == [appid]
    assert listed[0]["can_upload_images"] is True

    # and the link is single use
    again = session.get(link["url"], timeout=10)
    assert again.status_code == 400 and "already been used" in again.text


def _wait_for(probe, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"nothing within {timeout}s")


def _wait_for_event(info_type: str) -> ComponentEvent:
    return _wait_for(lambda: ComponentEvent.objects.filter(info_type=info_type).first())


@pytest.mark.django_db
def test_reloading_the_redirect_after_the_account_was_deleted_is_a_400(ticket, component, tenant, client):
    grant = component.authorize(APPID)
    params = {"state": authorization_state_make(tenant=tenant), "auth_code": grant["auth_code"]}
    assert client.get(AUTHORIZED_REDIRECT_PATH, params).status_code == 200
    Authorizer.objects.all().delete()  # an operator removed it
    response = client.get(AUTHORIZED_REDIRECT_PATH, params)
    assert response.status_code == 400
    assert b"start the authorization again" in response.content


@pytest.mark.django_db
@pytest.mark.parametrize(
    "fault", [{"kind": "http_status", "status": 500}, {"kind": "not_json"}, {"kind": "errcode", "errcode": 45009}]
)
def test_merchant_api_link_when_wechat_fails_is_a_clear_503(ticket, component, api_client, fault):
    component.inject_fault("/cgi-bin/component/api_create_preauthcode", count=5, **fault)
    response = api_client.post("/api/v1/authorization-links/")
    assert response.status_code == 503
    assert response.json()["code"] == "wechat_unavailable"
    assert "api_create_preauthcode" in response.json()["detail"]


@pytest.mark.django_db
def test_authorization_link_api_only_answers_post(api_client):
    assert api_client.get("/api/v1/authorization-links/").status_code == 405


@pytest.mark.django_db
def test_an_expired_code_says_the_link_expired_and_costs_one_call(ticket, component, tenant, client):
    grant = component.authorize(APPID)
    component.advance_clock(3601)  # the merchant came back after the code's hour
    params = {"state": authorization_state_make(tenant=tenant), "auth_code": grant["auth_code"]}

    first = client.get(AUTHORIZED_REDIRECT_PATH, params)
    reload = client.get(AUTHORIZED_REDIRECT_PATH, params)

    assert first.status_code == reload.status_code == 400  # the merchant's link, not WeChat's outage
    for page in (first, reload):
        assert b"This authorization link has expired: ask for a new one" in page.content
    assert sim_count(component, "api_query_auth") == 1
    assert AuthCodeExchange.objects.get().dead_errcode == 61010
    assert not Authorizer.objects.exists()


# -- links asking for chosen permission sets (category_id_list) ------------------------------------------


def _query_of(url: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(url).query)


@pytest.mark.django_db
def test_api_links_ask_for_chosen_sets_on_both_pages(ticket, api_client, settings):
    response = api_client.post("/api/v1/authorization-links/", {"category_id_list": [11, 18, 11]}, format="json")

    assert response.status_code == 201, response.content
    body = response.json()
    pc, mobile = urlsplit(body["url"]), urlsplit(body["mobile_url"])
    assert f"{pc.scheme}://{pc.netloc}" == settings.WECHAT_MP_BASE.rstrip("/")
    assert f"{mobile.scheme}://{mobile.netloc}" == settings.WECHAT_OPEN_BASE.rstrip("/")
    assert (pc.path, mobile.path) == ("/cgi-bin/componentloginpage", "/wxaopen/safe/bindcomponent")
    assert _query_of(body["url"])["category_id_list"] == ["11|18"]
    assert _query_of(body["mobile_url"])["category_id_list"] == ["11|18"]
    assert _query_of(body["url"])["pre_auth_code"] == _query_of(body["mobile_url"])["pre_auth_code"]


@pytest.mark.django_db
def test_links_without_sets_ask_for_everything(ticket, api_client):
    body = api_client.post("/api/v1/authorization-links/").json()
    assert "category_id_list" not in _query_of(body["url"])
    assert "category_id_list" not in _query_of(body["mobile_url"])


@pytest.mark.django_db
@pytest.mark.parametrize("payload", [{"category_id_list": "11"}, {"category_id_list": [0]}, {"category_id_list": [True]}])
def test_api_refuses_malformed_set_lists_without_calling_wechat(ticket, api_client, component, payload):
    response = api_client.post("/api/v1/authorization-links/", payload, format="json")
    assert response.status_code == 400 and response.json()["code"] == "invalid"
    assert sim_count(component, "api_create_preauthcode") == 0


@pytest.mark.django_db
def test_api_refuses_unknown_sets_without_calling_wechat(ticket, api_client, component):
    response = api_client.post("/api/v1/authorization-links/", {"category_id_list": [11, 4242]}, format="json")
    assert response.status_code == 400 and response.json()["code"] == "unknown_permission_set"
    assert "4242" in response.json()["detail"]
    assert sim_count(component, "api_create_preauthcode") == 0


@pytest.mark.django_db
def test_authorization_link_command_asks_for_sets(ticket, tenant):
    for flag in ("11", "11|18", "11,18"):
        out, _ = run_command("authorization_link", tenant.slug, "--mobile", "--category-id-list", flag)
        expected = "11" if flag == "11" else "11|18"
        assert _query_of(last_line(out))["category_id_list"] == [expected]
    with pytest.raises(CommandError, match="permission-set ids"):
        run_command("authorization_link", tenant.slug, "--category-id-list", "eleven")
    with pytest.raises(CommandError, match="unknown permission-set ids"):
        run_command("authorization_link", tenant.slug, "--category-id-list", "4242")


@pytest.mark.django_db
def test_a_merchant_following_a_mobile_link_for_set_11_grants_only_set_11(ticket, api_client, client, tenant):
    body = api_client.post("/api/v1/authorization-links/", {"category_id_list": [11]}, format="json").json()

    page = requests.get(body["mobile_url"], timeout=10)
    assert page.status_code == 200
    assert re.findall(r"name='func' value='(\d+)'", page.text) == ["11"]  # the only set offered
    # the administrator confirms (a set the link did not ask for cannot be ticked on the real page)
    confirm = requests.post(body["mobile_url"], data={"appid": "wxmobile00000001", "func": ["11", "1"]},
                            allow_redirects=False, timeout=10)
    assert confirm.status_code == 302
    back = urlsplit(confirm.headers["Location"])
    landing = client.get(back.path, parse_qs(back.query))

    assert landing.status_code == 200, landing.content[:500]
    authorizer = Authorizer.objects.get(appid="wxmobile00000001")
    assert authorizer.tenant == tenant and authorizer.func_info == [11] and authorizer.can_upload_images
