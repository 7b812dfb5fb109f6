"""The WeChat simulator, exercised over real HTTP with plain ``requests`` (not the project's client)."""

from __future__ import annotations

import hashlib
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from openplatform.wechat.crypto import WXBizMsgCrypt, parse_xml_fields
from openplatform.wechat.links import mobile_authorization_url, pc_authorization_url
from openplatform.wechat.simulator import SimulatorControlError

COMPONENT_APPID = "wxsimcomponent0001"
COMPONENT_SECRET = "component-secret"
TOKEN = "simtoken"
AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 200
JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 200
UPLOADIMG = "/cgi-bin/media/uploadimg"


# -- helpers ------------------------------------------------------------------------------------------------


class EventReceiver:
    """A tiny events URL: verifies and decrypts every push, answers "success"."""

    def __init__(self) -> None:
        self.crypto = WXBizMsgCrypt(TOKEN, AES_KEY, COMPONENT_APPID)
        self.events: list[dict[str, str]] = []
        self.queries: list[dict[str, str]] = []
        self._changed = threading.Condition()
        self._server = make_server("127.0.0.1", 0, self._app, threaded=True)
        self.url = f"http://127.0.0.1:{self._server.port}/events/"
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    def _app(self, environ, start_response):
        request = Request(environ)
        args = request.args
        plaintext = self.crypto.decrypt_message(
            request.get_data(),
            msg_signature=args["msg_signature"],
            timestamp=args["timestamp"],
            nonce=args["nonce"],
        )
        with self._changed:
            self.queries.append(args.to_dict())
            self.events.append(parse_xml_fields(plaintext))
            self._changed.notify_all()
        return Response("success", content_type="text/plain")(environ, start_response)

    def wait_for(self, info_type: str, timeout: float = 5.0) -> dict[str, str]:
        with self._changed:
            found = self._changed.wait_for(
                lambda: any(e["InfoType"] == info_type for e in self.events), timeout=timeout
            )
            assert found, f"no {info_type} event within {timeout}s; got {self.events}"
            return next(e for e in reversed(self.events) if e["InfoType"] == info_type)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def receiver():
    server = EventReceiver()
    yield server
    server.stop()


@pytest.fixture
def sim(simulator, receiver):
    """The simulator with our component registered, its events going to ``receiver``."""
    simulator.register_component(COMPONENT_APPID, COMPONENT_SECRET, TOKEN, AES_KEY, events_url=receiver.url)
    return simulator


def api(simulator, path: str, body=None, *, timeout: float = 5.0, **query) -> dict:
    response = requests.post(simulator.url + path, params=query, json=body, timeout=timeout)
    assert response.status_code == 200, response.text
    return response.json()


def component_token(simulator) -> str:
    ticket = simulator.issue_ticket(COMPONENT_APPID)
    answer = api(
        simulator,
        "/cgi-bin/component/api_component_token",
        {
            "component_appid": COMPONENT_APPID,
            "component_appsecret": COMPONENT_SECRET,
            "component_verify_ticket": ticket,
        },
    )
    return answer["component_access_token"]


def query_auth(simulator, ctoken: str, auth_code: str) -> dict:
    return api(
        simulator,
        "/cgi-bin/component/api_query_auth",
        {"component_appid": COMPONENT_APPID, "authorization_code": auth_code},
        component_access_token=ctoken,
    )


def onboard(simulator, ctoken: str, **kwargs) -> dict:
    """An authorized account with its tokens: {appid, access_token, refresh_token}."""
    granted = simulator.authorize(COMPONENT_APPID, **kwargs)
    info = query_auth(simulator, ctoken, granted["auth_code"])["authorization_info"]
    return {
        "appid": info["authorizer_appid"],
        "access_token": info["authorizer_access_token"],
        "refresh_token": info["authorizer_refresh_token"],
    }


def refresh(simulator, ctoken: str, appid: str, refresh_token: str) -> dict:
    return api(
        simulator,
        "/cgi-bin/component/api_authorizer_token",
        {
            "component_appid": COMPONENT_APPID,
            "authorizer_appid": appid,
            "authorizer_refresh_token": refresh_token,
        },
        component_access_token=ctoken,
    )


def component_call(simulator, ctoken: str, path: str, **body) -> dict:
    return api(simulator, path, {"component_appid": COMPONENT_APPID, **body}, component_access_token=ctoken)


def upload(
    simulator,
    access_token: str,
    data: bytes = PNG,
    filename: str = "image.png",
    part: str = "media",
    content_type: str = "image/png",
    timeout: float = 5.0,
) -> dict:
    response = requests.post(
        simulator.url + UPLOADIMG,
        params={"access_token": access_token},
        files={part: (filename, data, content_type)},
        timeout=timeout,
    )
    assert response.status_code == 200, response.text
    return response.json()


# -- onboarding ---------------------------------------------------------------------------------------------


def test_full_onboarding_from_ticket_push_to_image_upload(sim, receiver):
    # Given a ticket pushed to our events URL
    pushed = sim.push_ticket(COMPONENT_APPID)
    assert (pushed["status_code"], pushed["response_text"]) == (200, "success")
    ticket_event = receiver.wait_for("component_verify_ticket")
    assert ticket_event["ComponentVerifyTicket"] == pushed["ticket"]
    assert ticket_event["AppId"] == COMPONENT_APPID
    assert receiver.queries[-1]["encrypt_type"] == "aes"

    # When the component fetches its token and a pre_auth_code
    ctoken = api(
        sim,
        "/cgi-bin/component/api_component_token",
        {
            "component_appid": COMPONENT_APPID,
            "component_appsecret": COMPONENT_SECRET,
            "component_verify_ticket": ticket_event["ComponentVerifyTicket"],
        },
    )
    assert ctoken["expires_in"] == 7200
    pre = component_call(sim, ctoken["component_access_token"], "/cgi-bin/component/api_create_preauthcode")
    assert pre["pre_auth_code"].startswith("preauthcode@@@") and pre["expires_in"] == 600

    # And the merchant opens the authorization page and confirms
    params = {
        "component_appid": COMPONENT_APPID,
        "pre_auth_code": pre["pre_auth_code"],
        "redirect_uri": "http://merchant.example/back/?state=signed-state",
        "auth_type": "3",
    }
    page = requests.get(sim.url + "/cgi-bin/componentloginpage", params=params, timeout=5)
    assert page.status_code == 200 and "<form" in page.text and "name='func' value='11' checked" in page.text
    confirm = requests.post(
        sim.url + "/cgi-bin/componentloginpage",
        params=params,
        data={
            "appid": "wxmerchant0000001",
            "nick_name": "Shop",
            "account_type": "official_account",
            "func": ["1", "11"],
        },
        allow_redirects=False,
        timeout=5,
    )

    # Then WeChat redirects back with the auth code, keeping our state
    assert confirm.status_code == 302
    location = urlsplit(confirm.headers["Location"])
    back = parse_qs(location.query)
    assert (location.netloc, location.path) == ("merchant.example", "/back/")
    assert back["state"] == ["signed-state"] and back["expires_in"] == ["3600"]
    auth_code = back["auth_code"][0]

    # And pushes the same code in an authorized event
    event = receiver.wait_for("authorized")
    assert event["AuthorizerAppid"] == "wxmerchant0000001"
    assert event["AuthorizationCode"] == auth_code
    assert event["PreAuthCode"] == pre["pre_auth_code"]
    assert int(event["AuthorizationCodeExpiredTime"]) == int(event["CreateTime"]) + 3600

    # And the code is exchangeable exactly once
    ctoken_value = ctoken["component_access_token"]
    info = query_auth(sim, ctoken_value, auth_code)["authorization_info"]
    assert info["authorizer_appid"] == "wxmerchant0000001"
    assert info["func_info"] == [{"funcscope_category": {"id": 1}}, {"funcscope_category": {"id": 11}}]
    assert query_auth(sim, ctoken_value, auth_code)["errcode"] == 61009

    # And the refresh token yields access tokens that upload PNG and JPEG images
    refreshed = refresh(sim, ctoken_value, info["authorizer_appid"], info["authorizer_refresh_token"])
    assert refreshed["authorizer_refresh_token"] == info["authorizer_refresh_token"]
    png = upload(sim, refreshed["authorizer_access_token"], PNG, "a.png", content_type="image/png")
    jpeg = upload(sim, refreshed["authorizer_access_token"], JPEG, "b.JPG", content_type="image/jpeg")
    assert png["errcode"] == 0 and png["url"].startswith("http://mmbiz.qpic.cn/sim/")
    assert jpeg["errcode"] == 0 and jpeg["url"] != png["url"]
    records = sim.uploads()
    assert [(r["authorizer_appid"], r["part_name"], r["filename"], r["errcode"]) for r in records] == [
        ("wxmerchant0000001", "media", "a.png", 0),
        ("wxmerchant0000001", "media", "b.JPG", 0),
    ]
    assert records[0]["size"] == len(PNG) and records[0]["content_type"] == "image/png"
    assert records[0]["access_token"] == refreshed["authorizer_access_token"]


def test_push_carries_msg_signature_and_signature(sim, receiver):
    sim.push_ticket(COMPONENT_APPID)
    receiver.wait_for("component_verify_ticket")
    query = receiver.queries[-1]
    expected = hashlib.sha1("".join(sorted([TOKEN, query["timestamp"], query["nonce"]])).encode()).hexdigest()
    assert query["signature"] == expected


def test_start_push_ticket_pushes_a_ticket(sim, receiver):
    answer = api(
        sim,
        "/cgi-bin/component/api_start_push_ticket",
        {"component_appid": COMPONENT_APPID, "component_secret": COMPONENT_SECRET},
    )
    assert answer == {"errcode": 0, "errmsg": "ok"}
    assert receiver.wait_for("component_verify_ticket")["ComponentVerifyTicket"].startswith("ticket@@@")
    wrong = api(
        sim,
        "/cgi-bin/component/api_start_push_ticket",
        {"component_appid": COMPONENT_APPID, "component_secret": "x"},
    )
    assert wrong["errcode"] == 40125


def test_authorization_page_rejects_used_expired_and_unknown_codes(sim):
    ctoken = component_token(sim)
    pre = component_call(sim, ctoken, "/cgi-bin/component/api_create_preauthcode")["pre_auth_code"]
    params = {"component_appid": COMPONENT_APPID, "pre_auth_code": pre, "redirect_uri": "http://x.example/cb"}
    url = sim.url + "/safe/bindcomponent"
    first = requests.post(url, params=params, data={"func": "11"}, allow_redirects=False, timeout=5)
    assert first.status_code == 302
    assert (
        requests.post(url, params=params, data={"func": "11"}, allow_redirects=False, timeout=5).status_code
        == 400
    )
    assert requests.get(url, params=params, timeout=5).status_code == 400

    unknown = {**params, "pre_auth_code": "preauthcode@@@nope"}
    assert requests.get(url, params=unknown, timeout=5).status_code == 400

    expiring = component_call(sim, ctoken, "/cgi-bin/component/api_create_preauthcode")["pre_auth_code"]
    sim.advance_clock(601)
    assert requests.get(url, params={**params, "pre_auth_code": expiring}, timeout=5).status_code == 400


def test_reauthorization_on_the_page_sends_updateauthorized(sim, receiver):
    ctoken = component_token(sim)
    account = onboard(sim, ctoken, func_info=[1])
    pre = component_call(sim, ctoken, "/cgi-bin/component/api_create_preauthcode")["pre_auth_code"]
    params = {
        "component_appid": COMPONENT_APPID,
        "pre_auth_code": pre,
        "redirect_uri": "http://x.example/cb",
        "biz_appid": account["appid"],
        "auth_type": "1",
    }
    page = requests.get(sim.url + "/cgi-bin/componentloginpage", params=params, timeout=5)
    assert account["appid"] in page.text
    confirm = requests.post(
        sim.url + "/cgi-bin/componentloginpage",
        params=params,
        data={"appid": account["appid"], "func": ["1", "11"]},
        allow_redirects=False,
        timeout=5,
    )
    assert confirm.status_code == 302
    event = receiver.wait_for("updateauthorized")
    assert event["AuthorizerAppid"] == account["appid"]
    # The old refresh token died with the re-authorization.
    assert refresh(sim, ctoken, account["appid"], account["refresh_token"])["errcode"] == 61023
    assert sim.authorizer(account["appid"])["func_info"] == [1, 11]


def test_expired_auth_code_answers_61010_and_a_used_or_unknown_one_61009(sim):
    # Given two codes, one of them exchanged
    ctoken = component_token(sim)
    granted = sim.authorize(COMPONENT_APPID)
    used = sim.authorize(COMPONENT_APPID)
    assert "authorization_info" in query_auth(sim, ctoken, used["auth_code"])

    # When both outlive their hour
    sim.advance_clock(3601)
    ctoken = component_token(sim)

    # Then the unused one is "expired" and the used one still "invalid", as is an unknown code
    expired = query_auth(sim, ctoken, granted["auth_code"])
    assert expired["errcode"] == 61010 and expired["errmsg"].startswith("code is expired")
    assert query_auth(sim, ctoken, used["auth_code"])["errcode"] == 61009
    assert query_auth(sim, ctoken, "queryauthcode@@@never-issued")["errcode"] == 61009


# -- component token ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "errcode"),
    [
        ({"component_appid": "wxunknown"}, 61011),
        ({"component_appsecret": "wrong"}, 40125),
        ({"component_appsecret": None}, 41004),
        ({"component_verify_ticket": "ticket@@@forged"}, 61006),
    ],
)
def test_component_token_rejects_bad_credentials(sim, override, errcode):
    body = {
        "component_appid": COMPONENT_APPID,
        "component_appsecret": COMPONENT_SECRET,
        "component_verify_ticket": sim.issue_ticket(COMPONENT_APPID),
        **override,
    }
    assert api(sim, "/cgi-bin/component/api_component_token", body)["errcode"] == errcode


def test_ticket_expires_after_12_hours(sim):
    ticket = sim.issue_ticket(COMPONENT_APPID)
    sim.advance_clock(12 * 3600)
    body = {
        "component_appid": COMPONENT_APPID,
        "component_appsecret": COMPONENT_SECRET,
        "component_verify_ticket": ticket,
    }
    assert api(sim, "/cgi-bin/component/api_component_token", body)["errcode"] == 61005


def test_previous_component_token_works_for_the_grace_period(sim):
    old = component_token(sim)
    new = component_token(sim)
    assert old != new
    assert "pre_auth_code" in component_call(sim, old, "/cgi-bin/component/api_create_preauthcode")
    sim.advance_clock(301)
    assert component_call(sim, old, "/cgi-bin/component/api_create_preauthcode")["errcode"] == 42001
    assert "pre_auth_code" in component_call(sim, new, "/cgi-bin/component/api_create_preauthcode")


def test_both_token_parameter_names_are_accepted(sim):
    ctoken = component_token(sim)
    path = "/cgi-bin/component/api_create_preauthcode"
    assert "pre_auth_code" in api(sim, path, {"component_appid": COMPONENT_APPID}, access_token=ctoken)
    assert api(sim, path, {"component_appid": COMPONENT_APPID})["errcode"] == 41001
    assert api(sim, path, {"component_appid": "wxother"}, access_token=ctoken)["errcode"] == 61011


# -- uploadimg rules ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "errcode"),
    [
        ({"part": "file"}, 41005),
        ({"data": b""}, 44001),
        ({"data": PNG[:8] + b"\x00" * (1_048_577 - 8)}, 40009),
        ({"data": b"GIF89a" + b"\x00" * 100, "filename": "a.png"}, 40005),
        ({"filename": "media"}, 40005),
        ({"filename": "a.gif"}, 40005),
        ({"filename": "图片.png"}, 41005),
        ({"data": PNG[:8] + b"\x00" * (1_048_576 - 8)}, 0),
    ],
)
def test_uploadimg_payload_rules(sim, kwargs, errcode):
    account = onboard(sim, component_token(sim))
    answer = upload(sim, account["access_token"], **kwargs)
    assert answer["errcode"] == errcode
    (record,) = sim.uploads()
    assert record["errcode"] == errcode and record["authorizer_appid"] == account["appid"]


@pytest.mark.parametrize(
    ("disposition", "errcode"),
    [
        ('form-data; name="media"; filename="a.png"', 0),
        ('form-data; name="media"', 40005),  # no filename, so no extension
        ("form-data; name=\"media\"; filename*=utf-8''%E5%9B%BE.png", 41005),  # RFC 2231 (wechatpy #293)
    ],
)
def test_uploadimg_reads_the_raw_part_headers(sim, disposition, errcode):
    account = onboard(sim, component_token(sim))
    boundary = "sim-test-boundary"
    body = (
        f"--{boundary}\r\nContent-Disposition: {disposition}\r\nContent-Type: image/png\r\n\r\n".encode()
        + PNG
        + f"\r\n--{boundary}--\r\n".encode()
    )
    response = requests.post(
        sim.url + UPLOADIMG,
        params={"access_token": account["access_token"]},
        data=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        timeout=5,
    )
    assert response.json()["errcode"] == errcode
    (record,) = sim.uploads()
    assert record["sha256"] == hashlib.sha256(PNG).hexdigest() and record["size"] == len(PNG)


def test_uploadimg_that_is_not_multipart_has_no_media(sim):
    account = onboard(sim, component_token(sim))
    response = requests.post(
        sim.url + UPLOADIMG, params={"access_token": account["access_token"]}, json={"media": "x"}, timeout=5
    )
    assert response.json()["errcode"] == 41005


def test_uploadimg_needs_an_upload_permission_set(sim):
    ctoken = component_token(sim)
    without = onboard(sim, ctoken, func_info=[2, 7])
    mini_program = onboard(sim, ctoken, func_info=[18], account_type="mini_program")
    # The account has not granted any of the sets to the platform: 61007, not 48001 (troubleshooting guide).
    refused = upload(sim, without["access_token"])
    assert refused["errcode"] == 61007 and refused["errmsg"].startswith("api is unauthorized to component")
    assert upload(sim, mini_program["access_token"])["errcode"] == 0


def test_a_set_the_platform_does_not_hold_is_never_granted_and_uploads_answer_61007(sim):
    ctoken = component_token(sim)
    before = onboard(sim, ctoken, func_info=[11])
    # Given the platform does not hold sets 1 and 11 on the Open Platform console
    assert sim.withhold_permission_sets(COMPONENT_APPID, [1, 11]) == [1, 11]

    # When a merchant authorizes with them ticked
    account = onboard(sim, ctoken, func_info=[1, 11, 2])

    # Then the authorization carries neither, and uploads answer 61007, also for the earlier authorization
    assert sim.authorizer(account["appid"])["func_info"] == [2]
    assert upload(sim, account["access_token"])["errcode"] == 61007
    assert upload(sim, before["access_token"])["errcode"] == 61007
    # And once the platform holds them again, the earlier authorization uploads
    assert sim.withhold_permission_sets(COMPONENT_APPID, []) == []
    assert upload(sim, before["access_token"])["errcode"] == 0


def test_an_account_that_itself_lacks_the_api_answers_48001(sim):
    account = onboard(sim, component_token(sim), func_info=[1, 11])
    sim.register_direct_account("wxdirect000000001", "direct-secret", [11])
    direct = api(
        sim,
        "/cgi-bin/stable_token",
        {"grant_type": "client_credential", "appid": "wxdirect000000001", "secret": "direct-secret"},
    )["access_token"]

    # Given both accounts lack uploadimg themselves (e.g. not verified), whatever they granted
    sim.set_account_lacks_api(account["appid"])
    sim.set_account_lacks_api("wxdirect000000001", path=UPLOADIMG)

    # Then uploads answer 48001 "api unauthorized"
    refused = upload(sim, account["access_token"])
    assert refused["errcode"] == 48001 and refused["errmsg"].startswith("api unauthorized")
    assert upload(sim, direct)["errcode"] == 48001
    # And the account's own lack wins over a missing set: no re-authorization would fix it
    sim.withhold_permission_sets(COMPONENT_APPID, [1, 11])
    assert upload(sim, account["access_token"])["errcode"] == 48001
    sim.withhold_permission_sets(COMPONENT_APPID, [])
    sim.set_account_lacks_api(account["appid"], lacks=False)
    assert upload(sim, account["access_token"])["errcode"] == 0
    with pytest.raises(SimulatorControlError) as unknown:
        sim.set_account_lacks_api("wxnobody")
    assert unknown.value.status_code == 404


def test_uploadimg_token_errors(sim):
    ctoken = component_token(sim)
    assert upload(sim, "no-such-token")["errcode"] == 40001
    assert upload(sim, ctoken)["errcode"] == 40001  # a component token is not an account token
    response = requests.post(sim.url + UPLOADIMG, files={"media": ("a.png", PNG, "image/png")}, timeout=5)
    assert response.json()["errcode"] == 41001


# -- token lifetimes ----------------------------------------------------------------------------------------


def test_authorizer_token_expires_and_old_token_has_grace(sim):
    sim.configure(authorizer_token_ttl=1000, component_token_ttl=100000)
    ctoken = component_token(sim)
    account = onboard(sim, ctoken)
    sim.advance_clock(1000)
    expired = upload(sim, account["access_token"])
    assert expired["errcode"] == 42001 and expired["errmsg"].startswith("access_token expired")

    fresh = refresh(sim, ctoken, account["appid"], account["refresh_token"])
    assert fresh["expires_in"] == 1000
    newer = refresh(sim, ctoken, account["appid"], account["refresh_token"])
    # The superseded token overlaps with the new one for token_grace_seconds (300 by default).
    assert upload(sim, fresh["authorizer_access_token"])["errcode"] == 0
    sim.advance_clock(301)
    assert upload(sim, fresh["authorizer_access_token"])["errcode"] == 42001
    assert upload(sim, newer["authorizer_access_token"])["errcode"] == 0


def test_invalidated_tokens_answer_the_chosen_errcode(sim):
    ctoken = component_token(sim)
    one = onboard(sim, ctoken)
    two = onboard(sim, ctoken)
    assert sim.invalidate_tokens(appid=one["appid"], errcode=40001) == 1
    assert upload(sim, one["access_token"])["errcode"] == 40001
    assert upload(sim, two["access_token"])["errcode"] == 0
    # A token issued afterwards is fine.
    fresh = refresh(sim, ctoken, one["appid"], one["refresh_token"])
    assert upload(sim, fresh["authorizer_access_token"])["errcode"] == 0

    sim.invalidate_tokens(errcode=42001)  # every token, the component's included
    assert upload(sim, two["access_token"])["errcode"] == 42001
    assert component_call(sim, ctoken, "/cgi-bin/component/api_create_preauthcode")["errcode"] == 42001


def test_revoked_account_loses_everything(sim, receiver):
    ctoken = component_token(sim)
    account = onboard(sim, ctoken)
    revoked = sim.revoke(account["appid"], push_event=True)
    assert revoked["event"]["status_code"] == 200
    assert receiver.wait_for("unauthorized")["AuthorizerAppid"] == account["appid"]

    assert refresh(sim, ctoken, account["appid"], account["refresh_token"])["errcode"] == 61023
    info = component_call(
        sim, ctoken, "/cgi-bin/component/api_get_authorizer_info", authorizer_appid=account["appid"]
    )
    assert info["errcode"] == 61003
    assert upload(sim, account["access_token"])["errcode"] == 40001
    listing = component_call(sim, ctoken, "/cgi-bin/component/api_get_authorizer_list", offset=0, count=100)
    assert listing["total_count"] == 0 and listing["list"] == []
    assert refresh(sim, ctoken, "wxnobody", "x")["errcode"] == 61003
    assert sim.authorizer(account["appid"])["revoked"] is True


def test_lost_refresh_token_is_recovered_from_the_list(sim):
    ctoken = component_token(sim)
    account = onboard(sim, ctoken)
    sim.invalidate_refresh_token(account["appid"])
    assert refresh(sim, ctoken, account["appid"], account["refresh_token"])["errcode"] == 61023

    listing = component_call(sim, ctoken, "/cgi-bin/component/api_get_authorizer_list", offset=0, count=500)
    (item,) = listing["list"]
    assert item["authorizer_appid"] == account["appid"] and item["refresh_token"] != account["refresh_token"]
    info = component_call(
        sim, ctoken, "/cgi-bin/component/api_get_authorizer_info", authorizer_appid=account["appid"]
    )
    assert info["authorization_info"]["authorizer_refresh_token"] == item["refresh_token"]
    assert "authorizer_access_token" in refresh(sim, ctoken, account["appid"], item["refresh_token"])


def test_reauthorize_replaces_the_refresh_token(sim, receiver):
    ctoken = component_token(sim)
    account = onboard(sim, ctoken)
    again = sim.reauthorize(account["appid"], func_info=[1, 11, 15], push_event=True)
    assert again["event"]["response_text"] == "success"
    assert receiver.wait_for("updateauthorized")["AuthorizationCode"] == again["auth_code"]
    assert refresh(sim, ctoken, account["appid"], account["refresh_token"])["errcode"] == 61023
    info = query_auth(sim, ctoken, again["auth_code"])["authorization_info"]
    assert info["authorizer_refresh_token"] == again["refresh_token"]
    assert [f["funcscope_category"]["id"] for f in info["func_info"]] == [1, 11, 15]


def test_rotating_refresh_tokens_keep_the_old_one_for_the_grace(sim):
    sim.configure(rotate_refresh_tokens=True)
    ctoken = component_token(sim)
    account = onboard(sim, ctoken)
    first = refresh(sim, ctoken, account["appid"], account["refresh_token"])
    assert first["authorizer_refresh_token"] != account["refresh_token"]
    assert "authorizer_access_token" in refresh(sim, ctoken, account["appid"], account["refresh_token"])
    sim.advance_clock(301)
    assert refresh(sim, ctoken, account["appid"], account["refresh_token"])["errcode"] == 61023


# -- authorizer info and list -------------------------------------------------------------------------------


def test_authorizer_info_shapes(sim):
    ctoken = component_token(sim)
    oa = onboard(sim, ctoken, nick_name="My OA")
    mp = onboard(sim, ctoken, account_type="mini_program")
    path = "/cgi-bin/component/api_get_authorizer_info"
    oa_info = component_call(sim, ctoken, path, authorizer_appid=oa["appid"])
    mp_info = component_call(sim, ctoken, path, authorizer_appid=mp["appid"])
    assert oa_info["authorizer_info"]["nick_name"] == "My OA"
    assert oa_info["authorizer_info"]["user_name"].startswith("gh_")
    assert oa_info["authorizer_info"]["service_type_info"] == {"id": 2}
    assert "MiniProgramInfo" not in oa_info["authorizer_info"]
    assert "MiniProgramInfo" in mp_info["authorizer_info"]
    assert mp_info["authorization_info"]["func_info"][0]["funcscope_category"] == {"id": 18}


def test_authorizer_list_pages_and_limits_count(sim):
    ctoken = component_token(sim)
    appids = [onboard(sim, ctoken)["appid"] for _ in range(3)]
    path = "/cgi-bin/component/api_get_authorizer_list"
    page = component_call(sim, ctoken, path, offset=1, count=1)
    assert page["total_count"] == 3 and [i["authorizer_appid"] for i in page["list"]] == [appids[1]]
    assert component_call(sim, ctoken, path, offset=0, count=501)["errcode"] == 47001


# -- faults, latency, counters ------------------------------------------------------------------------------


def test_injected_faults_apply_in_order_then_stop(sim):
    account = onboard(sim, component_token(sim))
    sim.inject_fault(UPLOADIMG, "errcode", count=2)
    sim.inject_fault(UPLOADIMG, "http_status", status=500)
    sim.inject_fault(UPLOADIMG, "not_json")
    sim.inject_fault(UPLOADIMG, "errcode", errcode=45009)

    assert upload(sim, account["access_token"])["errcode"] == -1
    assert upload(sim, account["access_token"])["errcode"] == -1
    server_error = requests.post(
        sim.url + UPLOADIMG,
        params={"access_token": account["access_token"]},
        files={"media": ("a.png", PNG, "image/png")},
        timeout=5,
    )
    assert server_error.status_code == 500
    not_json = requests.post(
        sim.url + UPLOADIMG,
        params={"access_token": account["access_token"]},
        files={"media": ("a.png", PNG, "image/png")},
        timeout=5,
    )
    assert not_json.status_code == 200
    with pytest.raises(ValueError):
        not_json.json()
    assert upload(sim, account["access_token"])["errcode"] == 45009
    assert upload(sim, account["access_token"])["errcode"] == 0
    # The simulator saw every attempt, faulted or not.
    assert [u["errcode"] for u in sim.uploads()] == [-1, -1, None, None, 45009, 0]
    assert [u["http_status"] for u in sim.uploads()][2] == 500


def test_delay_fault_makes_a_client_time_out(sim):
    account = onboard(sim, component_token(sim))
    sim.inject_fault(UPLOADIMG, "delay", seconds=0.4)
    with pytest.raises(requests.Timeout):
        upload(sim, account["access_token"], timeout=0.1)
    assert upload(sim, account["access_token"], timeout=2)["errcode"] == 0


def test_an_errcode_fault_may_carry_its_own_errmsg_and_names_the_callers_address(sim):
    """40164 and 61004 name the caller's address, as WeChat's do; an errmsg given with the fault replaces
    the usual text ("{ip}" in it is the address); without one, the usual text, as before."""
    account = onboard(sim, component_token(sim))
    sim.inject_fault(UPLOADIMG, "errcode", errcode=40164)
    sim.inject_fault(UPLOADIMG, "errcode", errcode=61004, errmsg="api ip not in whitelist {ip} hint: [ab12]")
    sim.inject_fault(UPLOADIMG, "errcode", errcode=45009)

    whitelist, custom, plain = (upload(sim, account["access_token"]) for _ in range(3))

    assert whitelist["errcode"] == 40164
    assert whitelist["errmsg"].startswith("invalid ip 127.0.0.1 ipv6 ::ffff:127.0.0.1, not in whitelist rid: ")
    assert custom["errcode"] == 61004
    assert custom["errmsg"].startswith("api ip not in whitelist 127.0.0.1 hint: [ab12] rid: ")
    assert plain["errmsg"].startswith("reach max api daily quota limit rid: ")
    with pytest.raises(SimulatorControlError):
        sim.inject_fault(UPLOADIMG, "errcode", errcode=40164, errmsg=7)


def test_random_failures_are_reproducible_with_a_seed(sim):
    account = onboard(sim, component_token(sim))

    def outcomes():
        sim.set_failure_rate(UPLOADIMG, 0.5, ["errcode", {"kind": "errcode", "errcode": 45011}], seed=7)
        return [upload(sim, account["access_token"])["errcode"] for _ in range(20)]

    first, second = outcomes(), outcomes()
    assert first == second
    assert 0 in first and (-1 in first or 45011 in first)
    sim.set_failure_rate(UPLOADIMG, 0, [])
    assert all(upload(sim, account["access_token"])["errcode"] == 0 for _ in range(5))


def test_latency_does_not_serialize_concurrent_requests(sim):
    account = onboard(sim, component_token(sim))
    sim.set_latency(UPLOADIMG, 0.2)
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=10) as pool:
        results = list(pool.map(lambda _: upload(sim, account["access_token"]), range(10)))
    elapsed = time.monotonic() - started
    assert all(r["errcode"] == 0 for r in results)
    assert 0.2 <= elapsed < 1.0


def test_counters_and_recorded_calls(sim):
    ctoken = component_token(sim)
    component_call(sim, ctoken, "/cgi-bin/component/api_create_preauthcode")
    component_call(sim, ctoken, "/cgi-bin/component/api_create_preauthcode")
    assert requests.post(sim.url + "/cgi-bin/nothing", timeout=5).status_code == 404
    counters = sim.counters()
    assert counters["/cgi-bin/component/api_component_token"] == 1
    assert counters["/cgi-bin/component/api_create_preauthcode"] == 2
    assert counters["/cgi-bin/nothing"] == 1
    calls = sim.calls(path="/cgi-bin/component/api_create_preauthcode")
    assert len(calls) == 2
    assert calls[0]["query"] == {"component_access_token": ctoken}
    assert calls[0]["json"] == {"component_appid": COMPONENT_APPID} and calls[0]["errcode"] == 0


def test_a_body_that_is_not_json_is_a_data_format_error(sim):
    response = requests.post(sim.url + "/cgi-bin/component/api_component_token", data=b"<xml/>", timeout=5)
    assert response.json()["errcode"] == 47001


# -- quota --------------------------------------------------------------------------------------------------


def test_daily_quota_and_clear_quota(sim):
    sim.configure(daily_limit=2)
    ctoken = component_token(sim)
    account = onboard(sim, ctoken)
    token = account["access_token"]
    assert [upload(sim, token)["errcode"] for _ in range(3)] == [0, 0, 45009]
    quota = api(sim, "/cgi-bin/openapi/quota/get", {"cgi_path": UPLOADIMG}, access_token=token)
    assert quota["quota"] == {"daily_limit": 2, "used": 2, "remain": 0}
    assert (
        api(sim, "/cgi-bin/openapi/quota/get", {"cgi_path": "/nope"}, access_token=token)["errcode"] == 76021
    )

    assert api(sim, "/cgi-bin/clear_quota", {"appid": "wxother"}, access_token=token)["errcode"] == 40013
    assert api(sim, "/cgi-bin/clear_quota", {"appid": account["appid"]}, access_token=token)["errcode"] == 0
    assert upload(sim, token)["errcode"] == 0
    for _ in range(9):
        assert (
            api(sim, "/cgi-bin/clear_quota", {"appid": account["appid"]}, access_token=token)["errcode"] == 0
        )
    assert (
        api(sim, "/cgi-bin/clear_quota", {"appid": account["appid"]}, access_token=token)["errcode"] == 48006
    )


def test_component_quota_is_cleared_with_the_secret(sim):
    sim.configure(daily_limit=1)
    ticket = sim.issue_ticket(COMPONENT_APPID)
    body = {
        "component_appid": COMPONENT_APPID,
        "component_appsecret": COMPONENT_SECRET,
        "component_verify_ticket": ticket,
    }
    assert "component_access_token" in api(sim, "/cgi-bin/component/api_component_token", body)
    assert api(sim, "/cgi-bin/component/api_component_token", body)["errcode"] == 45009
    v2 = "/cgi-bin/component/clear_quota/v2"
    assert api(sim, v2, {"component_appid": COMPONENT_APPID, "appsecret": "bad"})["errcode"] == 40125
    assert api(sim, v2, {"component_appid": COMPONENT_APPID, "appsecret": COMPONENT_SECRET})["errcode"] == 0
    assert "component_access_token" in api(sim, "/cgi-bin/component/api_component_token", body)


def test_quota_resets_the_next_day(sim):
    sim.configure(authorizer_token_ttl=10 * 86400)
    token = onboard(sim, component_token(sim))["access_token"]
    sim.configure(daily_limit=1)
    assert [upload(sim, token)["errcode"] for _ in range(2)] == [0, 45009]
    sim.advance_clock(86400)
    assert upload(sim, token)["errcode"] == 0


# -- stable_token -------------------------------------------------------------------------------------------


def test_stable_token_for_a_direct_account(sim):
    sim.register_direct_account("wxdirect000000001", "direct-secret", [11])
    body = {"grant_type": "client_credential", "appid": "wxdirect000000001", "secret": "direct-secret"}
    first = api(sim, "/cgi-bin/stable_token", body)
    assert first["expires_in"] == 7200
    assert api(sim, "/cgi-bin/stable_token", body)["access_token"] == first["access_token"]
    forced = api(sim, "/cgi-bin/stable_token", {**body, "force_refresh": True})
    assert forced["access_token"] != first["access_token"]
    assert upload(sim, forced["access_token"])["errcode"] == 0
    assert api(sim, "/cgi-bin/stable_token", {**body, "secret": "bad"})["errcode"] == 40125
    assert api(sim, "/cgi-bin/stable_token", {**body, "appid": "wxunknown"})["errcode"] == 40013


DIRECT_APPID = "wxdirect000000001"
STABLE_BODY = {"grant_type": "client_credential", "appid": DIRECT_APPID, "secret": "direct-secret"}


def stable(simulator, *, force: bool = False) -> dict:
    return api(simulator, "/cgi-bin/stable_token", {**STABLE_BODY, "force_refresh": force})


def test_stable_token_normal_call_renews_only_in_the_last_5_minutes_and_the_old_one_keeps_working(sim):
    sim.register_direct_account(DIRECT_APPID, "direct-secret", [11])
    first = stable(sim)

    # Until its last 5 minutes, a normal call answers the same token with its remaining time
    sim.advance_clock(7200 - 302)
    same = stable(sim)
    assert same["access_token"] == first["access_token"] and 300 <= same["expires_in"] <= 302

    # In its last 5 minutes a normal call renews it
    sim.advance_clock(4)
    renewed = stable(sim)
    assert renewed["access_token"] != first["access_token"] and renewed["expires_in"] == 7200
    assert stable(sim)["access_token"] == renewed["access_token"]
    # And the old token keeps working for the rest of its life, not a moment longer
    assert upload(sim, first["access_token"])["errcode"] == 0
    sim.advance_clock(300)
    assert upload(sim, first["access_token"])["errcode"] == 42001
    assert upload(sim, renewed["access_token"])["errcode"] == 0


def test_forced_stable_token_invalidates_the_old_one_at_once(sim):
    sim.register_direct_account(DIRECT_APPID, "direct-secret", [11])
    first = stable(sim)

    forced = stable(sim, force=True)

    assert forced["access_token"] != first["access_token"] and forced["expires_in"] == 7200
    assert upload(sim, first["access_token"])["errcode"] == 40001  # for everyone who shared it
    assert upload(sim, forced["access_token"])["errcode"] == 0
    # A normal call now answers the forced token: that is how another holder recovers
    assert stable(sim)["access_token"] == forced["access_token"]


def test_forced_refreshes_are_30_s_apart_and_20_a_day(sim):
    sim.register_direct_account(DIRECT_APPID, "direct-secret", [11])
    # Start just after a Beijing midnight so the whole day's budget is in front of us
    now = sim.advance_clock(0)["now"]
    sim.advance_clock(86400 - (now + 8 * 3600) % 86400 + 60)

    first = stable(sim, force=True)["access_token"]
    # A forced call less than 30 s after the last one does not refresh (and does not count)
    sim.advance_clock(29)
    assert stable(sim, force=True)["access_token"] == first
    tokens = {first}
    for _ in range(19):
        sim.advance_clock(30)
        tokens.add(stable(sim, force=True)["access_token"])
    assert len(tokens) == 20

    # The 21st forced refresh of the day is refused; normal calls still answer the current token
    sim.advance_clock(30)
    refused = stable(sim, force=True)
    assert refused["errcode"] == 45009
    assert stable(sim)["access_token"] in tokens
    # The next day forcing works again
    sim.advance_clock(86400)
    assert stable(sim, force=True)["access_token"] not in tokens


# -- authorization links on the simulator's own host ----------------------------------------------------------


def _pre_auth_code(simulator) -> str:
    ctoken = component_token(simulator)
    return component_call(simulator, ctoken, "/cgi-bin/component/api_create_preauthcode")["pre_auth_code"]


def test_mobile_link_opens_on_the_simulator_and_grants_only_the_sets_in_category_id_list(sim, receiver):
    # Given a mobile link built by our builder, asking only for set 11
    url = mobile_authorization_url(
        open_base=sim.url,
        component_appid=COMPONENT_APPID,
        pre_auth_code=_pre_auth_code(sim),
        redirect_uri="http://merchant.example/back/?state=signed",
        auth_type=1,
        category_id_list=[11],
    )
    assert urlsplit(url).path == "/wxaopen/safe/bindcomponent"

    # When the administrator opens it: only set 11 is offered, ticked
    page = requests.get(url, timeout=5)
    assert page.status_code == 200
    assert "name='func' value='11' checked" in page.text and "value='1'" not in page.text

    # And confirms, even with set 1 forced into the form
    confirm = requests.post(
        url, data={"appid": "wxmobile00000001", "func": ["1", "11"]}, allow_redirects=False, timeout=5
    )

    # Then only set 11 is granted
    assert confirm.status_code == 302
    back = parse_qs(urlsplit(confirm.headers["Location"]).query)
    assert back["state"] == ["signed"]
    info = query_auth(sim, component_token(sim), back["auth_code"][0])["authorization_info"]
    assert info["func_info"] == [{"funcscope_category": {"id": 11}}]
    assert receiver.wait_for("authorized")["AuthorizerAppid"] == "wxmobile00000001"


def test_pc_link_honours_category_id_list_too(sim):
    url = pc_authorization_url(
        mp_base=sim.url,
        component_appid=COMPONENT_APPID,
        pre_auth_code=_pre_auth_code(sim),
        redirect_uri="http://merchant.example/back/",
        category_id_list=[18, 11],
    )
    page = requests.get(url, timeout=5)
    assert "value='11' checked" in page.text and "value='18' checked" in page.text
    assert "value='2'" not in page.text

    confirm = requests.post(
        url, data={"appid": "wxpc0000000001", "func": ["2", "11"]}, allow_redirects=False, timeout=5
    )

    assert confirm.status_code == 302
    assert sim.authorizer("wxpc0000000001")["func_info"] == [11]


def test_mobile_page_needs_action_and_no_scan_and_a_well_formed_category_id_list(sim):
    params = {
        "component_appid": COMPONENT_APPID,
        "pre_auth_code": _pre_auth_code(sim),
        "redirect_uri": "http://x.example/cb",
    }
    mobile = sim.url + "/wxaopen/safe/bindcomponent"
    good = {"action": "bindcomponent", "no_scan": "1", **params}

    assert requests.get(mobile, params=good, timeout=5).status_code == 200
    assert requests.get(mobile, params=params, timeout=5).status_code == 400
    assert requests.get(mobile, params={**good, "no_scan": "0"}, timeout=5).status_code == 400
    bad_list = requests.get(mobile, params={**good, "category_id_list": "11,18"}, timeout=5)
    assert bad_list.status_code == 400 and "category_id_list" in bad_list.text


def test_the_page_never_offers_a_set_the_platform_does_not_hold(sim):
    sim.withhold_permission_sets(COMPONENT_APPID, [11])
    url = pc_authorization_url(
        mp_base=sim.url,
        component_appid=COMPONENT_APPID,
        pre_auth_code=_pre_auth_code(sim),
        redirect_uri="http://x.example/cb",
    )

    page = requests.get(url, timeout=5)
    assert "value='1' checked" in page.text and "value='11'" not in page.text
    confirm = requests.post(
        url, data={"appid": "wxheld000000001", "func": ["1", "11"]}, allow_redirects=False, timeout=5
    )

    assert confirm.status_code == 302
    assert sim.authorizer("wxheld000000001")["func_info"] == [1]
    # A link asking only for a set the platform does not hold has nothing to offer
    only_11 = pc_authorization_url(
        mp_base=sim.url,
        component_appid=COMPONENT_APPID,
        pre_auth_code=_pre_auth_code(sim),
        redirect_uri="http://x.example/cb",
        category_id_list=[11],
    )
    refused = requests.get(only_11, timeout=5)
    assert refused.status_code == 400 and "none of the requested permission sets" in refused.text


# -- control API --------------------------------------------------------------------------------------------


def test_control_api_reports_bad_requests(simulator):
    with pytest.raises(SimulatorControlError) as unknown:
        simulator.authorize("wxnocomponent")
    assert unknown.value.status_code == 404
    with pytest.raises(SimulatorControlError):
        simulator.configure(no_such_setting=1)
    with pytest.raises(SimulatorControlError):
        simulator.inject_fault("/x", "explode")


def test_reset_forgets_everything(sim):
    component_token(sim)
    sim.configure(daily_limit=5)
    sim.reset()
    assert sim.counters() == {}
    assert sim.configure()["daily_limit"] == 100000
    assert (
        api(
            sim,
            "/cgi-bin/component/api_component_token",
            {
                "component_appid": COMPONENT_APPID,
                "component_appsecret": COMPONENT_SECRET,
                "component_verify_ticket": "x",
            },
        )["errcode"]
        == 61011
    )


# -- messages on behalf of authorizers, the full-network release check ----------------------------------------


class MessageEndpoint:
    """A per-authorizer message URL answering WeChat's release check; ``mode`` breaks it on purpose:
    "plaintext" replies unencrypted, "wrong_content" replies the wrong text, "no_api" never sends the
    customer-service message."""

    def __init__(self, simulator, mode: str = "correct") -> None:
        self.simulator = simulator
        self.mode = mode
        self.crypto = WXBizMsgCrypt(TOKEN, AES_KEY, COMPONENT_APPID)
        self.received: list[tuple[str, dict[str, str], dict[str, str]]] = []
        self.workers: list[threading.Thread] = []
        self._server = make_server("127.0.0.1", 0, self._app, threaded=True)
        self.url = f"http://127.0.0.1:{self._server.port}/authorizers/$APPID$/events/"
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def _app(self, environ, start_response):
        request = Request(environ)
        args = request.args
        fields = parse_xml_fields(
            self.crypto.decrypt_message(
                request.get_data(),
                msg_signature=args["msg_signature"],
                timestamp=args["timestamp"],
                nonce=args["nonce"],
            )
        )
        self.received.append((request.path, args.to_dict(), fields))
        content = fields.get("Content", "")
        if content == "TESTCOMPONENT_MSG_TYPE_TEXT":
            text = "hello" if self.mode == "wrong_content" else "TESTCOMPONENT_MSG_TYPE_TEXT_callback"
            reply = (
                f"<xml><ToUserName><![CDATA[{fields['FromUserName']}]]></ToUserName>"
                f"<FromUserName><![CDATA[{fields['ToUserName']}]]></FromUserName>"
                f"<CreateTime>{int(time.time())}</CreateTime><MsgType><![CDATA[text]]></MsgType>"
                f"<Content><![CDATA[{text}]]></Content></xml>"
            )
            if self.mode != "plaintext":
                reply = self.crypto.encrypt_message(reply, timestamp=args["timestamp"], nonce=args["nonce"])
            return Response(reply, content_type="text/xml")(environ, start_response)
        if content.startswith("QUERY_AUTH_CODE:") and self.mode != "no_api":
            code = content.removeprefix("QUERY_AUTH_CODE:")
            worker = threading.Thread(target=self._answer_by_api, args=(code, fields["FromUserName"]))
            worker.start()
            self.workers.append(worker)
        return Response("", content_type="text/plain")(environ, start_response)

    def _answer_by_api(self, code: str, openid: str) -> None:
        info = query_auth(self.simulator, component_token(self.simulator), code)["authorization_info"]
        api(
            self.simulator,
            "/cgi-bin/message/custom/send",
            {"touser": openid, "msgtype": "text", "text": {"content": code + "_from_api"}},
            access_token=info["authorizer_access_token"],
        )

    def stop(self) -> None:
        for worker in self.workers:
            worker.join(timeout=5)
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def endpoint_factory(sim):
    made = []

    def make(mode: str = "correct") -> MessageEndpoint:
        made.append(MessageEndpoint(sim, mode))
        return made[-1]

    yield make
    for endpoint in made:
        endpoint.stop()


def test_release_check_passes_against_a_correct_message_endpoint(sim, endpoint_factory, receiver):
    endpoint = endpoint_factory()

    report = sim.run_release_test(COMPONENT_APPID, url=endpoint.url)

    assert report["passed"] is True, report
    assert [s["name"] for s in report["steps"]] == [
        "component_verify_ticket",
        "authorized_event",
        "text_reply",
        "api_reply",
    ]
    # The dedicated test account was authorized, its code pushed in an authorized event
    assert (report["authorizer_appid"], report["user_name"]) == ("wx570bc396a51b8ff8", "gh_3c884a361561")
    event = receiver.wait_for("authorized")
    assert event["AuthorizerAppid"] == "wx570bc396a51b8ff8"
    assert event["AuthorizationCode"] == report["query_auth_code"]
    # Both messages went, encrypted, to that account's message URL, from the same fan
    paths = {path for path, _args, _fields in endpoint.received}
    assert paths == {"/authorizers/wx570bc396a51b8ff8/events/"}
    contents = [fields["Content"] for _path, _args, fields in endpoint.received]
    assert contents == ["TESTCOMPONENT_MSG_TYPE_TEXT", "QUERY_AUTH_CODE:" + report["query_auth_code"]]
    for _path, args, fields in endpoint.received:
        assert args["encrypt_type"] == "aes" and args["openid"] == report["openid"]
        assert fields["ToUserName"] == "gh_3c884a361561" and fields["FromUserName"] == report["openid"]
    (sent,) = sim.custom_messages()
    assert sent["appid"] == "wx570bc396a51b8ff8" and sent["touser"] == report["openid"]
    assert sent["content"] == report["query_auth_code"] + "_from_api"


@pytest.mark.parametrize(
    ("mode", "failed_step", "why"),
    [
        ("plaintext", "text_reply", "InvalidXml"),
        ("wrong_content", "text_reply", "reply fields differ"),
        ("no_api", "api_reply", "no message/custom/send"),
    ],
)
def test_release_check_reports_what_a_broken_endpoint_gets_wrong(sim, endpoint_factory, mode, failed_step, why):
    endpoint = endpoint_factory(mode)

    report = sim.run_release_test(COMPONENT_APPID, url=endpoint.url, wait=0.3)

    assert report["passed"] is False
    failed = [s for s in report["steps"] if not s["passed"]]
    assert [s["name"] for s in failed] == [failed_step]
    assert why in failed[0]["detail"]


def test_release_check_of_a_mini_program_has_only_the_api_step(sim, endpoint_factory):
    endpoint = endpoint_factory()

    report = sim.run_release_test(COMPONENT_APPID, account_type="mini_program", url=endpoint.url)

    assert report["passed"] is True, report
    assert report["authorizer_appid"] == "wxd101a85aa106f53e"
    assert [s["name"] for s in report["steps"]][2:] == ["api_reply"]


def test_release_check_skips_the_message_steps_without_the_message_permission_set(sim, endpoint_factory):
    endpoint = endpoint_factory()
    sim.withhold_permission_sets(COMPONENT_APPID, [1])

    report = sim.run_release_test(COMPONENT_APPID, url=endpoint.url)

    assert report["message_steps_apply"] is False and report["passed"] is True
    assert [s["name"] for s in report["steps"]] == ["component_verify_ticket", "authorized_event"]
    assert endpoint.received == []


def test_send_message_uses_the_registered_message_url_and_decrypts_the_reply(simulator, endpoint_factory, receiver):
    endpoint = endpoint_factory()
    simulator.register_component(
        COMPONENT_APPID, COMPONENT_SECRET, TOKEN, AES_KEY, events_url=receiver.url, messages_url=endpoint.url
    )
    account = simulator.authorize(COMPONENT_APPID, func_info=[1, 11])

    result = simulator.send_message(account["authorizer_appid"], "TESTCOMPONENT_MSG_TYPE_TEXT", from_user="ofan1")

    assert result["url"] == endpoint.url.replace("$APPID$", account["authorizer_appid"])
    assert result["status_code"] == 200 and result["reply_error"] is None
    assert result["reply"]["Content"] == "TESTCOMPONENT_MSG_TYPE_TEXT_callback"
    assert result["reply"]["ToUserName"] == "ofan1"
    assert simulator.messages()[-1]["url"] == result["url"]
    with pytest.raises(SimulatorControlError):
        simulator.run_release_test(COMPONENT_APPID, account_type="service_account")


def test_custom_send_checks_the_token_and_the_message(sim):
    token = onboard(sim, component_token(sim))["access_token"]
    path = "/cgi-bin/message/custom/send"
    text = {"touser": "ofan", "msgtype": "text", "text": {"content": "hi"}}

    assert api(sim, path, text, access_token="nope")["errcode"] == 40001
    assert api(sim, path, {**text, "touser": ""}, access_token=token)["errcode"] == 40003
    assert api(sim, path, {**text, "text": {"content": 5}}, access_token=token)["errcode"] == 47001
    assert api(sim, path, {**text, "msgtype": "image"}, access_token=token)["errcode"] == 47001
    assert api(sim, path, text, access_token=token) == {"errcode": 0, "errmsg": "ok"}
    assert [m["content"] for m in sim.custom_messages()] == ["hi"]


# -- the control API's token (staging) ----------------------------------------------------------------------


def test_the_control_api_needs_the_bearer_token_when_one_is_set():
    from openplatform.wechat.simulator import SimulatorControl, SimulatorServer

    # given a simulator started with a control token, as on a staging network
    with SimulatorServer(control_token="staging-secret") as server:
        control = f"{server.url}/_sim/"
        # then the control API refuses callers without it, or with another one
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "staging-secret"},
                        {"Authorization": "Basic staging-secret"}):
            refused = requests.post(control + "reset", headers=headers, timeout=5)
            assert refused.status_code == 401, headers
            assert refused.headers["WWW-Authenticate"].startswith("Bearer")
            assert "staging-secret" not in refused.text
        assert requests.get(control + "state", timeout=5).status_code == 401
        # and a client holding the token works
        with pytest.raises(SimulatorControlError) as refusal:
            SimulatorControl(server.url).counters()
        assert refusal.value.status_code == 401
        sim = SimulatorControl(server.url, token="staging-secret")
        sim.register_component(COMPONENT_APPID, COMPONENT_SECRET, TOKEN, AES_KEY)
        assert sim.issue_ticket(COMPONENT_APPID)
        # while the WeChat API and the authorization page need no control token
        answer = requests.post(server.url + "/cgi-bin/component/api_component_token",
                               json={"component_appid": COMPONENT_APPID}, timeout=5)
        assert answer.status_code == 200 and answer.json()["errcode"] != 0
        page = requests.get(server.url + "/cgi-bin/componentloginpage", timeout=5)
        assert page.status_code != 401


def test_without_a_token_the_control_api_is_open_on_loopback():
    from openplatform.wechat.simulator import SimulatorControl, SimulatorServer

    with SimulatorServer() as server:  # the local run (`make run`)
        assert SimulatorControl(server.url).counters() == {}


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.10", "::", "simulator"])
def test_the_simulator_refuses_to_listen_beyond_loopback_without_a_token(host):
    from openplatform.wechat.simulator.server import UnsafeBind, check_bind, main

    with pytest.raises(UnsafeBind, match="SIMULATOR_CONTROL_TOKEN"):
        check_bind(host, None)
    check_bind(host, "a-token")  # fine with one
    for loopback in ("127.0.0.1", "::1", "[::1]", "localhost"):
        check_bind(loopback, None)
    # the CLI stops before binding anything
    with pytest.raises(SystemExit) as stopped:
        main(["--host", host, "--port", "0", "--control-token", ""])
    assert stopped.value.code == 2


def test_the_management_command_refuses_beyond_loopback_without_the_setting(settings):
    from django.core.management import CommandError, call_command

    settings.SIMULATOR_CONTROL_TOKEN = ""
    with pytest.raises(CommandError, match="SIMULATOR_CONTROL_TOKEN"):
        call_command("wechat_simulator", "--host", "0.0.0.0", "--port", "0", "--ticket-interval", "0")
