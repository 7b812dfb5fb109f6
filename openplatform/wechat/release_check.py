"""WeChat's full-network release check (全网发布接入检测): what the per-authorizer message URL must answer.

Source: https://developers.weixin.qq.com/doc/oplatform/Third-party_Platforms/2.0/operation/thirdparty/releases_instructions.html
(docs/wechat-notes.md, item 6). Before a platform that holds the message permission set goes public,
WeChat authorizes one of its dedicated test accounts to it (pushing the ``query_auth_code`` in an
``authorized`` event) and, as a fan of that account, sends to the message URL:

- the text ``TESTCOMPONENT_MSG_TYPE_TEXT``: answer at once (within 5 s), encrypted, a passive text reply
  ``TESTCOMPONENT_MSG_TYPE_TEXT_callback`` (To/From swapped);
- the text ``QUERY_AUTH_CODE:<query_auth_code>``: answer an empty body at once, then exchange the code
  (api_query_auth) and send, with the account's token, the customer-service text
  ``<query_auth_code>_from_api`` to that fan (``WeChatClient.custom_send_text``).

``release_check_for`` recognises those messages (only for the dedicated test accounts) and says what
to do; it is pure, so the view stays thin and the rules are tested in one place.
"""

from __future__ import annotations

from dataclasses import dataclass

#: The five groups of dedicated test accounts (appid -> user name), Official Accounts then Mini Programs.
RELEASE_TEST_ACCOUNTS: dict[str, str] = {
    "wx570bc396a51b8ff8": "gh_3c884a361561",
    "wx9252c5e0bb1836fc": "gh_c0f28a78b318",
    "wx8e1097c5bc82cde9": "gh_3f222ed8d140",
    "wx14550af28c71a144": "gh_26128078e9ab",
    "wxa35b9c23cfe664eb": "gh_2b3713f184a6",
    "wxd101a85aa106f53e": "gh_8dad206e9538",
    "wxc39235c15087f6f3": "gh_905ae9d01059",
    "wx7720d01d4b2a4500": "gh_393666f1fdf4",
    "wx05d483572dcd5d8b": "gh_39abb5d4e1b7",
    "wx5910277cae6fd970": "gh_7818dcb60240",
}
TEXT_CHECK = "TESTCOMPONENT_MSG_TYPE_TEXT"
TEXT_CHECK_REPLY = TEXT_CHECK + "_callback"
API_CHECK_PREFIX = "QUERY_AUTH_CODE:"
API_CHECK_SUFFIX = "_from_api"
#: WeChat gives up on an answer after 5 s.
REPLY_DEADLINE_SECONDS = 5


@dataclass(frozen=True)
class ReleaseCheck:
    """What to do with one release-check message.

    ``reply_xml``: encrypt it (``WXBizMsgCrypt.encrypt_message``) and send it back as the answer now.
    Otherwise answer an empty body now, then exchange ``query_auth_code`` and custom-send
    ``api_reply_content`` to ``openid`` with the account's access token.
    """

    openid: str
    reply_xml: str | None = None
    query_auth_code: str | None = None
    api_reply_content: str | None = None


def _cdata(value: str) -> str:
    return "<![CDATA[" + value.replace("]]>", "]]]]><![CDATA[>") + "]]>"


def text_reply_xml(*, to_user: str, from_user: str, create_time: int, content: str) -> str:
    """A passive text reply (before encryption)."""
    return (
        f"<xml><ToUserName>{_cdata(to_user)}</ToUserName><FromUserName>{_cdata(from_user)}</FromUserName>"
        f"<CreateTime>{create_time}</CreateTime><MsgType>{_cdata('text')}</MsgType>"
        f"<Content>{_cdata(content)}</Content></xml>"
    )


def release_check_for(fields: dict[str, str], *, authorizer_appid: str, now: int) -> ReleaseCheck | None:
    """The action for a decrypted message ``fields`` sent to ``authorizer_appid``'s message URL, or None
    when it is not a release-check message (then answer "success" as usual)."""
    if authorizer_appid not in RELEASE_TEST_ACCOUNTS or fields.get("MsgType") != "text":
        return None
    content, openid, account = (
        fields.get("Content", ""),
        fields.get("FromUserName", ""),
        fields.get("ToUserName", ""),
    )
    if not openid:
        return None
    if content == TEXT_CHECK:
        reply = text_reply_xml(to_user=openid, from_user=account, create_time=now, content=TEXT_CHECK_REPLY)
        return ReleaseCheck(openid=openid, reply_xml=reply)
    if content.startswith(API_CHECK_PREFIX) and len(content) > len(API_CHECK_PREFIX):
        code = content[len(API_CHECK_PREFIX) :]
        return ReleaseCheck(openid=openid, query_auth_code=code, api_reply_content=code + API_CHECK_SUFFIX)
    return None
