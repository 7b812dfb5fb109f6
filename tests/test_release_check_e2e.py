"""WeChat's full-network release check against our own service (issue 12, point 6): the simulator plays
WeChat's dedicated test account and sends its two messages to our per-authorizer message URL on a live
server; a real Celery worker (the jobs worker, as deploy runs it) runs the API step."""

from __future__ import annotations

import pytest
from django.conf import settings as django_settings

from tenants.models import AuthCodeExchange
from tests.fixtures import COMPONENT_EVENTS_PATH, sim_count

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

APPID = django_settings.WECHAT_COMPONENT_APPID


@pytest.fixture
def release_component(component, live_server, settings):
    settings.PUBLIC_BASE_URL = live_server.url
    component.register_component(
        component_appid=APPID,
        component_appsecret=django_settings.WECHAT_COMPONENT_APPSECRET,
        token=django_settings.WECHAT_COMPONENT_TOKEN,
        encoding_aes_key=django_settings.WECHAT_COMPONENT_AES_KEY,
        events_url=live_server.url + COMPONENT_EVENTS_PATH,
        messages_url=live_server.url + "/wechat/authorizers/$APPID$/events/",
    )
    return component


@pytest.mark.parametrize("account_type", ["official_account", "mini_program"])
def test_our_service_passes_the_release_check(jobs_worker, release_component, account_type):
    report = release_component.run_release_test(APPID, account_type=account_type, wait=30)

    assert report["passed"], report["steps"]
    names = [s["name"] for s in report["steps"]]
    assert names[-1] == "api_reply" and ("text_reply" in names) == (account_type == "official_account")
    (sent,) = release_component.custom_messages()
    assert sent["content"] == report["query_auth_code"] + "_from_api" and sent["touser"] == report["openid"]
    # the code came twice (the authorized event, the QUERY_AUTH_CODE message) and was exchanged once
    assert sim_count(release_component, "api_query_auth") == 1
    assert AuthCodeExchange.objects.get().completed_at is not None


def test_ordinary_messages_are_acknowledged_without_an_answer(release_component, client):
    from tests.fixtures import post_raw, signed_event

    text = (
        "<xml><ToUserName><![CDATA[gh_0123456789ab]]></ToUserName><FromUserName><![CDATA[ofan]]></FromUserName>"
        "<CreateTime>1700000000</CreateTime><MsgType><![CDATA[text]]></MsgType>"
        "<Content><![CDATA[TESTCOMPONENT_MSG_TYPE_TEXT]]></Content><MsgId>1</MsgId></xml>"
    )
    body, params = signed_event(text)
    # the same words from an account that is not one of WeChat's test accounts are just a message
    answer = post_raw(client, "/wechat/authorizers/wxnotatestaccount/events/", body, params)
    assert answer.status_code == 200 and answer.content == b"success"
    assert release_component.custom_messages() == []
