"""The release-check rules (openplatform/wechat/release_check.py), alone and end to end: a message URL
built from them and the WeChat client passes the simulator's full-network release check."""

from __future__ import annotations

import threading
import time

import pytest
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from openplatform.wechat.client import RetryPolicy, WeChatClient
from openplatform.wechat.crypto import WXBizMsgCrypt, parse_xml_fields
from openplatform.wechat.release_check import (
    RELEASE_TEST_ACCOUNTS,
    TEXT_CHECK_REPLY,
    ReleaseCheck,
    release_check_for,
)

COMPONENT_APPID = "wxreleasecheck001"
COMPONENT_SECRET = "release-check-secret"
TOKEN = "releasetoken"
AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
OA_APPID, MP_APPID = "wx570bc396a51b8ff8", "wxd101a85aa106f53e"


def text(content: str, *, to_user: str = "gh_3c884a361561", from_user: str = "ofan") -> dict[str, str]:
    return {"ToUserName": to_user, "FromUserName": from_user, "MsgType": "text", "Content": content}


def test_the_text_check_gets_a_passive_reply_with_sender_and_receiver_swapped():
    action = release_check_for(text("TESTCOMPONENT_MSG_TYPE_TEXT"), authorizer_appid=OA_APPID, now=1700000000)

    assert action is not None and action.query_auth_code is None
    reply = parse_xml_fields(action.reply_xml)
    assert reply == {
        "ToUserName": "ofan",
        "FromUserName": "gh_3c884a361561",
        "CreateTime": "1700000000",
        "MsgType": "text",
        "Content": TEXT_CHECK_REPLY,
    }


def test_the_api_check_asks_for_the_code_to_be_exchanged_and_echoed_by_customer_service():
    action = release_check_for(text("QUERY_AUTH_CODE:queryauthcode@@@abc"), authorizer_appid=MP_APPID, now=1)

    assert action == ReleaseCheck(
        openid="ofan",
        query_auth_code="queryauthcode@@@abc",
        api_reply_content="queryauthcode@@@abc_from_api",
    )


@pytest.mark.parametrize(
    ("fields", "appid"),
    [
        (text("TESTCOMPONENT_MSG_TYPE_TEXT"), "wxordinarymerchant"),  # only the dedicated test accounts
        (text("QUERY_AUTH_CODE:x"), "wxordinarymerchant"),
        (text("hello"), OA_APPID),
        (text("QUERY_AUTH_CODE:"), OA_APPID),
        ({**text("TESTCOMPONENT_MSG_TYPE_TEXT"), "MsgType": "event"}, OA_APPID),
        (text("TESTCOMPONENT_MSG_TYPE_TEXT", from_user=""), OA_APPID),
    ],
)
def test_other_messages_are_not_release_checks(fields, appid):
    assert release_check_for(fields, authorizer_appid=appid, now=1) is None


def test_all_ten_dedicated_test_accounts_are_known():
    assert len(RELEASE_TEST_ACCOUNTS) == 10
    assert all(a.startswith("wx") and u.startswith("gh_") for a, u in RELEASE_TEST_ACCOUNTS.items())


class ReleaseCheckEndpoint:
    """A message URL as our service should answer it: the pure rules above, the crypto and the client."""

    def __init__(self, simulator) -> None:
        self.simulator = simulator
        self.crypto = WXBizMsgCrypt(TOKEN, AES_KEY, COMPONENT_APPID)
        self.client = WeChatClient(api_base=simulator.url, timeout=5.0, retry=RetryPolicy(base_delay=0.01))
        self.workers: list[threading.Thread] = []
        self._server = make_server("127.0.0.1", 0, self._app, threaded=True)
        self.url = f"http://127.0.0.1:{self._server.port}/wechat/authorizers/$APPID$/events/"
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def _app(self, environ, start_response):
        request = Request(environ)
        args = request.args
        plaintext = self.crypto.decrypt_message(
            request.get_data(), msg_signature=args["msg_signature"], timestamp=args["timestamp"], nonce=args["nonce"]
        )
        appid = request.path.split("/")[-3]
        action = release_check_for(parse_xml_fields(plaintext), authorizer_appid=appid, now=int(time.time()))
        if action is None:
            return Response("success", content_type="text/plain")(environ, start_response)
        if action.reply_xml is not None:
            body = self.crypto.encrypt_message(action.reply_xml, timestamp=args["timestamp"], nonce=args["nonce"])
            return Response(body, content_type="text/xml")(environ, start_response)
        worker = threading.Thread(target=self._answer_by_api, args=(appid, action))
        worker.start()
        self.workers.append(worker)
        return Response("", content_type="text/plain")(environ, start_response)

    def _answer_by_api(self, appid: str, action: ReleaseCheck) -> None:
        ticket = self.simulator.issue_ticket(COMPONENT_APPID)
        ctoken = self.client.component_token(
            component_appid=COMPONENT_APPID, component_appsecret=COMPONENT_SECRET, verify_ticket=ticket
        ).access_token
        info = self.client.query_auth(
            component_access_token=ctoken, component_appid=COMPONENT_APPID, authorization_code=action.query_auth_code
        )
        self.client.custom_send_text(
            access_token=info.authorizer_access_token, touser=action.openid, content=action.api_reply_content, appid=appid
        )

    def stop(self) -> None:
        for worker in self.workers:
            worker.join(timeout=5)
        self._server.shutdown()
        self._server.server_close()
        self.client.close()


@pytest.fixture
def endpoint(simulator):
    served = ReleaseCheckEndpoint(simulator)
    # No events URL: the authorized event's delivery fails, which the check reports but we do not test here.
    simulator.register_component(COMPONENT_APPID, COMPONENT_SECRET, TOKEN, AES_KEY, messages_url=served.url)
    yield served
    served.stop()


@pytest.mark.parametrize("account_type", ["official_account", "mini_program"])
def test_an_endpoint_built_on_the_rules_passes_the_simulated_release_check(simulator, endpoint, account_type):
    report = simulator.run_release_test(COMPONENT_APPID, account_type=account_type)

    message_steps = [s for s in report["steps"] if s["name"] in ("text_reply", "api_reply")]
    assert [s["name"] for s in message_steps] == (
        ["text_reply", "api_reply"] if account_type == "official_account" else ["api_reply"]
    )
    assert all(s["passed"] for s in message_steps), message_steps
    (sent,) = simulator.custom_messages()
    assert sent["content"] == report["query_auth_code"] + "_from_api" and sent["touser"] == report["openid"]
