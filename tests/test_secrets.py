"""Secrets at rest and in every output (issue #3): MultiFernet encryption, key rotation, and a full
onboarding after which no raw token appears in the database, the logs, the admin or the API.
"""

from __future__ import annotations

import io
import logging
import re
import time
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from cryptography.fernet import Fernet, MultiFernet
from django.apps import apps
from django.conf import settings as django_settings
from django.core.management import call_command
from django.db import connection

from openplatform.component.models import ComponentAccessToken, ComponentEvent, ComponentVerifyTicket
from openplatform.component.tickets import component_ticket_latest
from openplatform.core.secrets import SecretDecryptionError, _multifernet, decrypt_secret, encrypt_secret
from tenants.models import Authorizer, TenantAPIKey
from tenants.services.tokens import authorizer_access_token_get
from tenants.tasks import process_component_event
from tests.fixtures import expire_access_token

APPID = django_settings.WECHAT_COMPONENT_APPID


# -- encryption at rest ----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_tokens_are_stored_as_multifernet_ciphertext_under_the_first_key(authorizer, component, settings):
    sim = component.authorizer(authorizer.appid)
    first = Fernet(settings.FIELD_ENCRYPTION_KEYS[0].encode())
    row = Authorizer.objects.values("access_token_ciphertext", "refresh_token_ciphertext").get(pk=authorizer.pk)

    assert sim["access_token"] not in row["access_token_ciphertext"]
    assert sim["refresh_token"] not in row["refresh_token_ciphertext"]
    assert first.decrypt(row["access_token_ciphertext"].encode()).decode() == sim["access_token"]
    assert first.decrypt(row["refresh_token_ciphertext"].encode()).decode() == sim["refresh_token"]
    # the same value encrypts differently each time (Fernet's random IV), so equal tokens do not show
    again = Authorizer.objects.get(pk=authorizer.pk)
    again.set_access_token(sim["access_token"])
    assert again.access_token_ciphertext != row["access_token_ciphertext"]


@pytest.mark.django_db
def test_any_configured_key_decrypts(authorizer, settings):
    second = Fernet(settings.FIELD_ENCRYPTION_KEYS[1].encode())
    token = authorizer.get_access_token()
    Authorizer.objects.filter(pk=authorizer.pk).update(access_token_ciphertext=second.encrypt(token.encode()).decode())
    assert Authorizer.objects.get(pk=authorizer.pk).get_access_token() == token


def _all_secrets() -> dict[tuple[str, int, str], str]:
    """Every encrypted field of every row, decrypted: {(model, pk, field): plaintext}."""
    from openplatform.core.secrets import EncryptedSecretsMixin

    found = {}
    for model in apps.get_models():
        if not issubclass(model, EncryptedSecretsMixin):
            continue
        for row in model.objects.all():
            for field in model.ENCRYPTED_FIELDS:
                if getattr(row, field):
                    found[(model._meta.label, row.pk, field)] = row._get_secret(field)
    return found


@pytest.mark.django_db
def test_rotate_encryption_keys_reencrypts_every_secret_under_the_new_key(make_authorizer, make_direct_authorizer,
                                                                          tenant, component, settings):
    # given secrets of every kind: tickets, component token, authorizer tokens, an app secret, a pending code
    make_authorizer(tenant)
    make_direct_authorizer(tenant)
    event = ComponentEvent(component_appid=APPID, info_type="authorized", authorizer_appid="wxpending")
    event.set_auth_code("queryauthcode@@@pending")
    event.save()
    # one of them still under the old *second* key, as after an earlier rotation
    old_keys = list(settings.FIELD_ENCRYPTION_KEYS)
    row = Authorizer.objects.filter(mode=Authorizer.Mode.DIRECT).get()
    Authorizer.objects.filter(pk=row.pk).update(
        app_secret_ciphertext=Fernet(old_keys[1].encode()).encrypt(b"direct-app-secret").decode()
    )
    before = _all_secrets()
    # a ticket, the component token, the authorizer's access and refresh tokens, the app secret, the code
    assert len(before) == 6, sorted(before)
    ciphertexts_before = {key: _ciphertext(key) for key in before}

    # when a new key is prepended and the command runs
    new_key = Fernet.generate_key().decode()
    settings.FIELD_ENCRYPTION_KEYS = [new_key, *old_keys]
    out = io.StringIO()
    call_command("rotate_encryption_keys", stdout=out, stderr=io.StringIO())
    assert int(out.getvalue().strip().splitlines()[-1]) == len({(label, pk) for label, pk, _ in before})  # rows

    # then, with the old keys dropped, everything still decrypts to the same values
    settings.FIELD_ENCRYPTION_KEYS = [new_key]
    assert _all_secrets() == before
    only_new = MultiFernet([Fernet(new_key.encode())])
    for key in before:
        ciphertext = _ciphertext(key)
        assert ciphertext != ciphertexts_before[key]
        only_new.decrypt(ciphertext.encode())
    # and the token service keeps working with the new key alone
    authorizer = Authorizer.objects.filter(mode=Authorizer.Mode.COMPONENT).get()
    expire_access_token(authorizer)
    assert authorizer_access_token_get(authorizer=authorizer).token == component.authorizer(authorizer.appid)["access_token"]


def _ciphertext(key: tuple[str, int, str]) -> str:
    label, pk, field = key
    return getattr(apps.get_model(label).objects.get(pk=pk), field)


@pytest.mark.django_db
def test_dropping_a_key_without_rotating_is_a_clear_error(authorizer, settings):
    settings.FIELD_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    with pytest.raises(SecretDecryptionError):
        Authorizer.objects.get(pk=authorizer.pk).get_access_token()


def test_keys_are_not_derived_from_secret_key(settings):
    # given a secret encrypted under the configured keys
    ciphertext = encrypt_secret("raw-token-value")
    # when SECRET_KEY changes (rotated, or another deployment's)
    settings.SECRET_KEY = "a-completely-different-secret-key"
    _multifernet.cache_clear()
    # then the secret still decrypts, and the first configured key alone opens it (plain Fernet, nothing
    # mixed in from SECRET_KEY); what is encrypted now is under that same key
    assert decrypt_secret(ciphertext) == "raw-token-value"
    first = Fernet(settings.FIELD_ENCRYPTION_KEYS[0].encode())
    assert first.decrypt(ciphertext.encode()) == b"raw-token-value"
    assert first.decrypt(encrypt_secret("another").encode()) == b"another"


# -- nothing leaks after a full onboarding ---------------------------------------------------------------


def _database_text() -> str:
    """Every row of every table, as text (bytes decoded as latin-1 so nothing is skipped)."""
    chunks = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names(cursor):
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")  # noqa: S608 - our own table names
            for row in cursor.fetchall():
                for value in row:
                    if isinstance(value, bytes | memoryview):
                        chunks.append(bytes(value).decode("latin-1"))
                    elif value is not None:
                        chunks.append(str(value))
    return "\n".join(chunks)


def _console_handler() -> logging.Handler:
    for handler in logging.getLogger().handlers:
        if any(type(f).__name__ == "RedactSecretsFilter" for f in handler.filters):
            return handler
    raise AssertionError("the redacting console handler is not installed")


@pytest.mark.django_db(transaction=True)
def test_no_raw_secret_appears_anywhere_after_a_full_onboarding(
    live_component, admin_client, capsys, caplog, settings
):
    console = _console_handler()
    emitted = io.StringIO()
    previous_stream = console.setStream(emitted)
    caplog.set_level(logging.INFO)
    # DEBUG for our own code and the HTTP stack (urllib3 logs URLs with tokens in their query string)
    for name in ("openplatform", "tenants", "uploads", "urllib3", "django.request", "celery"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    live_component.configure(rotate_refresh_tokens=True)
    try:
        responses = _onboard_and_use(live_component, admin_client)
    finally:
        console.setStream(previous_stream)
        for name in ("openplatform", "tenants", "uploads", "urllib3", "django.request", "celery"):
            logging.getLogger(name).setLevel(logging.NOTSET)

    secrets = _raw_secrets(live_component, responses["appid"], responses["api_key"])
    assert len(secrets) >= 8
    database = _database_text()
    captured = capsys.readouterr()
    # The simulator is the fake WeChat, not our code: its own debug lines are left out.
    our_records = "\n".join(
        r.getMessage() + " " + " ".join(f"{k}={v}" for k, v in vars(r).items() if k not in ("msg", "args"))
        for r in caplog.records
        if not r.name.startswith("openplatform.wechat.simulator")
    )
    outputs = {
        "database": database,
        "log records": our_records,
        "console log output": emitted.getvalue(),
        "stdout/stderr": captured.out + captured.err,
        "admin pages": responses["admin"],
        "API responses": responses["api"],
        "authorized page": responses["landing"],
    }
    assert emitted.getvalue(), "the console handler emitted nothing: the check would be vacuous"
    assert "component_access_token=[redacted]" in emitted.getvalue()  # urllib3's URL line, redacted
    for where, text in outputs.items():
        for name, value in secrets.items():
            assert value not in text, f"{name} found in {where}"


def _onboard_and_use(sim, admin_client) -> dict[str, str]:
    """Ticket push, tenant and key by command, link by API, the simulated page, the redirect, the
    event, a token refresh with a rotated refresh token, a 61023 recovery, then every page and answer."""
    assert sim.push_ticket(APPID)["response_text"] == "success"
    out = io.StringIO()
    call_command("create_tenant", "acme", stdout=out, stderr=io.StringIO())
    out = io.StringIO()
    call_command("create_api_key", "acme", stdout=out, stderr=io.StringIO())
    api_key = out.getvalue().strip().splitlines()[-1]
    api = requests.Session()
    api.headers["Authorization"] = f"Api-Key {api_key}"
    base = sim.live_server_url
    link = api.post(base + "/api/v1/authorization-links/", timeout=10)
    assert link.status_code == 201
    url = link.json()["url"]
    browser = requests.Session()
    page = browser.get(url, timeout=10)
    appid = re.search(r"name='appid' value='([^']+)'", page.text).group(1)
    confirmed = browser.post(url, data={"appid": appid, "func": ["1", "11"]}, allow_redirects=False, timeout=10)
    _wait(lambda: any(e["info_type"] == "authorized" for e in sim.events()))  # the push lands first
    landing = browser.get(confirmed.headers["Location"], timeout=10)
    assert landing.status_code == 200, landing.text
    event = _wait(lambda: ComponentEvent.objects.filter(info_type="authorized").first())
    process_component_event(event.pk)

    authorizer = Authorizer.objects.get(appid=appid)
    expire_access_token(authorizer)
    authorizer_access_token_get(authorizer=authorizer)  # refresh; the refresh token rotates too
    sim.invalidate_refresh_token(appid)
    expire_access_token(authorizer)
    authorizer_access_token_get(authorizer=authorizer)  # 61023, recovered once
    sim.push_ticket(APPID)

    api_text = "\n".join(
        api.get(base + path, timeout=10).text
        for path in ("/api/v1/authorizers/", "/api/v1/uploads/", "/api/schema/", "/readyz", "/healthz")
    )
    api_text += api.post(base + "/api/v1/authorization-links/", timeout=10).text
    token_row = ComponentAccessToken.objects.get()
    ticket_row = component_ticket_latest(component_appid=APPID)
    key_row = TenantAPIKey.objects.get()
    tenant = authorizer.tenant
    # Each page with what shows it rendered the object: a list links to the row, a change page names it.
    admin_pages_expected = {
        "/admin/tenants/tenant/": [f"/admin/tenants/tenant/{tenant.pk}/change/", tenant.slug],
        f"/admin/tenants/tenant/{tenant.pk}/change/": [tenant.slug, authorizer.appid, key_row.prefix],
        "/admin/tenants/authorizer/": [f"/admin/tenants/authorizer/{authorizer.pk}/change/", appid],
        f"/admin/tenants/authorizer/{authorizer.pk}/change/": [appid, "Refresh token stored:</label>"],
        "/admin/tenants/tenantapikey/": [key_row.prefix, tenant.slug],
        "/admin/openplatform/componentaccesstoken/": [f"/admin/openplatform/componentaccesstoken/{token_row.pk}/change/"],
        f"/admin/openplatform/componentaccesstoken/{token_row.pk}/change/": [str(token_row), APPID],
        "/admin/openplatform/componentverifyticket/": [f"/admin/openplatform/componentverifyticket/{ticket_row.pk}/change/"],
        f"/admin/openplatform/componentverifyticket/{ticket_row.pk}/change/": [str(ticket_row), APPID],
        "/admin/openplatform/componentevent/": [f"/admin/openplatform/componentevent/{event.pk}/change/", appid],
        f"/admin/openplatform/componentevent/{event.pk}/change/": [str(event), appid],
    }
    admin_pages = []
    for path, needles in admin_pages_expected.items():
        response = admin_client.get(path)
        assert response.status_code == 200, path
        page = response.content.decode()
        for needle in needles:
            assert needle in page, (path, needle)
        admin_pages.append(page)
    # The code-exchange table has no admin page (it holds only hashes); if one is added, check it above.
    assert admin_client.get("/admin/tenants/authcodeexchange/").status_code == 404
    action = admin_client.post(
        "/admin/tenants/authorizer/",
        {"action": "refresh_token_now", "_selected_action": [str(authorizer.pk)]},
        follow=True,
    )
    assert action.status_code == 200
    refreshed = Authorizer.objects.get(pk=authorizer.pk)
    assert f"token generation {refreshed.token_generation}" in action.content.decode()  # the action ran
    admin_pages.append(action.content.decode())
    return {
        "appid": appid,
        "api_key": api_key,
        "api": api_text,
        "admin": "\n".join(admin_pages),
        "landing": landing.text,
    }


def _raw_secrets(sim, appid: str, api_key: str) -> dict[str, str]:
    state = sim.state()
    secrets = {"api key": api_key, "component appsecret": django_settings.WECHAT_COMPONENT_APPSECRET}
    for i, token in enumerate(state["tokens"]):
        secrets[f"{token['kind']} access token #{i}"] = token["value"]
    component = state["components"][APPID]
    for i, ticket in enumerate(component["tickets"]):
        secrets[f"ticket #{i}"] = ticket
    authorizer = component["authorizers"][appid]
    secrets["refresh token"] = authorizer["refresh_token"]
    for i, old in enumerate(authorizer["old_refresh_tokens"]):
        secrets[f"old refresh token #{i}"] = old
    for i, code in enumerate(component["auth_codes"]):
        secrets[f"auth code #{i}"] = code
    for i, code in enumerate(component["pre_auth_codes"]):
        secrets[f"pre_auth_code #{i}"] = code
    # every refresh token WeChat ever handed out for this account (as seen in its call records)
    for call in sim.calls("/cgi-bin/component/api_authorizer_token"):
        secrets[f"refresh token sent at {call['time']}"] = call["json"]["authorizer_refresh_token"]
    assert sim.authorizer(appid)["access_token"] in secrets.values()
    return secrets


def _wait(probe, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError("nothing within the timeout")


@pytest.mark.django_db
def test_str_and_repr_never_show_a_secret(authorizer, component):
    sim = component.authorizer(authorizer.appid)
    ticket = ComponentVerifyTicket.objects.first()
    token = ComponentAccessToken.objects.first()
    texts = [str(authorizer), repr(authorizer), str(ticket), repr(ticket), str(token), repr(token)]
    for text in texts:
        for secret in (sim["access_token"], sim["refresh_token"], ticket.get_ticket(), token.get_access_token()):
            assert secret not in text
    assert str(authorizer) == authorizer.appid


def test_redaction_filter_covers_query_strings_json_and_headers():
    from openplatform.logging import redact

    line = redact(
        'GET /x?access_token=AAA&component_access_token=BBB&ok=1 {"authorizer_refresh_token": "CCC", '
        '"ComponentVerifyTicket": "DDD"} Authorization: Api-Key abcd1234.EEEE'
    )
    for secret in ("AAA", "BBB", "CCC", "DDD", "EEEE"):
        assert secret not in line
    assert "ok=1" in line
    assert parse_qs(urlsplit("/x?" + line.split("?", 1)[1].split(" ", 1)[0]).query)["ok"] == ["1"]
