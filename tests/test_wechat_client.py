"""openplatform.wechat.client against the WeChat simulator over real HTTP (no mocks of our own code).

Given/when/then: the simulator is the given (state, faults), the client call is the when, and the typed
result, exception class and the simulator's records (counters, calls, uploads) are the then.
"""

from __future__ import annotations

import ast
import hashlib
import io
import json
import logging
import random
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image

from openplatform.wechat.client import (
    AccessToken,
    AuthorizationInfo,
    AuthorizerInfo,
    AuthorizerListPage,
    AuthorizerToken,
    ComponentToken,
    PreAuthCode,
    Quota,
    RetryPolicy,
    UploadResult,
    WeChatClient,
    sniff_image,
)
from openplatform.wechat.errors import (
    AccountLacksApi,
    AuthCodeExpired,
    AuthCodeInvalid,
    ConfigurationError,
    InvalidPayload,
    NetworkError,
    NotAuthorized,
    PermissionDenied,
    PermissionSetNotGranted,
    QuotaExceeded,
    RateLimited,
    RefreshTokenInvalid,
    TicketInvalid,
    TokenInvalid,
    TransientError,
    WeChatError,
)

COMPONENT_APPID = "wxcomponenttest01"
COMPONENT_SECRET = "component-appsecret-do-not-log"
COMPONENT_MSG_TOKEN = "msgtoken"
COMPONENT_AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
DIRECT_APPID = "wxdirectaccount01"
DIRECT_SECRET = "direct-secret-do-not-log"

UPLOADIMG = "/cgi-bin/media/uploadimg"
COMPONENT_TOKEN_PATH = "/cgi-bin/component/api_component_token"
LIST_PATH = "/cgi-bin/component/api_get_authorizer_list"
QUOTA_PATH = "/cgi-bin/openapi/quota/get"
FAST = RetryPolicy(base_delay=0.01)


def image_bytes(fmt: str = "PNG", size: tuple[int, int] = (16, 12)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buffer, format=fmt)
    return buffer.getvalue()


def noisy_png_over_1mb() -> bytes:
    rng = random.Random(7)
    side = 700  # 700*700*3 random bytes do not compress: the PNG is ~1.5 MB
    image = Image.frombytes("RGB", (side, side), rng.randbytes(side * side * 3))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    data = buffer.getvalue()
    assert len(data) > 1_048_576
    return data


# --- fixtures -----------------------------------------------------------------------------------------


@pytest.fixture
def registered(simulator):
    """The simulator with our component registered (no events URL: pushes are not under test here)."""
    simulator.register_component(COMPONENT_APPID, COMPONENT_SECRET, COMPONENT_MSG_TOKEN, COMPONENT_AES_KEY)
    return simulator


@pytest.fixture
def wechat(simulator):
    client = WeChatClient(api_base=simulator.url, timeout=5.0, retry=FAST)
    yield client
    client.close()


@pytest.fixture
def component_access_token(registered, wechat) -> str:
    ticket = registered.issue_ticket(COMPONENT_APPID)
    return wechat.component_token(
        component_appid=COMPONENT_APPID, component_appsecret=COMPONENT_SECRET, verify_ticket=ticket
    ).access_token


@pytest.fixture
def authorize(registered, wechat, component_access_token):
    """Authorize an account in the simulator and exchange its code: returns (grant, AuthorizationInfo)."""

    def make(**kwargs):
        grant = registered.authorize(COMPONENT_APPID, **kwargs)
        info = wechat.query_auth(
            component_access_token=component_access_token,
            component_appid=COMPONENT_APPID,
            authorization_code=grant["auth_code"],
        )
        return grant, info

    return make


@pytest.fixture
def authorizer_token(authorize) -> str:
    _grant, info = authorize(func_info=[1, 11])
    return info.authorizer_access_token


def count(simulator, path: str) -> int:
    return simulator.counters().get(path, 0)


# --- every endpoint, end to end -----------------------------------------------------------------------


def test_every_endpoint_end_to_end(registered, wechat):
    # ticket push restart, then ticket -> component token
    assert (
        wechat.start_push_ticket(component_appid=COMPONENT_APPID, component_secret=COMPONENT_SECRET) is None
    )
    ticket = registered.issue_ticket(COMPONENT_APPID)
    token = wechat.component_token(
        component_appid=COMPONENT_APPID, component_appsecret=COMPONENT_SECRET, verify_ticket=ticket
    )
    assert isinstance(token, ComponentToken)
    assert token.access_token and token.expires_in == 7200
    cat = token.access_token

    pre = wechat.create_preauthcode(component_access_token=cat, component_appid=COMPONENT_APPID)
    assert isinstance(pre, PreAuthCode)
    assert pre.pre_auth_code.startswith("preauthcode@@@") and pre.expires_in == 600

    # authorization code -> authorizer tokens
    grant = registered.authorize(COMPONENT_APPID, func_info=[1, 11], nick_name="Acme OA")
    auth = wechat.query_auth(
        component_access_token=cat, component_appid=COMPONENT_APPID, authorization_code=grant["auth_code"]
    )
    assert isinstance(auth, AuthorizationInfo)
    assert auth.authorizer_appid == grant["authorizer_appid"]
    assert auth.authorizer_refresh_token == grant["refresh_token"]
    assert auth.authorizer_access_token and auth.expires_in == 7200
    assert auth.func_info == [1, 11]
    appid = auth.authorizer_appid

    refreshed = wechat.authorizer_token(
        component_access_token=cat,
        component_appid=COMPONENT_APPID,
        authorizer_appid=appid,
        authorizer_refresh_token=auth.authorizer_refresh_token,
    )
    assert isinstance(refreshed, AuthorizerToken)
    assert refreshed.access_token and refreshed.access_token != auth.authorizer_access_token
    assert refreshed.refresh_token == grant["refresh_token"]
    assert refreshed.expires_in == 7200

    info = wechat.get_authorizer_info(
        component_access_token=cat, component_appid=COMPONENT_APPID, authorizer_appid=appid
    )
    assert isinstance(info, AuthorizerInfo)
    assert info.appid == appid
    assert info.nick_name == "Acme OA"
    assert info.user_name.startswith("gh_")
    assert info.principal_name and info.head_img.startswith("http")
    assert info.account_type == "official_account"
    assert (info.service_type, info.verify_type, info.account_status) == (2, 0, 1)
    assert info.refresh_token == grant["refresh_token"]
    assert info.func_info == [1, 11]
    assert grant["refresh_token"] not in json.dumps(info.raw)

    # list paging: 5 authorizers with page_size 2 -> pages at offsets 0, 2, 4
    others = [registered.authorize(COMPONENT_APPID)["authorizer_appid"] for _ in range(4)]
    items = list(
        wechat.iter_authorizer_list(component_access_token=cat, component_appid=COMPONENT_APPID, page_size=2)
    )
    assert sorted(i.appid for i in items) == sorted([appid, *others])
    assert all(i.refresh_token and i.auth_time for i in items)
    offsets = [call["json"]["offset"] for call in registered.calls(LIST_PATH)]
    assert offsets == [0, 2, 4]
    page = wechat.get_authorizer_list(
        component_access_token=cat, component_appid=COMPONENT_APPID, offset=4, count=2
    )
    assert isinstance(page, AuthorizerListPage)
    assert page.total_count == 5 and len(page.items) == 1

    # uploads with the authorizer token: PNG and JPEG, named and typed from their bytes
    png, jpeg = image_bytes("PNG"), image_bytes("JPEG")
    results = [wechat.upload_image(access_token=refreshed.access_token, data=data) for data in (png, jpeg)]
    for result in results:
        assert isinstance(result, UploadResult)
        assert result.url.startswith("http://mmbiz.qpic.cn/")
        assert result.http_status == 200 and result.latency_ms > 0
    uploads = registered.uploads()
    assert [(u["part_name"], u["filename"], u["content_type"]) for u in uploads] == [
        ("media", "image.png", "image/png"),
        ("media", "image.jpg", "image/jpeg"),
    ]
    assert [u["sha256"] for u in uploads] == [hashlib.sha256(d).hexdigest() for d in (png, jpeg)]
    assert [u["size"] for u in uploads] == [len(png), len(jpeg)]

    # quota read, cleared with the authorizer's own token, and by secret (v2)
    quota = wechat.get_quota(access_token=refreshed.access_token, cgi_path=UPLOADIMG)
    assert isinstance(quota, Quota)
    assert (quota.daily_limit, quota.used, quota.remain) == (100000, 2, 99998)
    assert wechat.clear_quota(access_token=refreshed.access_token, appid=appid) is None
    assert wechat.get_quota(access_token=refreshed.access_token, cgi_path=UPLOADIMG).used == 0
    assert (
        wechat.component_clear_quota_v2(component_appid=COMPONENT_APPID, appsecret=COMPONENT_SECRET) is None
    )
    wechat.component_clear_quota_v2(component_appid=COMPONENT_APPID, appsecret=COMPONENT_SECRET, appid=appid)
    clear_v2_bodies = [c["json"] for c in registered.calls("/cgi-bin/component/clear_quota/v2")]
    assert [b.get("appid") for b in clear_v2_bodies] == [None, appid]

    # an account calling with its own secret
    registered.register_direct_account(DIRECT_APPID, DIRECT_SECRET, [11])
    stable = wechat.stable_token(appid=DIRECT_APPID, secret=DIRECT_SECRET)
    assert isinstance(stable, AccessToken) and stable.access_token and stable.expires_in > 0
    assert wechat.stable_token(appid=DIRECT_APPID, secret=DIRECT_SECRET).access_token == stable.access_token
    forced = wechat.stable_token(appid=DIRECT_APPID, secret=DIRECT_SECRET, force_refresh=True)
    assert forced.access_token != stable.access_token
    body = registered.calls("/cgi-bin/stable_token")[-1]["json"]
    assert body == {
        "grant_type": "client_credential",
        "appid": DIRECT_APPID,
        "secret": DIRECT_SECRET,
        "force_refresh": True,
    }
    assert wechat.upload_image(access_token=forced.access_token, data=png).url


def test_component_calls_send_the_token_as_component_access_token(registered, wechat, component_access_token):
    wechat.create_preauthcode(component_access_token=component_access_token, component_appid=COMPONENT_APPID)

    [call] = registered.calls("/cgi-bin/component/api_create_preauthcode")
    assert call["query"] == {"component_access_token": component_access_token}


def test_account_calls_send_the_token_as_access_token(registered, wechat, authorizer_token):
    wechat.get_quota(access_token=authorizer_token, cgi_path=UPLOADIMG)
    wechat.upload_image(access_token=authorizer_token, data=image_bytes())

    assert registered.calls(QUOTA_PATH)[0]["query"] == {"access_token": authorizer_token}
    assert registered.calls(UPLOADIMG)[0]["query"] == {"access_token": authorizer_token}


def test_mini_program_is_recognised_by_its_mini_program_info(
    registered, wechat, component_access_token, authorize
):
    grant, auth = authorize(account_type="mini_program")

    info = wechat.get_authorizer_info(
        component_access_token=component_access_token,
        component_appid=COMPONENT_APPID,
        authorizer_appid=grant["authorizer_appid"],
    )

    assert info.account_type == "mini_program"
    assert info.func_info == auth.func_info == [18]


def test_iter_authorizer_list_with_no_authorizers_makes_one_call(registered, wechat, component_access_token):
    items = list(
        wechat.iter_authorizer_list(
            component_access_token=component_access_token, component_appid=COMPONENT_APPID, page_size=2
        )
    )

    assert items == []
    assert count(registered, LIST_PATH) == 1


def test_authorizer_list_count_is_bounded_before_any_call(registered, wechat, component_access_token):
    with pytest.raises(ValueError):
        wechat.get_authorizer_list(
            component_access_token=component_access_token, component_appid=COMPONENT_APPID, count=501
        )
    assert count(registered, LIST_PATH) == 0


def test_revoked_authorizer_disappears_from_the_list(registered, wechat, component_access_token, authorize):
    kept, _ = authorize()
    gone, _ = authorize()
    registered.revoke(gone["authorizer_appid"])

    items = list(
        wechat.iter_authorizer_list(
            component_access_token=component_access_token, component_appid=COMPONENT_APPID
        )
    )

    assert [i.appid for i in items] == [kept["authorizer_appid"]]


# --- every error class, produced for real by the simulator --------------------------------------------


def test_invalidated_authorizer_token_raises_token_invalid_40001_without_retry(registered, wechat, authorize):
    grant, auth = authorize()
    registered.invalidate_tokens(appid=grant["authorizer_appid"], errcode=40001)

    with pytest.raises(TokenInvalid) as caught:
        wechat.upload_image(access_token=auth.authorizer_access_token, data=image_bytes())

    assert caught.value.errcode == 40001
    assert caught.value.path == UPLOADIMG
    assert count(registered, UPLOADIMG) == 1


def test_expired_tokens_raise_token_invalid_42001(
    registered, wechat, component_access_token, authorizer_token
):
    registered.advance_clock(7201)

    with pytest.raises(TokenInvalid) as on_component:
        wechat.create_preauthcode(
            component_access_token=component_access_token, component_appid=COMPONENT_APPID
        )
    with pytest.raises(TokenInvalid) as on_authorizer:
        wechat.get_quota(access_token=authorizer_token, cgi_path=UPLOADIMG)

    assert on_component.value.errcode == on_authorizer.value.errcode == 42001


def test_superseded_refresh_token_raises_refresh_token_invalid(
    registered, wechat, component_access_token, authorize
):
    grant, auth = authorize()
    registered.invalidate_refresh_token(grant["authorizer_appid"])

    with pytest.raises(RefreshTokenInvalid) as caught:
        wechat.authorizer_token(
            component_access_token=component_access_token,
            component_appid=COMPONENT_APPID,
            authorizer_appid=grant["authorizer_appid"],
            authorizer_refresh_token=auth.authorizer_refresh_token,
        )

    assert caught.value.errcode == 61023
    # Recovery path (docs/wechat-protocol.md §7): the list hands out the current refresh token.
    [item] = wechat.iter_authorizer_list(
        component_access_token=component_access_token, component_appid=COMPONENT_APPID
    )
    assert item.refresh_token == registered.authorizer(grant["authorizer_appid"])["refresh_token"]
    assert item.refresh_token != auth.authorizer_refresh_token


def test_revoked_account_raises_not_authorized(registered, wechat, component_access_token, authorize):
    grant, _ = authorize()
    registered.revoke(grant["authorizer_appid"])

    with pytest.raises(NotAuthorized) as caught:
        wechat.get_authorizer_info(
            component_access_token=component_access_token,
            component_appid=COMPONENT_APPID,
            authorizer_appid=grant["authorizer_appid"],
        )

    assert caught.value.errcode == 61003


def test_reused_authorization_code_raises_auth_code_invalid(registered, wechat, component_access_token):
    grant = registered.authorize(COMPONENT_APPID)
    wechat.query_auth(
        component_access_token=component_access_token,
        component_appid=COMPONENT_APPID,
        authorization_code=grant["auth_code"],
    )

    with pytest.raises(AuthCodeInvalid) as caught:
        wechat.query_auth(
            component_access_token=component_access_token,
            component_appid=COMPONENT_APPID,
            authorization_code=grant["auth_code"],
        )

    assert caught.value.errcode == 61009


def test_expired_authorization_code_raises_auth_code_expired_a_kind_of_auth_code_invalid(
    registered, wechat
):
    grant = registered.authorize(COMPONENT_APPID)
    registered.advance_clock(3601)
    ticket = registered.issue_ticket(COMPONENT_APPID)
    ctoken = wechat.component_token(
        component_appid=COMPONENT_APPID, component_appsecret=COMPONENT_SECRET, verify_ticket=ticket
    ).access_token

    with pytest.raises(AuthCodeInvalid) as caught:
        wechat.query_auth(
            component_access_token=ctoken, component_appid=COMPONENT_APPID, authorization_code=grant["auth_code"]
        )

    assert type(caught.value) is AuthCodeExpired
    assert caught.value.errcode == 61010 and caught.value.retryable is False
    assert count(registered, "/cgi-bin/component/api_query_auth") == 1


def test_upload_without_an_upload_permission_set_raises_permission_set_not_granted(registered, wechat, authorize):
    _grant, auth = authorize(func_info=[2, 7])

    with pytest.raises(PermissionDenied) as caught:
        wechat.upload_image(access_token=auth.authorizer_access_token, data=image_bytes())

    assert type(caught.value) is PermissionSetNotGranted
    assert caught.value.errcode == 61007
    assert count(registered, UPLOADIMG) == 1


def test_upload_by_an_account_lacking_the_api_raises_account_lacks_api(registered, wechat, authorize):
    grant, auth = authorize(func_info=[1, 11])
    registered.set_account_lacks_api(grant["authorizer_appid"], path=UPLOADIMG)

    with pytest.raises(PermissionDenied) as caught:
        wechat.upload_image(access_token=auth.authorizer_access_token, data=image_bytes())

    assert type(caught.value) is AccountLacksApi
    assert caught.value.errcode == 48001
    assert count(registered, UPLOADIMG) == 1


def test_a_normal_stable_token_call_recovers_from_someone_elses_forced_refresh(registered, wechat):
    registered.register_direct_account(DIRECT_APPID, DIRECT_SECRET, [11])
    ours = wechat.stable_token(appid=DIRECT_APPID, secret=DIRECT_SECRET)
    # The merchant's own server forces a new token: ours dies at once
    theirs = wechat.stable_token(appid=DIRECT_APPID, secret=DIRECT_SECRET, force_refresh=True)
    with pytest.raises(TokenInvalid):
        wechat.upload_image(access_token=ours.access_token, data=image_bytes())

    # A normal call answers the current token, without forcing (and killing) anyone else's
    recovered = wechat.stable_token(appid=DIRECT_APPID, secret=DIRECT_SECRET)

    assert recovered.access_token == theirs.access_token
    assert wechat.upload_image(access_token=recovered.access_token, data=image_bytes()).url
    assert [c["json"]["force_refresh"] for c in registered.calls("/cgi-bin/stable_token")] == [False, True, False]


def test_forced_stable_token_beyond_the_daily_limit_raises_quota_exceeded(registered, wechat):
    registered.register_direct_account(DIRECT_APPID, DIRECT_SECRET, [11])
    registered.configure(stable_force_daily_limit=1)
    now = registered.advance_clock(0)["now"]
    registered.advance_clock(86400 - (now + 8 * 3600) % 86400 + 60)  # just after a Beijing midnight
    wechat.stable_token(appid=DIRECT_APPID, secret=DIRECT_SECRET, force_refresh=True)
    registered.advance_clock(31)

    with pytest.raises(QuotaExceeded) as caught:
        wechat.stable_token(appid=DIRECT_APPID, secret=DIRECT_SECRET, force_refresh=True)

    assert caught.value.errcode == 45009
    assert count(registered, "/cgi-bin/stable_token") == 2  # never retried


def test_image_over_1mb_raises_invalid_payload_40009(registered, wechat, authorizer_token):
    with pytest.raises(InvalidPayload) as caught:
        wechat.upload_image(access_token=authorizer_token, data=noisy_png_over_1mb())

    assert caught.value.errcode == 40009
    assert count(registered, UPLOADIMG) == 1


@pytest.mark.parametrize("errcode", [40005, 44001])
def test_payload_errcodes_raise_invalid_payload_without_retry(registered, wechat, authorizer_token, errcode):
    # The client never sends a non-image or an empty part (see the ValueError test), so the simulator's
    # fault injection stands in for WeChat rejecting an image it does not like.
    registered.inject_fault(UPLOADIMG, "errcode", errcode=errcode)

    with pytest.raises(InvalidPayload) as caught:
        wechat.upload_image(access_token=authorizer_token, data=image_bytes())

    assert caught.value.errcode == errcode
    assert count(registered, UPLOADIMG) == 1


@pytest.mark.parametrize("data", [b"", b"GIF89a....", b"not an image at all"])
def test_non_jpeg_png_data_is_refused_before_any_call(registered, wechat, authorizer_token, data):
    with pytest.raises(ValueError):
        wechat.upload_image(access_token=authorizer_token, data=data)

    assert count(registered, UPLOADIMG) == 0


def test_daily_quota_raises_quota_exceeded_without_retry(registered, wechat, authorizer_token):
    registered.configure(daily_limit=1)
    wechat.upload_image(access_token=authorizer_token, data=image_bytes())

    with pytest.raises(QuotaExceeded) as caught:
        wechat.upload_image(access_token=authorizer_token, data=image_bytes())

    assert caught.value.errcode == 45009
    assert count(registered, UPLOADIMG) == 2
    assert wechat.get_quota(access_token=authorizer_token, cgi_path=UPLOADIMG).remain == 0


def test_unknown_ticket_raises_ticket_invalid_61006(registered, wechat):
    with pytest.raises(TicketInvalid) as caught:
        wechat.component_token(
            component_appid=COMPONENT_APPID,
            component_appsecret=COMPONENT_SECRET,
            verify_ticket="ticket@@@bogus",
        )

    assert caught.value.errcode == 61006
    assert count(registered, COMPONENT_TOKEN_PATH) == 1


def test_ticket_older_than_12_hours_raises_ticket_invalid_61005(registered, wechat):
    ticket = registered.issue_ticket(COMPONENT_APPID)
    registered.advance_clock(12 * 3600)

    with pytest.raises(TicketInvalid) as caught:
        wechat.component_token(
            component_appid=COMPONENT_APPID, component_appsecret=COMPONENT_SECRET, verify_ticket=ticket
        )

    assert caught.value.errcode == 61005


def test_wrong_secrets_raise_configuration_error_40125(registered, wechat):
    registered.register_direct_account(DIRECT_APPID, DIRECT_SECRET, [11])
    ticket = registered.issue_ticket(COMPONENT_APPID)

    with pytest.raises(ConfigurationError) as on_token:
        wechat.component_token(
            component_appid=COMPONENT_APPID, component_appsecret="wrong", verify_ticket=ticket
        )
    with pytest.raises(ConfigurationError) as on_push:
        wechat.start_push_ticket(component_appid=COMPONENT_APPID, component_secret="wrong")
    with pytest.raises(ConfigurationError) as on_stable:
        wechat.stable_token(appid=DIRECT_APPID, secret="wrong")
    with pytest.raises(ConfigurationError) as on_clear:
        wechat.component_clear_quota_v2(component_appid=COMPONENT_APPID, appsecret="wrong")

    assert {e.value.errcode for e in (on_token, on_push, on_stable, on_clear)} == {40125}


def test_wrong_appids_raise_configuration_error(registered, wechat, component_access_token, authorizer_token):
    with pytest.raises(ConfigurationError) as unknown_account:
        wechat.stable_token(appid="wxnosuchaccount", secret="whatever")
    with pytest.raises(ConfigurationError) as foreign_appid:
        wechat.clear_quota(access_token=authorizer_token, appid="wxsomeoneelse")
    with pytest.raises(ConfigurationError) as other_component:
        wechat.create_preauthcode(
            component_access_token=component_access_token, component_appid="wxothercomp"
        )

    assert unknown_account.value.errcode == 40013
    assert foreign_appid.value.errcode == 40013
    assert other_component.value.errcode == 61011


def test_unknown_errcode_raises_base_wechat_error(registered, wechat, authorizer_token):
    registered.inject_fault(QUOTA_PATH, "errcode", errcode=76021)

    with pytest.raises(WeChatError) as caught:
        wechat.get_quota(access_token=authorizer_token, cgi_path=UPLOADIMG)

    assert type(caught.value) is WeChatError
    assert caught.value.errcode == 76021
    assert count(registered, QUOTA_PATH) == 1


# --- transient failures and retries -------------------------------------------------------------------


def test_system_busy_upload_is_retried_with_identical_bytes(registered, wechat, authorizer_token):
    registered.inject_fault(UPLOADIMG, "errcode", count=2, errcode=-1)
    data = image_bytes("JPEG")

    result = wechat.upload_image(access_token=authorizer_token, data=data)

    assert result.url
    assert count(registered, UPLOADIMG) == 3
    uploads = registered.uploads()
    assert [u["errcode"] for u in uploads] == [-1, -1, 0]
    assert {(u["sha256"], u["size"], u["filename"], u["content_type"]) for u in uploads} == {
        (hashlib.sha256(data).hexdigest(), len(data), "image.jpg", "image/jpeg")
    }


@pytest.mark.parametrize(
    ("kind", "params"),
    [("http_status", {"status": 500}), ("http_status", {"status": 503}), ("not_json", {})],
)
def test_5xx_and_non_json_uploads_are_retried_then_succeed(
    registered, wechat, authorizer_token, kind, params
):
    registered.inject_fault(UPLOADIMG, kind, count=1, **params)
    data = image_bytes("PNG")

    result = wechat.upload_image(access_token=authorizer_token, data=data)

    assert result.url and result.http_status == 200
    uploads = registered.uploads()
    assert len(uploads) == 2 and uploads[-1]["errcode"] == 0
    assert {(u["sha256"], u["size"]) for u in uploads} == {(hashlib.sha256(data).hexdigest(), len(data))}


def test_http_500_on_component_token_is_retried(registered, wechat):
    ticket = registered.issue_ticket(COMPONENT_APPID)
    registered.inject_fault(COMPONENT_TOKEN_PATH, "http_status", status=500)

    token = wechat.component_token(
        component_appid=COMPONENT_APPID, component_appsecret=COMPONENT_SECRET, verify_ticket=ticket
    )

    assert token.access_token
    assert count(registered, COMPONENT_TOKEN_PATH) == 2


def test_not_json_list_page_is_retried(registered, wechat, component_access_token):
    registered.authorize(COMPONENT_APPID)
    registered.inject_fault(LIST_PATH, "not_json")

    items = list(
        wechat.iter_authorizer_list(
            component_access_token=component_access_token, component_appid=COMPONENT_APPID
        )
    )

    assert len(items) == 1
    assert count(registered, LIST_PATH) == 2


def test_minute_rate_limit_is_retried(registered, wechat, authorizer_token):
    registered.inject_fault(QUOTA_PATH, "errcode", errcode=45011)

    assert wechat.get_quota(access_token=authorizer_token, cgi_path=UPLOADIMG).daily_limit == 100000
    assert count(registered, QUOTA_PATH) == 2


def test_exhausted_retries_raise_transient_error_with_http_status(registered, authorizer_token):
    sleeps: list[float] = []
    client = WeChatClient(
        api_base=registered.url, retry=RetryPolicy(max_retries=2, base_delay=0.01), sleep=sleeps.append
    )
    registered.inject_fault(UPLOADIMG, "http_status", count=5, status=502)

    with pytest.raises(TransientError) as caught:
        client.upload_image(access_token=authorizer_token, data=image_bytes())

    assert caught.value.http_status == 502
    assert caught.value.errcode is None
    assert "simulated failure" in caught.value.errmsg
    assert count(registered, UPLOADIMG) == 3
    assert len(sleeps) == 2 and all(0 <= s <= 0.02 for s in sleeps)


def test_not_json_answer_is_never_success(registered, authorizer_token):
    client = WeChatClient(api_base=registered.url, retry=RetryPolicy(max_retries=0))
    registered.inject_fault(UPLOADIMG, "not_json")

    with pytest.raises(TransientError) as caught:
        client.upload_image(access_token=authorizer_token, data=image_bytes())

    assert caught.value.http_status == 200 and caught.value.errcode is None
    assert "system busy" in caught.value.errmsg


def test_exhausted_system_busy_keeps_errcode(registered, wechat, authorizer_token):
    registered.inject_fault(UPLOADIMG, "errcode", count=3, errcode=-1)

    with pytest.raises(TransientError) as caught:
        wechat.upload_image(access_token=authorizer_token, data=image_bytes())

    assert caught.value.errcode == -1
    assert count(registered, UPLOADIMG) == 3


def test_upload_retry_argument_overrides_the_client_default(registered, wechat, authorizer_token):
    registered.inject_fault(UPLOADIMG, "errcode", errcode=-1)

    with pytest.raises(TransientError):
        wechat.upload_image(
            access_token=authorizer_token, data=image_bytes(), retry=RetryPolicy(max_retries=0)
        )

    assert count(registered, UPLOADIMG) == 1


def _wait_for_calls(simulator, path: str, n: int, timeout: float = 5.0) -> None:
    """A timed-out request still finishes in the simulator; wait so it cannot leak into the next test."""
    deadline = time.monotonic() + timeout
    while len(simulator.calls(path)) < n:
        assert time.monotonic() < deadline, f"the simulator did not finish {n} call(s) to {path} in {timeout}s"
        time.sleep(0.05)


def test_answer_slower_than_the_timeout_raises_network_error(registered, authorizer_token):
    client = WeChatClient(api_base=registered.url, timeout=0.3, retry=RetryPolicy(max_retries=0))
    registered.inject_fault(QUOTA_PATH, "delay", seconds=1.0)

    with pytest.raises(NetworkError) as caught:
        client.get_quota(access_token=authorizer_token, cgi_path=UPLOADIMG)

    assert caught.value.retryable
    assert "ReadTimeout" in str(caught.value)  # the name requests gave it, as attempt records always had it
    assert authorizer_token not in str(caught.value)
    _wait_for_calls(registered, QUOTA_PATH, 1)


def test_timeout_is_retried_then_succeeds(registered, authorizer_token):
    client = WeChatClient(api_base=registered.url, timeout=0.3, retry=FAST)
    registered.inject_fault(QUOTA_PATH, "delay", seconds=1.0)

    quota = client.get_quota(access_token=authorizer_token, cgi_path=UPLOADIMG)

    assert quota.daily_limit == 100000
    assert count(registered, QUOTA_PATH) == 2
    _wait_for_calls(registered, QUOTA_PATH, 2)


def test_connection_refused_raises_network_error_without_the_token():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = WeChatClient(
        api_base=f"http://127.0.0.1:{port}", timeout=1.0, retry=RetryPolicy(max_retries=1, base_delay=0.01)
    )

    with pytest.raises(NetworkError) as caught:
        client.get_quota(access_token="secret-token-value", cgi_path=UPLOADIMG)

    # The transport's exception names the URL (with its query string): it is not chained for display.
    assert "ConnectionError" in str(caught.value)
    assert "secret-token-value" not in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


# --- answers the simulator cannot give: a tiny stub server --------------------------------------------


class _LoopbackServer:
    """A threaded HTTP server on 127.0.0.1 with a free port: `url`, and `close()` when done."""

    def _serve(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _Stub(_LoopbackServer):
    """Serves one canned (status, body) for every POST and counts requests."""

    def __init__(self, status: int, body: bytes) -> None:
        self.status, self.body, self.requests = status, body, 0
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                stub.requests += 1
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(stub.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(stub.body)))
                self.end_headers()
                self.wfile.write(stub.body)

            def log_message(self, *args):
                pass

        self._serve(Handler)


@pytest.fixture
def stub():
    stubs: list[_Stub] = []

    def make(status: int, body: dict | bytes) -> _Stub:
        stubs.append(_Stub(status, body if isinstance(body, bytes) else json.dumps(body).encode()))
        return stubs[-1]

    yield make
    for s in stubs:
        s.close()


@pytest.mark.parametrize("body", [{}, {"errcode": 0, "errmsg": "ok"}, {"url": ""}])
def test_upload_answer_without_url_is_a_non_retryable_error(stub, body):
    server = stub(200, body)
    client = WeChatClient(api_base=server.url, retry=FAST)

    with pytest.raises(WeChatError) as caught:
        client.upload_image(access_token="t", data=image_bytes())

    assert type(caught.value) is WeChatError
    assert caught.value.errmsg == "no url in response"
    assert caught.value.retryable is False
    assert server.requests == 1


def test_upload_answer_with_url_and_no_errcode_is_success(stub):
    server = stub(200, {"url": "http://mmbiz.qpic.cn/mmbiz/abc/0"})

    result = WeChatClient(api_base=server.url).upload_image(access_token="t", data=image_bytes())

    assert result.url == "http://mmbiz.qpic.cn/mmbiz/abc/0"


def test_json_5xx_is_transient_even_with_errcode_zero(stub):
    server = stub(503, {"errcode": 0, "errmsg": "ok", "url": "http://x/0"})

    with pytest.raises(TransientError) as caught:
        WeChatClient(api_base=server.url, retry=FAST).upload_image(access_token="t", data=image_bytes())

    assert caught.value.http_status == 503
    assert server.requests == 3


def test_4xx_without_errcode_is_not_success(stub):
    server = stub(404, {"hello": "world"})

    with pytest.raises(WeChatError) as caught:
        WeChatClient(api_base=server.url, retry=FAST).get_quota(access_token="t", cgi_path=UPLOADIMG)

    assert caught.value.http_status == 404 and not caught.value.retryable
    assert server.requests == 1


def test_legacy_authorizer_info_shape_is_parsed(stub):
    # 2015-era shape: authorization_info.appid, no refresh token (docs/wechat-protocol.md §8).
    server = stub(
        200,
        {
            "authorizer_info": {"nick_name": "Old", "service_type_info": {"id": "2"}, "verify_type_info": {}},
            "authorization_info": {
                "appid": "wxold",
                "func_info": [{"funcscope_category": {"id": 1}}, {}, "junk"],
            },
            "qrcode_url": "http://x",
        },
    )

    info = WeChatClient(api_base=server.url).get_authorizer_info(
        component_access_token="t", component_appid="wxc", authorizer_appid="wxrequested"
    )

    assert info.appid == "wxold"
    assert info.service_type == 2 and info.verify_type is None and info.account_status is None
    assert info.refresh_token is None
    assert info.func_info == [1]
    assert info.account_type == "official_account"


def test_authorizer_info_without_authorization_info_falls_back_to_the_requested_appid(stub):
    server = stub(200, {"authorizer_info": {"nick_name": "N", "MiniProgramInfo": {}}})

    info = WeChatClient(api_base=server.url).get_authorizer_info(
        component_access_token="t", component_appid="wxc", authorizer_appid="wxrequested"
    )

    assert (info.appid, info.account_type, info.refresh_token, info.func_info) == (
        "wxrequested",
        "mini_program",
        None,
        [],
    )


def test_list_items_without_refresh_token_are_kept(stub):
    server = stub(
        200,
        {
            "total_count": 2,
            "list": [
                {"authorizer_appid": "wxa", "auth_time": 1},
                {"authorizer_appid": "wxb", "refresh_token": "r"},
            ],
        },
    )

    page = WeChatClient(api_base=server.url).get_authorizer_list(
        component_access_token="t", component_appid="wxc"
    )

    assert [(i.appid, i.refresh_token, i.auth_time) for i in page.items] == [
        ("wxa", None, 1),
        ("wxb", "r", None),
    ]


def test_iteration_stops_on_an_empty_page_even_if_total_count_says_more(stub):
    server = stub(200, {"total_count": 10, "list": []})

    items = list(
        WeChatClient(api_base=server.url).iter_authorizer_list(
            component_access_token="t", component_appid="wxc"
        )
    )

    assert items == [] and server.requests == 1


# --- retry policy, image sniffing, logging, package boundaries ----------------------------------------


def test_retry_policy_retries_only_retryable_errors_and_is_bounded():
    policy = RetryPolicy(max_retries=2)

    assert policy.should_retry(TransientError(-1), 0)
    assert policy.should_retry(NetworkError(None, "ReadTimeout"), 1)
    assert not policy.should_retry(TransientError(-1), 2)
    assert not policy.should_retry(TokenInvalid(40001), 0)
    assert not policy.should_retry(QuotaExceeded(45009), 0)
    assert policy.should_retry(RateLimited(45011), 0)
    assert not RetryPolicy(max_retries=0).should_retry(TransientError(-1), 0)


def test_retry_sleep_is_capped_exponential_with_full_jitter():
    policy = RetryPolicy(base_delay=0.5, max_delay=8.0)

    for attempt, cap in [(0, 0.5), (1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (10, 8.0)]:
        samples = [policy.sleep_seconds(attempt) for _ in range(200)]
        assert all(0 <= s <= cap for s in samples)
        assert max(samples) > cap / 2  # jitter spans the range, it is not a constant


def test_sniff_image_names_and_types_from_magic_bytes():
    assert sniff_image(image_bytes("PNG")) == ("image.png", "image/png")
    assert sniff_image(image_bytes("JPEG")) == ("image.jpg", "image/jpeg")
    with pytest.raises(ValueError):
        sniff_image(b"\x89PN")


def test_results_do_not_show_tokens_in_repr(registered, wechat, component_access_token, authorize):
    grant, auth = authorize()

    assert auth.authorizer_access_token not in repr(auth)
    assert grant["refresh_token"] not in repr(auth)
    assert component_access_token not in repr(
        wechat.component_token(
            component_appid=COMPONENT_APPID,
            component_appsecret=COMPONENT_SECRET,
            verify_ticket=registered.issue_ticket(COMPONENT_APPID),
        )
    )


def test_one_structured_log_line_per_attempt_and_no_secrets(registered, caplog):
    caplog.set_level(logging.DEBUG, logger="openplatform.wechat")
    wechat = WeChatClient(api_base=registered.url, retry=FAST)
    secrets: list[str] = [COMPONENT_SECRET, DIRECT_SECRET]

    wechat.start_push_ticket(component_appid=COMPONENT_APPID, component_secret=COMPONENT_SECRET)
    ticket = registered.issue_ticket(COMPONENT_APPID)
    cat = wechat.component_token(
        component_appid=COMPONENT_APPID, component_appsecret=COMPONENT_SECRET, verify_ticket=ticket
    ).access_token
    pre = wechat.create_preauthcode(component_access_token=cat, component_appid=COMPONENT_APPID).pre_auth_code
    grant = registered.authorize(COMPONENT_APPID)
    auth = wechat.query_auth(
        component_access_token=cat, component_appid=COMPONENT_APPID, authorization_code=grant["auth_code"]
    )
    appid = auth.authorizer_appid
    refreshed = wechat.authorizer_token(
        component_access_token=cat,
        component_appid=COMPONENT_APPID,
        authorizer_appid=appid,
        authorizer_refresh_token=auth.authorizer_refresh_token,
    )
    wechat.get_authorizer_info(
        component_access_token=cat, component_appid=COMPONENT_APPID, authorizer_appid=appid
    )
    list(wechat.iter_authorizer_list(component_access_token=cat, component_appid=COMPONENT_APPID))
    registered.inject_fault(UPLOADIMG, "errcode", errcode=-1)
    wechat.upload_image(access_token=refreshed.access_token, data=image_bytes(), appid=appid)
    wechat.get_quota(access_token=refreshed.access_token, cgi_path=UPLOADIMG)
    wechat.clear_quota(access_token=refreshed.access_token, appid=appid)
    wechat.component_clear_quota_v2(component_appid=COMPONENT_APPID, appsecret=COMPONENT_SECRET, appid=appid)
    registered.register_direct_account(DIRECT_APPID, DIRECT_SECRET, [11])
    stable = wechat.stable_token(appid=DIRECT_APPID, secret=DIRECT_SECRET).access_token
    registered.invalidate_tokens(appid=appid)
    with pytest.raises(TokenInvalid):
        wechat.get_quota(access_token=refreshed.access_token, cgi_path=UPLOADIMG)
    secrets += [
        ticket,
        cat,
        pre,
        grant["auth_code"],
        grant["refresh_token"],
        auth.authorizer_access_token,
        refreshed.access_token,
        stable,
    ]

    records = [r for r in caplog.records if r.name == "openplatform.wechat"]
    # 13 calls, one of them (the upload) retried once -> 14 attempts
    assert len(records) == 14
    for record in records:
        assert {"path", "appid", "component_appid", "errcode", "http_status", "attempt", "latency_ms"} <= set(
            vars(record)
        )
        text = (
            record.getMessage()
            + " "
            + json.dumps(
                {k: v for k, v in vars(record).items() if k not in {"args", "exc_info"}}, default=str
            )
        )
        for secret in secrets:
            assert secret not in text, f"{record.path} logged a secret"
        assert "?" not in record.getMessage()  # no query string

    uploads = [r for r in records if r.path == UPLOADIMG]
    assert [(r.attempt, r.errcode, r.levelno) for r in uploads] == [
        (1, -1, logging.WARNING),
        (2, 0, logging.INFO),
    ]
    assert all(r.appid == appid for r in uploads)
    [token_call] = [r for r in records if r.path == "/cgi-bin/component/api_authorizer_token"]
    assert (token_call.appid, token_call.component_appid) == (appid, COMPONENT_APPID)
    failed = records[-1]
    assert (failed.path, failed.errcode, failed.http_status, failed.levelno) == (
        QUOTA_PATH,
        40001,
        200,
        logging.WARNING,
    )


def test_wechat_package_modules_import_nothing_from_django_or_the_project():
    package = Path(__file__).resolve().parents[1] / "openplatform" / "wechat"
    for name in ("client.py", "types.py", "errors.py"):
        tree = ast.parse((package / name).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: stays inside openplatform.wechat
                    assert node.level == 1, f"{name} reaches outside the wechat package"
                    continue
                modules = [node.module or ""]
            else:
                continue
            for module in modules:
                assert not module.startswith(
                    ("django", "openplatform", "tenants", "uploads", "rest_framework")
                ), f"{name} imports {module}"


# --- the transport: the bytes requests would send, through the pool its adapter chooses -------------------


class _ForwardProxy(_LoopbackServer):
    """A plain HTTP forward proxy on loopback: it takes absolute-URI requests and relays them."""

    def __init__(self) -> None:
        self.request_lines: list[str] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                import http.client
                from urllib.parse import urlsplit

                proxy.request_lines.append(self.requestline)
                target = urlsplit(self.path)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                upstream = http.client.HTTPConnection(target.hostname, target.port, timeout=10)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("proxy-connection", "connection")}
                upstream.request("POST", target.path + (f"?{target.query}" if target.query else ""), body, headers)
                answer = upstream.getresponse()
                content = answer.read()
                upstream.close()
                self.send_response(answer.status)
                self.send_header("Content-Type", answer.getheader("Content-Type") or "application/json")
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            def log_message(self, *args):
                pass

        self._serve(Handler)


def test_the_environment_proxy_carries_json_and_multipart_calls(registered, authorizer_token, monkeypatch):
    """HTTP_PROXY (read once, when the client is built) is used by the lean transport: the request line is
    the absolute URL, as a forward proxy needs, and the answer comes back through it."""
    proxy = _ForwardProxy()
    try:
        for name in ("NO_PROXY", "no_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        client = WeChatClient(api_base=registered.url, retry=FAST)
        monkeypatch.delenv("HTTP_PROXY")  # read once: the client keeps what it saw

        quota = client.get_quota(access_token=authorizer_token, cgi_path=UPLOADIMG)
        result = client.upload_image(access_token=authorizer_token, data=image_bytes("JPEG"))

        assert quota.daily_limit == 100000 and result.url.startswith("http")
        assert [line.split()[1].split("?")[0] for line in proxy.request_lines] == [
            f"{registered.url}{QUOTA_PATH}", f"{registered.url}{UPLOADIMG}"
        ]
        assert count(registered, UPLOADIMG) == 1
    finally:
        proxy.close()


def test_a_malformed_proxy_setting_is_our_error_not_a_network_one(stub):
    """requests' InvalidProxyURL is an OSError: it must not be taken for a network failure and retried."""
    server = stub(200, {"url": "http://mmbiz.qpic.cn/mmbiz/abc/0"})
    client = WeChatClient(api_base=server.url, retry=FAST)
    client.session.proxies["http"] = "http://"  # no host

    with pytest.raises(WeChatError) as caught:
        client.upload_image(access_token="t", data=image_bytes())

    assert type(caught.value) is WeChatError and caught.value.retryable is False
    assert "InvalidProxyURL" in str(caught.value) and server.requests == 0
