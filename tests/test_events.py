"""The events URLs (issue #3): signature, decryption, hostile input, and dispatch on InfoType.

Real pushes come from the simulator to our live server; hostile bodies are crafted with
WXBizMsgCrypt and sent through the Django test client, which re-raises any unhandled exception
(so "never a 500" is checked by every request here).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from datetime import timedelta

import pytest
from django.conf import settings as django_settings
from django.db import connection
from django.utils import timezone

from openplatform.component.models import ComponentEvent, ComponentVerifyTicket
from openplatform.component.tickets import component_ticket_latest
from openplatform.component.token import component_access_token_get
from openplatform.wechat.crypto import WXBizMsgCrypt
from tenants.models import AuthCodeExchange, Authorizer, Tenant
from tenants.services.authorization import authorization_state_make
from tenants.tasks import process_component_event, sweep_component_events
from tests.fixtures import (
    AUTHORIZED_REDIRECT_PATH,
    COMPONENT_EVENTS_PATH,
    post_raw,
    signed_event,
    sim_count,
)

APPID = django_settings.WECHAT_COMPONENT_APPID
AUTHORIZER_EVENTS_PATH = "/wechat/authorizers/wxauthorizer0001/events/"
EVENT_PATHS = [COMPONENT_EVENTS_PATH, AUTHORIZER_EVENTS_PATH]

BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE xml [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<xml><AppId>&lol9;</AppId><Encrypt>&lol9;</Encrypt><InfoType>&lol9;</InfoType></xml>"""

EXTERNAL_ENTITY = """<?xml version="1.0"?>
<!DOCTYPE xml [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<xml><AppId>&xxe;</AppId><Encrypt>&xxe;</Encrypt><InfoType>&xxe;</InfoType></xml>"""

EXTERNAL_DTD = """<?xml version="1.0"?>
<!DOCTYPE xml SYSTEM "http://127.0.0.1:1/evil.dtd">
<xml><AppId>x</AppId><Encrypt>abc</Encrypt></xml>"""

PARAMETER_ENTITY = """<?xml version="1.0"?>
<!DOCTYPE xml [<!ENTITY % remote SYSTEM "http://127.0.0.1:1/x.dtd"> %remote;]>
<xml><Encrypt>abc</Encrypt></xml>"""

QUADRATIC_BLOWUP = (
    '<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY a "' + "A" * 2000 + '">]><xml><Encrypt>'
    + "&a;" * 5000
    + "</Encrypt></xml>"
)


def ticket_xml(ticket: str = "ticket@@@crafted", appid: str = APPID, create_time: str = "1715943329") -> str:
    return (
        f"<xml><AppId><![CDATA[{appid}]]></AppId><CreateTime>{create_time}</CreateTime>"
        f"<InfoType><![CDATA[component_verify_ticket]]></InfoType>"
        f"<ComponentVerifyTicket><![CDATA[{ticket}]]></ComponentVerifyTicket></xml>"
    )


def assert_quick_4xx(response, started: float, status: int = 400) -> None:
    assert response.status_code == status, response.content[:200]
    assert time.monotonic() - started < 1.0, "hostile input must be refused quickly"


def wait_for(predicate, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


# -- tickets ---------------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_pushed_ticket_is_verified_stored_encrypted_and_acknowledged(live_component):
    # given the component's events URL is our live server
    # when WeChat (the simulator) pushes a component_verify_ticket
    result = live_component.push_ticket(APPID)
    # then we answered "success" and the ticket is stored, encrypted at rest, as the newest one
    assert result["status_code"] == 200
    assert result["response_text"] == "success"
    latest = component_ticket_latest(component_appid=APPID)
    assert latest.get_ticket() == result["ticket"]
    assert result["ticket"] not in latest.ticket_ciphertext


@pytest.mark.django_db(transaction=True)
def test_newest_pushed_ticket_is_used_for_the_component_token(live_component):
    live_component.push_ticket(APPID)
    newest = live_component.push_ticket(APPID)["ticket"]
    assert ComponentVerifyTicket.objects.filter(component_appid=APPID).count() == 3  # fixture's + 2 pushes

    component_access_token_get()

    calls = live_component.calls("/cgi-bin/component/api_component_token")
    assert [c["json"]["component_verify_ticket"] for c in calls] == [newest]
    assert calls[0]["errcode"] == 0


def test_crafted_ticket_push_is_stored(client, db):
    body, params = signed_event(ticket_xml("ticket@@@from-test"))
    response = post_raw(client, COMPONENT_EVENTS_PATH, body, params)
    assert response.status_code == 200
    assert response.content == b"success"
    assert response["Content-Type"].startswith("text/plain")
    assert component_ticket_latest(component_appid=APPID).get_ticket() == "ticket@@@from-test"


@pytest.mark.parametrize("create_time", ["", "not-a-number", "99999999999999999999", "-99999999999999", "1e9"])
def test_odd_create_time_does_not_lose_the_ticket(client, db, create_time):
    body, params = signed_event(ticket_xml("ticket@@@odd-time", create_time=create_time))
    response = post_raw(client, COMPONENT_EVENTS_PATH, body, params)
    assert response.status_code == 200
    assert component_ticket_latest(component_appid=APPID).get_ticket() == "ticket@@@odd-time"


def test_ticket_push_without_a_ticket_is_refused(client, db):
    plaintext = f"<xml><AppId>{APPID}</AppId><InfoType>component_verify_ticket</InfoType></xml>"
    body, params = signed_event(plaintext)
    response = post_raw(client, COMPONENT_EVENTS_PATH, body, params)
    assert response.status_code == 400
    assert not ComponentVerifyTicket.objects.exists()


def test_push_for_another_component_inside_the_ciphertext_is_refused(client, db):
    # Encrypted with our key and appid (so it decrypts), but the message names another component.
    body, params = signed_event(ticket_xml(appid="wxsomeothercomponent"))
    response = post_raw(client, COMPONENT_EVENTS_PATH, body, params)
    assert response.status_code == 400
    assert not ComponentVerifyTicket.objects.exists()


# -- authorization events --------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_authorized_event_is_stored_then_exchanged_exactly_once(live_component):
    # given WeChat pushes `authorized` for a new Official Account with permission sets 1 and 11
    grant = live_component.authorize(APPID, func_info=[11, 1], nick_name="Acme Coffee", push_event=True)
    # then we acknowledged it only after storing it, with the code encrypted (never in clear)
    assert grant["event"]["status_code"] == 200 and grant["event"]["response_text"] == "success"
    event = ComponentEvent.objects.get(info_type="authorized")
    assert event.authorizer_appid == grant["authorizer_appid"]
    assert event.processed_at is None
    assert event.get_auth_code() == grant["auth_code"]
    assert grant["auth_code"] not in event.auth_code_ciphertext

    # when the task runs (a worker would, after commit)
    process_component_event(event.pk)

    # then the authorizer is stored, unbound, with its permission sets, tokens and names
    sim = live_component.authorizer(grant["authorizer_appid"])
    authorizer = Authorizer.objects.get(appid=grant["authorizer_appid"])
    assert authorizer.tenant is None
    assert authorizer.status == Authorizer.Status.AUTHORIZED
    assert authorizer.func_info == [1, 11]
    assert authorizer.get_access_token() == sim["access_token"]
    assert authorizer.get_refresh_token() == sim["refresh_token"]
    assert authorizer.token_seconds_left() > 7000
    assert authorizer.nick_name == "Acme Coffee"
    assert authorizer.account_type == Authorizer.AccountType.OFFICIAL_ACCOUNT
    assert authorizer.user_name.startswith("gh_")
    assert authorizer.synced_at is not None
    event.refresh_from_db()
    assert event.processed_at is not None and event.error == ""
    assert event.auth_code_ciphertext == ""  # the code is wiped once exchanged

    # and running the task again (a redelivery) calls WeChat no more
    process_component_event(event.pk)
    assert sim_count(live_component, "api_query_auth") == 1


@pytest.mark.django_db(transaction=True)
def test_mini_program_authorized_event_records_the_account_type(live_component):
    grant = live_component.authorize(APPID, account_type="mini_program", push_event=True)
    process_component_event(ComponentEvent.objects.get(info_type="authorized").pk)
    authorizer = Authorizer.objects.get(appid=grant["authorizer_appid"])
    assert authorizer.account_type == Authorizer.AccountType.MINI_PROGRAM
    assert authorizer.func_info == [18]
    assert authorizer.can_upload_images


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("first", ["event", "redirect"])
def test_redirect_and_event_racing_exchange_the_code_once(live_component, tenant, client, first):
    # given a slow api_query_auth, so the two paths overlap
    grant = live_component.authorize(APPID, push_event=True)
    event = ComponentEvent.objects.get(info_type="authorized")
    live_component.set_latency("/cgi-bin/component/api_query_auth", 0.4)
    errors: list[BaseException] = []
    spans: dict[str, tuple[float, float]] = {}

    def run_event() -> None:
        started = time.monotonic()
        try:
            process_component_event(event.pk)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            spans["event"] = (started, time.monotonic())
            connection.close()

    exchanges_before = sim_count(live_component, "api_query_auth")

    def in_query_auth() -> bool:  # the simulator counts a call when it arrives, then sleeps
        return sim_count(live_component, "api_query_auth") > exchanges_before

    worker = threading.Thread(target=run_event)
    if first == "event":
        worker.start()
        wait_for(in_query_auth)
    # when the merchant comes back through the redirect while the event is processed
    state = authorization_state_make(tenant=tenant)
    if first == "redirect":
        threading.Thread(target=lambda: (wait_for(in_query_auth), worker.start())).start()
    started = time.monotonic()
    response = client.get(AUTHORIZED_REDIRECT_PATH, {"state": state, "auth_code": grant["auth_code"]})
    spans["redirect"] = (started, time.monotonic())
    wait_for(lambda: worker.ident is not None)
    worker.join(10)
    assert not worker.is_alive(), "the event was not processed in time"

    # (the two really overlapped: each started before the other had finished)
    assert spans["event"][0] < spans["redirect"][1] and spans["redirect"][0] < spans["event"][1], spans
    # then WeChat saw one exchange, both paths succeeded, and the account is bound to the tenant
    assert not errors
    assert response.status_code == 200, response.content
    assert sim_count(live_component, "api_query_auth") == 1
    authorizer = Authorizer.objects.get(appid=grant["authorizer_appid"])
    assert authorizer.tenant == tenant
    assert authorizer.get_access_token() == live_component.authorizer(authorizer.appid)["access_token"]
    event.refresh_from_db()
    assert event.processed_at is not None and event.error == ""
    assert AuthCodeExchange.objects.get().completed_at is not None


@pytest.mark.django_db(transaction=True)
def test_updateauthorized_event_replaces_tokens_and_permission_sets(live_component, tenant):
    grant = live_component.authorize(APPID, func_info=[1, 11], push_event=True)
    process_component_event(ComponentEvent.objects.get(info_type="authorized").pk)
    authorizer = Authorizer.objects.get(appid=grant["authorizer_appid"])
    authorizer.tenant = tenant
    authorizer.save()
    old_access, old_refresh = authorizer.get_access_token(), authorizer.get_refresh_token()

    # when the merchant re-authorizes with different permission sets
    update = live_component.reauthorize(authorizer.appid, func_info=[2, 7], push_event=True)
    assert update["info_type"] == "updateauthorized"
    assert update["event"]["response_text"] == "success"
    process_component_event(ComponentEvent.objects.get(info_type="updateauthorized").pk)

    # then tokens and permission sets are replaced, and the tenant binding is kept
    authorizer.refresh_from_db()
    sim = live_component.authorizer(authorizer.appid)
    assert authorizer.func_info == [2, 7]
    assert not authorizer.can_upload_images
    assert authorizer.get_refresh_token() == sim["refresh_token"] != old_refresh
    assert authorizer.get_access_token() == sim["access_token"] != old_access
    assert authorizer.tenant == tenant


@pytest.mark.django_db(transaction=True)
def test_unauthorized_event_revokes_and_wipes_tokens(live_component, tenant, make_authorizer):
    authorizer = make_authorizer(tenant)
    assert authorizer.access_token_ciphertext and authorizer.refresh_token_ciphertext

    result = live_component.revoke(authorizer.appid, push_event=True)

    assert result["event"]["status_code"] == 200 and result["event"]["response_text"] == "success"
    authorizer.refresh_from_db()
    assert authorizer.status == Authorizer.Status.REVOKED
    assert authorizer.access_token_ciphertext == ""
    assert authorizer.refresh_token_ciphertext == ""
    assert authorizer.access_token_expires_at is None
    assert authorizer.revoked_at is not None
    assert not authorizer.can_upload_images
    event = ComponentEvent.objects.get(info_type="unauthorized")
    assert event.processed_at is not None


def test_unauthorized_event_for_an_unknown_account_is_acknowledged(client, db):
    plaintext = (
        f"<xml><AppId>{APPID}</AppId><CreateTime>1</CreateTime><InfoType>unauthorized</InfoType>"
        "<AuthorizerAppid>wxnobodyknows0001</AuthorizerAppid></xml>"
    )
    body, params = signed_event(plaintext)
    response = post_raw(client, COMPONENT_EVENTS_PATH, body, params)
    assert response.status_code == 200 and response.content == b"success"


@pytest.mark.parametrize(
    "fields",
    [
        "<InfoType>authorized</InfoType><AuthorizerAppid>wxa</AuthorizerAppid>",
        "<InfoType>authorized</InfoType><AuthorizationCode>code</AuthorizationCode>",
        "<InfoType>updateauthorized</InfoType><AuthorizerAppid>wxa</AuthorizerAppid><AuthorizationCode></AuthorizationCode>",
        "<InfoType>unauthorized</InfoType>",
    ],
)
def test_authorization_event_missing_its_fields_is_refused(client, db, fields):
    body, params = signed_event(f"<xml><AppId>{APPID}</AppId>{fields}</xml>")
    response = post_raw(client, COMPONENT_EVENTS_PATH, body, params)
    assert response.status_code == 400
    assert not ComponentEvent.objects.exists()


def test_unknown_info_type_is_logged_and_acknowledged(client, db, caplog):
    plaintext = (
        f"<xml><AppId>{APPID}</AppId><CreateTime>1715943329</CreateTime>"
        "<InfoType>notify_third_fasteregister</InfoType><appid>wxnewmp</appid><status>0</status></xml>"
    )
    body, params = signed_event(plaintext)
    with caplog.at_level(logging.INFO):
        response = post_raw(client, COMPONENT_EVENTS_PATH, body, params)
    assert response.status_code == 200 and response.content == b"success"
    assert ComponentEvent.objects.get().info_type == "notify_third_fasteregister"
    assert any(getattr(r, "info_type", None) == "notify_third_fasteregister" for r in caplog.records)


# -- signatures ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", EVENT_PATHS)
@pytest.mark.parametrize(
    "tamper",
    ["wrong_signature", "missing_signature", "wrong_token", "other_timestamp", "signature_only_query"],
)
def test_bad_signature_is_403_and_stores_nothing(client, db, path, tamper):
    if tamper == "wrong_token":
        body, params = signed_event(ticket_xml(), token="not-our-token")
    else:
        body, params = signed_event(ticket_xml())
    if tamper == "wrong_signature":
        params["msg_signature"] = "0" * 40
    elif tamper == "missing_signature":
        del params["msg_signature"]
    elif tamper == "other_timestamp":
        params["timestamp"] = "1715943330"
    elif tamper == "signature_only_query":
        # `signature` (over token, timestamp, nonce) must not be accepted in place of msg_signature (docs/wechat-protocol.md §1).
        import hashlib

        token = django_settings.WECHAT_COMPONENT_TOKEN
        joined = "".join(sorted([token, params["timestamp"], params["nonce"]]))
        params = {"timestamp": params["timestamp"], "nonce": params["nonce"],
                  "signature": hashlib.sha1(joined.encode()).hexdigest()}
    response = post_raw(client, path, body, params)
    assert response.status_code == 403
    assert not ComponentVerifyTicket.objects.exists()


# -- replays ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", EVENT_PATHS)
@pytest.mark.parametrize("offset", [-601, 601, -86400 * 365])
def test_a_signed_push_with_a_timestamp_too_far_from_now_is_refused_and_logged(client, db, caplog, path, offset):
    # given a push signed with our token, but whose timestamp is past the 600 s default (either way)
    body, params = signed_event(ticket_xml("ticket@@@stale"), timestamp=str(int(time.time()) + offset))
    # when it arrives
    with caplog.at_level(logging.WARNING, logger="tenants.views_wechat"):
        response = post_raw(client, path, body, params)
    # then it is refused, logged, and nothing is stored
    assert response.status_code == 403
    assert not ComponentVerifyTicket.objects.exists()
    assert any("timestamp" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)


@pytest.mark.parametrize("path", EVENT_PATHS)
def test_a_push_within_the_age_limit_is_accepted(client, db, settings, path):
    settings.WECHAT_PUSH_MAX_AGE_SECONDS = 60
    for offset in (-55, 55):
        body, params = signed_event(ticket_xml(), timestamp=str(int(time.time()) + offset))
        assert post_raw(client, path, body, params).status_code == 200, offset
    body, params = signed_event(ticket_xml(), timestamp=str(int(time.time()) - 65))
    assert post_raw(client, path, body, params).status_code == 403


@pytest.mark.parametrize("timestamp", ["1", "not-a-number", "", "１７１５９４３３２９", "9" * 30])
def test_a_zero_max_age_turns_the_check_off_and_odd_timestamps_are_refused_with_it_on(client, db, settings, timestamp):
    body, params = signed_event(ticket_xml("ticket@@@odd-ts"), timestamp=timestamp)
    assert post_raw(client, COMPONENT_EVENTS_PATH, body, params).status_code == 403
    settings.WECHAT_PUSH_MAX_AGE_SECONDS = 0
    assert post_raw(client, COMPONENT_EVENTS_PATH, body, params).content == b"success"
    assert component_ticket_latest(component_appid=APPID).get_ticket() == "ticket@@@odd-ts"


def test_an_identical_push_is_acknowledged_but_not_processed_again(client, db):
    # given a ticket push that was accepted
    body, params = signed_event(ticket_xml("ticket@@@once"))
    assert post_raw(client, COMPONENT_EVENTS_PATH, body, params).content == b"success"
    # when the very same push comes again (a replay, or WeChat's retry of a slow answer)
    again = post_raw(client, COMPONENT_EVENTS_PATH, body, params)
    # then it is acknowledged, and nothing is stored twice
    assert again.status_code == 200 and again.content == b"success"
    assert ComponentVerifyTicket.objects.count() == 1
    # and the same content pushed anew (another nonce, so another signature) is a push of its own
    body, params = signed_event(ticket_xml("ticket@@@once"), nonce="42")
    assert post_raw(client, COMPONENT_EVENTS_PATH, body, params).content == b"success"
    assert ComponentVerifyTicket.objects.count() == 2


def test_an_identical_message_push_to_the_authorizer_url_is_handled_once(client, db, caplog):
    plaintext = (
        "<xml><ToUserName><![CDATA[gh_97417a04a28d]]></ToUserName><CreateTime>1715943329</CreateTime>"
        "<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[debug_demo]]></Event></xml>"
    )
    body, params = signed_event(plaintext)
    with caplog.at_level(logging.INFO):
        answers = [post_raw(client, AUTHORIZER_EVENTS_PATH, body, params).content for _ in range(2)]
    assert answers == [b"success", b"success"]
    assert sum(getattr(r, "event", None) == "debug_demo" for r in caplog.records) == 1


def test_a_refused_push_is_not_remembered_as_accepted(client, db):
    # A push refused after decryption (here: no ticket in it) is not "accepted": sent again, it is
    # refused again, never answered `success` by the replay memory.
    body, params = signed_event(f"<xml><AppId>{APPID}</AppId><InfoType>component_verify_ticket</InfoType></xml>")
    assert [post_raw(client, COMPONENT_EVENTS_PATH, body, params).status_code for _ in range(2)] == [400, 400]


def _revocation_xml(appid: str, create_time: int) -> str:
    return (f"<xml><AppId>{APPID}</AppId><CreateTime>{create_time}</CreateTime><InfoType>unauthorized</InfoType>"
            f"<AuthorizerAppid>{appid}</AuthorizerAppid></xml>")


@pytest.mark.django_db(transaction=True)
def test_a_late_unauthorized_event_cannot_revoke_a_newer_authorization(component, ticket, client, tenant, make_authorizer):
    # given a live account whose authorization was renewed at t0+60 (an `updateauthorized` event applied;
    # an event never revives a revoked binding, issue 11 point 1, so the account stays live throughout)
    authorizer = make_authorizer(tenant)
    t0 = int(time.time()) - 300
    grant = component.authorize(APPID, authorizer_appid=authorizer.appid)
    body, params = signed_event(_authorized_xml(grant, info_type="updateauthorized", create_time=t0 + 60))
    assert post_raw(client, COMPONENT_EVENTS_PATH, body, params).content == b"success"
    process_component_event(ComponentEvent.objects.get(info_type="updateauthorized").pk)
    authorizer.refresh_from_db()
    assert authorizer.status == Authorizer.Status.AUTHORIZED

    # when a revocation from t0 arrives late, freshly signed (a delayed redelivery, or a replay)
    body, params = signed_event(_revocation_xml(authorizer.appid, t0), nonce="31337")
    response = post_raw(client, COMPONENT_EVENTS_PATH, body, params)

    # then it is acknowledged and recorded, but the newer authorization stands
    assert response.content == b"success"
    authorizer.refresh_from_db()
    assert authorizer.status == Authorizer.Status.AUTHORIZED
    assert authorizer.get_access_token() == component.authorizer(authorizer.appid)["access_token"]
    late = ComponentEvent.objects.filter(info_type="unauthorized").order_by("received_at").last()
    assert late.processed_at is not None and "older than the last authorization event" in late.error
    # and a revocation newer than the authorization is applied
    body, params = signed_event(_revocation_xml(authorizer.appid, t0 + 120))
    assert post_raw(client, COMPONENT_EVENTS_PATH, body, params).content == b"success"
    authorizer.refresh_from_db()
    assert authorizer.status == Authorizer.Status.REVOKED


@pytest.mark.django_db(transaction=True)
def test_an_authorized_event_older_than_an_applied_revocation_is_never_exchanged(component, ticket, client, tenant,
                                                                                  make_authorizer):
    # given an account whose revocation at t0 was applied
    authorizer = make_authorizer(tenant)
    t0 = int(time.time()) - 300
    grant = component.authorize(APPID, authorizer_appid=authorizer.appid)  # an authorization from before it
    body, params = signed_event(_revocation_xml(authorizer.appid, t0))
    assert post_raw(client, COMPONENT_EVENTS_PATH, body, params).content == b"success"
    exchanges = sim_count(component, "api_query_auth")

    # when the older `authorized` event (t0-60) is processed only now
    body, params = signed_event(_authorized_xml(grant, create_time=t0 - 60))
    assert post_raw(client, COMPONENT_EVENTS_PATH, body, params).content == b"success"
    event = ComponentEvent.objects.get(info_type="authorized")
    process_component_event(event.pk)

    # then the account stays revoked, the code is never sent to WeChat, and the event is closed with why
    authorizer.refresh_from_db()
    assert authorizer.status == Authorizer.Status.REVOKED
    assert sim_count(component, "api_query_auth") == exchanges
    event.refresh_from_db()
    assert event.processed_at is not None and event.auth_code_ciphertext == ""
    assert "older than the last authorization event" in event.error


@pytest.mark.parametrize("path", EVENT_PATHS)
def test_events_urls_refuse_get(client, db, path):
    assert client.get(path).status_code == 405


# -- malformed, oversized and hostile bodies -------------------------------------------------------------

HOSTILE_ENVELOPES = {
    "empty": b"",
    "not_xml": b"hello world",
    "json": b'{"Encrypt": "abc"}',
    "truncated": b"<xml><Encrypt><![CDATA[abc",
    "wrong_root": b"<notxml><Encrypt>abc</Encrypt></notxml>",
    "no_encrypt": b"<xml><AppId>wx</AppId></xml>",
    "empty_encrypt": b"<xml><Encrypt></Encrypt></xml>",
    "billion_laughs": BILLION_LAUGHS.encode(),
    "external_entity": EXTERNAL_ENTITY.encode(),
    "external_dtd": EXTERNAL_DTD.encode(),
    "parameter_entity": PARAMETER_ENTITY.encode(),
    "quadratic_blowup": QUADRATIC_BLOWUP.encode()[:60_000],
    "invalid_utf8": b"<xml><Encrypt>\xff\xfe\xfd</Encrypt></xml>",
    "utf16_declared": b'<?xml version="1.0" encoding="UTF-16"?><xml><Encrypt>a</Encrypt></xml>',
    "nul_bytes": b"<xml><Encrypt>a\x00b</Encrypt></xml>",
    "processing_instruction": b"<?php system('id'); ?><xml><Encrypt>a</Encrypt></xml>",
    "deep_nesting": b"<xml>" + b"<a>" * 5000 + b"</a>" * 5000 + b"<Encrypt>a</Encrypt></xml>",
}


WELL_FORMED_ENVELOPES = {"deep_nesting", "processing_instruction"}


@pytest.mark.parametrize("path", EVENT_PATHS)
@pytest.mark.parametrize("name", sorted(HOSTILE_ENVELOPES))
def test_hostile_envelope_is_refused_quickly_without_a_500(client, db, path, name):
    started = time.monotonic()
    response = post_raw(client, path, HOSTILE_ENVELOPES[name], {"timestamp": "1", "nonce": "2", "msg_signature": "x"})
    # Refused while parsing the envelope (400), before any signature check; the two well-formed ones
    # (a processing instruction, deep nesting) parse, and then fail the signature check (403).
    assert_quick_4xx(response, started, 403 if name in WELL_FORMED_ENVELOPES else 400)
    assert not ComponentVerifyTicket.objects.exists()
    assert not ComponentEvent.objects.exists()


def _signed_envelope(encrypt: str, *, timestamp: str = "1", nonce: str = "2") -> tuple[str, dict[str, str]]:
    """A correctly signed envelope around an arbitrary Encrypt value (signature is not the defence here)."""
    crypt = WXBizMsgCrypt(django_settings.WECHAT_COMPONENT_TOKEN, django_settings.WECHAT_COMPONENT_AES_KEY, APPID)
    body = f"<xml><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"
    return body, {"timestamp": timestamp, "nonce": nonce, "msg_signature": crypt.sign(timestamp, nonce, encrypt)}


HOSTILE_PLAINTEXTS = {
    "billion_laughs": BILLION_LAUGHS,
    "external_entity": EXTERNAL_ENTITY,
    "external_dtd": EXTERNAL_DTD,
    "parameter_entity": PARAMETER_ENTITY,
    "not_xml": "component_verify_ticket=abc",
    "wrong_root": "<root><InfoType>component_verify_ticket</InfoType></root>",
    "truncated": "<xml><InfoType>component_verify_ticket",
    "empty": "",
}


@pytest.mark.parametrize("path", EVENT_PATHS)
@pytest.mark.parametrize("name", sorted(HOSTILE_PLAINTEXTS))
def test_hostile_xml_inside_a_validly_signed_message_is_refused(client, db, path, name):
    body, params = signed_event(HOSTILE_PLAINTEXTS[name])
    started = time.monotonic()
    response = post_raw(client, path, body, params)
    assert_quick_4xx(response, started)
    assert not ComponentVerifyTicket.objects.exists()


@pytest.mark.parametrize("path", EVENT_PATHS)
@pytest.mark.parametrize(
    "encrypt",
    ["not base64!!", "QUJD", "A" * 24, "AAAAAAAAAAAAAAAAAAAAAA==", "=" * 8],
    ids=["not_base64", "short", "not_block_multiple", "one_block", "padding_only"],
)
def test_validly_signed_garbage_ciphertext_is_400(client, db, path, encrypt):
    body, params = _signed_envelope(encrypt)
    started = time.monotonic()
    assert_quick_4xx(post_raw(client, path, body, params), started)


@pytest.mark.parametrize("path", EVENT_PATHS)
def test_message_encrypted_for_another_appid_is_400(client, db, path):
    body, params = signed_event(ticket_xml(), appid="wxanothercomponent")
    started = time.monotonic()
    assert_quick_4xx(post_raw(client, path, body, params), started)
    assert not ComponentVerifyTicket.objects.exists()


@pytest.mark.parametrize("path", EVENT_PATHS)
def test_oversized_body_is_refused_before_parsing(client, db, path):
    body, params = signed_event(ticket_xml(ticket="t" * 100))
    huge = body.replace("</xml>", "<Padding>" + "A" * (2 * 1024 * 1024) + "</Padding></xml>")
    started = time.monotonic()
    assert_quick_4xx(post_raw(client, path, huge, params), started)
    assert not ComponentVerifyTicket.objects.exists()


@pytest.mark.parametrize("path", EVENT_PATHS)
@pytest.mark.parametrize("declared", ["999999999999", "abc", "-1"])
def test_odd_content_length_is_a_400_and_stores_nothing(client, db, path, declared):
    # A length over the limit, not a number, or negative: the body cannot be trusted, so it is refused
    # before it is read (never a 500, never a ticket).
    body, params = signed_event(ticket_xml())
    response = post_raw(client, path, body, params, CONTENT_LENGTH=declared)
    assert response.status_code == 400, response.content[:200]
    assert not ComponentVerifyTicket.objects.exists()
    assert not ComponentEvent.objects.exists()


@pytest.mark.parametrize("path", EVENT_PATHS)
def test_odd_query_parameters_are_a_403_not_a_500(client, db, path):
    body, _ = signed_event(ticket_xml())
    for query in (
        "msg_signature=%FF%FE&timestamp=%00&nonce=%F0%9F%98%80",
        "msg_signature=" + "a" * 5000,
        "msg_signature=1&msg_signature=2&timestamp=&nonce=",
        "timestamp=1&nonce=2&msg_signature=%E4%BD%A0%E5%A5%BD",
    ):
        response = client.generic("POST", f"{path}?{query}", body, content_type="text/xml")
        assert response.status_code == 403, (query, response.status_code)


@pytest.mark.parametrize("path", EVENT_PATHS)
def test_random_corruptions_of_a_valid_push_never_500(client, db, path):
    # A seeded fuzz: flip, drop and insert bytes in a valid push and its query; every answer is a 2xx/4xx.
    rng = random.Random(20240603)
    body, params = signed_event(ticket_xml())
    raw = body.encode()
    answers = {200: 0, 400: 0, 403: 0}
    for _ in range(150):
        data = bytearray(raw)
        for _ in range(rng.randint(1, 4)):
            op, pos = rng.choice("fdi"), rng.randrange(len(data))
            if op == "f":
                data[pos] ^= 1 << rng.randrange(8)
            elif op == "d":
                del data[pos]
            else:
                data.insert(pos, rng.randrange(256))
        query = dict(params)
        if rng.random() < 0.3:
            query[rng.choice(list(query))] = "".join(chr(rng.randrange(32, 0x2FF)) for _ in range(rng.randint(0, 8)))
        stored_before = ComponentVerifyTicket.objects.count()
        response = post_raw(client, path, bytes(data), query)
        assert response.status_code in (200, 400, 403)
        # a push is stored exactly when it is first acknowledged (and only on the component URL; a second
        # acknowledgement is a replay of it), and what is stored is the signed ticket: a corruption that
        # still passes can only be outside the signed part
        stored = ComponentVerifyTicket.objects.count() - stored_before
        first = response.status_code == 200 and not answers[200]
        answers[response.status_code] += 1
        assert stored == (1 if first and path == COMPONENT_EVENTS_PATH else 0), response.content
    assert {t.get_ticket() for t in ComponentVerifyTicket.objects.all()} <= {"ticket@@@crafted"}
    assert answers[400] and answers[403], answers  # the fuzz reached both refusals


# -- the per-authorizer message URL ----------------------------------------------------------------------


def test_authorizer_message_url_verifies_and_acknowledges(client, db, caplog):
    plaintext = (
        "<xml><ToUserName><![CDATA[gh_97417a04a28d]]></ToUserName><FromUserName><![CDATA[openid]]></FromUserName>"
        "<CreateTime>1715943329</CreateTime><MsgType><![CDATA[event]]></MsgType>"
        "<Event><![CDATA[debug_demo]]></Event><debug_str><![CDATA[hello world]]></debug_str></xml>"
    )
    body, params = signed_event(plaintext)
    with caplog.at_level(logging.INFO):
        response = post_raw(client, AUTHORIZER_EVENTS_PATH, body, params)
    assert response.status_code == 200 and response.content == b"success"
    assert any(getattr(r, "event", None) == "debug_demo" for r in caplog.records)

    params["msg_signature"] = "f" * 40
    assert post_raw(client, AUTHORIZER_EVENTS_PATH, body, params).status_code == 403


def test_official_test_vector_envelope_with_tousername_is_accepted_when_keys_match(client, db, settings):
    # docs/wechat-protocol.md §2.6 vector A: a message push (ToUserName, no AppId) signed with the doc's token and key.
    # Its timestamp is fixed (2024): the age check is off to replay it, as WECHAT_PUSH_MAX_AGE_SECONDS=0 allows.
    settings.WECHAT_PUSH_MAX_AGE_SECONDS = 0
    settings.WECHAT_COMPONENT_TOKEN = "AAAAA"
    settings.WECHAT_COMPONENT_AES_KEY = "A" * 43
    settings.WECHAT_COMPONENT_APPID = "wx134c8103faa5a59e"
    encrypt = (
        "D7yzvUNAL930rd28wf21s4hvXhz0L6Uit/p2Di6C5DHyYGpEgdBRnKjBec34JwoQXicwaZC7fOVihW80F4VtsdvE//1vr7oAbqjDv8KenVp"
        "+ajKYpJnyQ4zMRhIC+a31fCVOMC03FfzV/QuC94kBP55a+Za3sJgvAn+ZbsNqZI5DkyuzkhQN8OBqCzFhizGmy0xpM0MEA4agpvE+RuNO1r"
        "hHTtuJB5yltw1FiYzecSXJ+y/D2r81VkRn2eYjh2ltsoyfbDR7Is6ookXIFxTfyeNyeHxMeT4KN5WpCDmSbTcUYrbBUlkGLJ9n/rU8YOywma"
        "6G7aTb7KZKOqCxgfoUlYEZPk4FUL/TK7ShriFDMVCLyjQJ15Ob++agDWtcxhfUfe6HIoIpRW8mKNBQiY/Jd1svvuskA1wLef1RTtzKfMpagS"
        "CX/laZINmdnX4zrF6kIaR9P4xQrWXbsTFHTYe0Mg=="
    )
    body = f"<xml><ToUserName><![CDATA[gh_97417a04a28d]]></ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"
    params = {
        "signature": "cc0c594499c1634947d5b502f158ee518947db27",
        "timestamp": "1715943329",
        "nonce": "1590219412",
        "encrypt_type": "aes",
        "msg_signature": "6c12a4205838198b8fa631b3220723bb07f1015c",
    }
    response = post_raw(client, "/wechat/authorizers/wxf8b4f85f3a794e77/events/", body, params)
    assert response.status_code == 200 and response.content == b"success"


# -- events that cannot be processed at once -------------------------------------------------------------


def _authorized_xml(grant: dict, info_type: str = "authorized", create_time: int = 1715943329) -> str:
    return (
        f"<xml><AppId>{APPID}</AppId><CreateTime>{create_time}</CreateTime><InfoType>{info_type}</InfoType>"
        f"<AuthorizerAppid>{grant['authorizer_appid']}</AuthorizerAppid>"
        f"<AuthorizationCode>{grant['auth_code']}</AuthorizationCode>"
        f"<AuthorizationCodeExpiredTime>{create_time + 3600}</AuthorizationCodeExpiredTime>"
        "<PreAuthCode>p</PreAuthCode></xml>"
    )


@pytest.mark.django_db(transaction=True)
def test_duplicate_pushes_of_one_authorization_exchange_its_code_once(component, ticket, client):
    # WeChat pushes again when it does not get "success" quickly enough: the identical push (same
    # timestamp, nonce and msg_signature) is acknowledged and not stored again; a new push of the same
    # event (a new nonce) is stored, and its code is still exchanged once.
    grant = component.authorize(APPID)
    body, params = signed_event(_authorized_xml(grant))
    for _ in range(2):
        assert post_raw(client, COMPONENT_EVENTS_PATH, body, params).content == b"success"
    assert ComponentEvent.objects.filter(info_type="authorized").count() == 1
    body, params = signed_event(_authorized_xml(grant), nonce="777")
    assert post_raw(client, COMPONENT_EVENTS_PATH, body, params).content == b"success"
    events = list(ComponentEvent.objects.filter(info_type="authorized"))
    assert len(events) == 2
    for event in events:
        process_component_event(event.pk)
    assert sim_count(component, "api_query_auth") == 1
    assert all(e.processed_at and not e.error for e in ComponentEvent.objects.all())
    assert Authorizer.objects.get().appid == grant["authorizer_appid"]


@pytest.mark.django_db(transaction=True)
def test_authorized_event_before_any_ticket_keeps_its_code_until_it_can_be_exchanged(component, client):
    # given an authorization pushed before we ever received a ticket (a fresh deployment)
    grant = component.authorize(APPID)
    body, params = signed_event(_authorized_xml(grant))
    assert post_raw(client, COMPONENT_EVENTS_PATH, body, params).content == b"success"
    event = ComponentEvent.objects.get()

    # when the task runs: no component token can be had
    process_component_event(event.pk)

    # then the event waits, with the reason, and its code is kept for the sweeper
    event.refresh_from_db()
    assert event.processed_at is None
    assert "component_verify_ticket" in event.error
    assert event.get_auth_code() == grant["auth_code"]
    assert not Authorizer.objects.exists()

    # and once a ticket arrives, the next run exchanges it
    body, params = signed_event(ticket_xml(component.issue_ticket(APPID)))
    assert post_raw(client, COMPONENT_EVENTS_PATH, body, params).content == b"success"
    process_component_event(event.pk)
    event.refresh_from_db()
    assert event.processed_at is not None and event.error == "" and event.auth_code_ciphertext == ""
    assert Authorizer.objects.get().appid == grant["authorizer_appid"]


@pytest.mark.django_db(transaction=True)
def test_authorized_event_with_a_dead_code_is_final(component, ticket, client):
    grant = component.authorize(APPID)
    component.revoke(grant["authorizer_appid"])  # the code dies with the grant
    body, params = signed_event(_authorized_xml(grant))
    post_raw(client, COMPONENT_EVENTS_PATH, body, params)
    event = ComponentEvent.objects.get(info_type="authorized")
    process_component_event(event.pk)
    event.refresh_from_db()
    assert event.processed_at is not None
    assert "61009" in event.error
    assert event.auth_code_ciphertext == ""
    assert not Authorizer.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_an_expired_code_closes_its_event_and_is_never_sent_to_wechat_again(component, ticket, client):
    # given an authorization whose event could not be processed within the code's hour (say WeChat was down)
    grant = component.authorize(APPID)
    body, params = signed_event(_authorized_xml(grant))
    assert post_raw(client, COMPONENT_EVENTS_PATH, body, params).content == b"success"
    event = ComponentEvent.objects.get(info_type="authorized")
    component.advance_clock(3601)

    # when the task finally runs
    process_component_event(event.pk)

    # then WeChat's 61010 closes the event with the reason, the code is wiped
    event.refresh_from_db()
    assert event.processed_at is not None and event.auth_code_ciphertext == ""
    assert "61010" in event.error and "authorize again" in event.error
    assert sim_count(component, "api_query_auth") == 1
    # and neither the sweeper nor a late redirect with the same code asks WeChat again
    ComponentEvent.objects.filter(pk=event.pk).update(received_at=timezone.now() - timedelta(minutes=10))
    assert sweep_component_events() == 0
    tenant = Tenant.objects.create(slug="late", name="Late")
    page = client.get(
        AUTHORIZED_REDIRECT_PATH, {"state": authorization_state_make(tenant=tenant), "auth_code": grant["auth_code"]}
    )
    assert page.status_code == 400 and b"expired" in page.content
    assert sim_count(component, "api_query_auth") == 1
    assert not Authorizer.objects.exists()
