"""Messages pushed to the per-authorizer message URL (`/wechat/authorizers/<appid>/events/`).

We hold no message permission set for merchants' fans, so ordinary messages are acknowledged and
dropped. The exception is WeChat's full-network release check (docs/wechat-notes.md, item 6): before a
platform goes public, WeChat's dedicated test accounts send two messages that must be answered, the
first with an encrypted passive reply within 5 s, the second with an empty answer at once and then a
customer-service message sent through the API with the test account's token. The rules are
`openplatform.wechat.release_check`; this module applies them: the reply, or a task that exchanges the
code and sends the answer (the web request must not wait for two WeChat calls).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from openplatform.component.config import component_config, wechat_client
from openplatform.core.queueing import enqueue_on_commit
from openplatform.core.secrets import decrypt_secret, encrypt_secret
from openplatform.wechat.crypto import WXBizMsgCrypt
from openplatform.wechat.release_check import release_check_for
from tenants.services.authorization import authorization_code_exchange
from tenants.services.tokens import authorizer_access_token_get

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MessageAnswer:
    body: str
    content_type: str = "text/plain; charset=utf-8"


def authorizer_message_receive(*, appid: str, fields: dict[str, str], timestamp: str, nonce: str) -> MessageAnswer:
    """What to answer a verified, decrypted message for `appid`; schedules the release check's API step."""
    action = release_check_for(fields, authorizer_appid=appid, now=int(time.time()))
    if action is None:
        logger.info(
            "authorizer message acknowledged",
            extra={"authorizer_appid": appid[:64], "msg_type": fields.get("MsgType", "")[:32],
                   "event": fields.get("Event", "")[:64]},
        )
        return MessageAnswer("success")
    if action.reply_xml is not None:
        config = component_config()
        crypt = WXBizMsgCrypt(config.token, config.aes_key, config.appid)
        logger.info("release check: text message answered", extra={"authorizer_appid": appid})
        return MessageAnswer(crypt.encrypt_message(action.reply_xml, timestamp=timestamp, nonce=nonce),
                             "application/xml; charset=utf-8")
    from tenants.tasks import answer_release_check  # the task module imports this one

    # The code is a credential: it travels through the broker encrypted.
    enqueue_on_commit(answer_release_check, appid, action.openid, encrypt_secret(action.query_auth_code or ""),
                      action.api_reply_content or "")
    logger.info("release check: API answer scheduled", extra={"authorizer_appid": appid})
    return MessageAnswer("")


def release_check_api_answer(*, appid: str, openid: str, code_ciphertext: str, content: str) -> None:
    """Exchange the test account's code (exactly once, like any code) and send `content` to the fan."""
    authorizer = authorization_code_exchange(auth_code=decrypt_secret(code_ciphertext))
    lease = authorizer_access_token_get(authorizer=authorizer)
    wechat_client().custom_send_text(access_token=lease.token, touser=openid, content=content, appid=appid)
    logger.info("release check: API answer sent", extra={"authorizer_appid": appid})
