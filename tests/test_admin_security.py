"""The admin console against password guessing and stolen passwords (issue #11, point 9): lockout per
username and address (django-axes), TOTP two-factor sign-in (django-otp), a configurable admin path and
an optional network allow-list."""

from __future__ import annotations

import importlib
import io

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client
from django.urls import clear_url_caches
from django_otp.oath import totp
from django_otp.plugins.otp_totp.models import TOTPDevice

from openplatform.ops.admin_site import admin_address_allowed

PASSWORD = "correct horse battery staple"


@pytest.fixture
def operator(db):
    return get_user_model().objects.create_superuser("operator", "op@example.com", PASSWORD)


def login(client: Client, password: str, *, address: str = "127.0.0.1", **extra):
    return client.post(
        "/admin/login/?next=/admin/", {"username": "operator", "password": password, **extra},
        REMOTE_ADDR=address,
    )


def signed_in(client: Client, *, address: str = "127.0.0.1") -> bool:
    return client.get("/admin/", REMOTE_ADDR=address).status_code == 200


# -- lockout ---------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_right_password_is_refused_after_five_wrong_ones_from_that_address(operator, settings):
    settings.ADMIN_REQUIRE_2FA = False
    client = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert login(client, "wrong").status_code == 200  # the form again, with its error
    assert login(client, "wrong").status_code == 429  # the fifth failure locks the pair out
    locked = login(client, PASSWORD)
    assert locked.status_code == 429
    assert not signed_in(client)


@pytest.mark.django_db
def test_the_lockout_is_per_username_and_address(operator, settings):
    settings.ADMIN_REQUIRE_2FA = False
    attacker = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT + 2):
        login(attacker, "wrong", address="127.0.0.9")
    colleague = Client()
    assert login(colleague, PASSWORD, address="127.0.0.1").status_code == 302
    assert signed_in(colleague)


@pytest.mark.django_db
def test_a_success_resets_the_count(operator, settings):
    settings.ADMIN_REQUIRE_2FA = False
    client = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        login(client, "wrong")
    assert login(client, PASSWORD).status_code == 302
    client.logout()
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        login(client, "wrong")
    assert login(client, PASSWORD).status_code == 302


# -- two-factor ------------------------------------------------------------------------------------------


def enroll(username: str = "operator") -> TOTPDevice:
    out = io.StringIO()
    call_command("admin_2fa_enroll", username, stdout=out)
    url = out.getvalue().strip().splitlines()[-1]
    assert url.startswith("otpauth://totp/")
    return TOTPDevice.objects.get(user__username=username)


def current_code(device: TOTPDevice) -> str:
    return f"{totp(device.bin_key, step=device.step, t0=device.t0, digits=device.digits, drift=device.drift):06d}"


@pytest.mark.django_db
def test_with_2fa_a_password_alone_does_not_sign_in(operator, settings):
    settings.ADMIN_REQUIRE_2FA = True
    enroll()
    client = Client()
    answer = login(client, PASSWORD)
    assert answer.status_code == 200 and b"otp_token" in answer.content
    assert not signed_in(client)


@pytest.mark.django_db
def test_with_2fa_password_and_current_code_sign_in(operator, settings):
    settings.ADMIN_REQUIRE_2FA = True
    device = enroll()
    client = Client()
    answer = login(client, PASSWORD, otp_device=device.persistent_id, otp_token=current_code(device))
    assert answer.status_code == 302
    assert signed_in(client)


@pytest.mark.django_db
def test_with_2fa_a_session_without_a_verified_device_is_not_staff(operator, settings):
    settings.ADMIN_REQUIRE_2FA = True
    client = Client()
    client.force_login(operator)  # a password-only session (e.g. from before 2FA was turned on)
    answer = client.get("/admin/")
    assert answer.status_code == 302 and "/admin/login/" in answer["Location"]


@pytest.mark.django_db
def test_without_2fa_the_login_is_one_step(operator, settings):
    settings.ADMIN_REQUIRE_2FA = False
    client = Client()
    page = client.get("/admin/login/")
    assert b"otp_token" not in page.content
    assert login(client, PASSWORD).status_code == 302 and signed_in(client)


@pytest.mark.django_db
def test_enrolling_twice_needs_replace(operator):
    first = enroll()
    with pytest.raises(Exception, match="already has a device"):
        call_command("admin_2fa_enroll", "operator", stdout=io.StringIO())
    call_command("admin_2fa_enroll", "operator", "--replace", stdout=io.StringIO())
    assert list(TOTPDevice.objects.filter(user=operator).values_list("pk", flat=True)) != [first.pk]


def test_2fa_is_on_by_default_in_production_and_off_under_debug(tmp_path):
    from tests.test_deploy import manage, production_env

    probe = "from django.conf import settings; print(settings.ADMIN_REQUIRE_2FA)"
    production = manage(production_env(tmp_path), "shell", "-c", probe)
    debug = manage(production_env(tmp_path, DEBUG="1"), "shell", "-c", probe)
    assert production.stdout.strip().splitlines()[-1] == "True", production.stderr
    assert debug.stdout.strip().splitlines()[-1] == "False", debug.stderr


# -- path and networks -----------------------------------------------------------------------------------


@pytest.fixture
def reload_urls(settings):
    import openplatform.urls

    default = settings.ADMIN_URL
    yield lambda: (importlib.reload(openplatform.urls), clear_url_caches())
    settings.ADMIN_URL = default
    importlib.reload(openplatform.urls)
    clear_url_caches()


@pytest.mark.django_db
def test_admin_url_moves_the_console(operator, settings, reload_urls):
    settings.ADMIN_REQUIRE_2FA = False
    settings.ADMIN_URL = "console-7f3a/"
    reload_urls()
    client = Client()
    client.force_login(operator)
    assert client.get("/console-7f3a/").status_code == 200
    assert client.get("/admin/").status_code == 404


@pytest.mark.django_db
def test_the_network_allow_list_hides_the_admin_from_other_addresses(operator, settings):
    settings.ADMIN_REQUIRE_2FA = False
    settings.ADMIN_ALLOWED_NETWORKS = ["127.0.0.0/30"]
    client = Client()
    client.force_login(operator)
    assert client.get("/admin/", REMOTE_ADDR="127.0.0.2").status_code == 200
    assert client.get("/admin/", REMOTE_ADDR="127.0.0.9").status_code == 404
    assert client.get("/admin/login/", REMOTE_ADDR="127.0.0.9").status_code == 404
    assert client.get("/healthz", REMOTE_ADDR="127.0.0.9").status_code == 200  # only the admin
    # a client-sent X-Forwarded-For is not believed without a trusted proxy in front
    assert client.get("/admin/", REMOTE_ADDR="127.0.0.9", HTTP_X_FORWARDED_FOR="127.0.0.1").status_code == 404


def test_allow_list_decisions():
    assert admin_address_allowed("10.1.2.3", ["10.0.0.0/8"])
    assert not admin_address_allowed("192.0.2.1", ["10.0.0.0/8", "fd00::/8"])
    assert admin_address_allowed("fd00::1", ["10.0.0.0/8", "fd00::/8"])
    assert not admin_address_allowed("not an address", ["0.0.0.0/0"])
