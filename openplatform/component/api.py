"""The component's WeChat API, bound to its configuration and its access token.

Call sites read like the maintained SDKs (wechatpy's `WeChatComponent`, EasyWeChat's open-platform
application): `component_api().query_auth(code)`, with no token or appid to pass around. Every call
that needs the component access token goes through `with_component_token`: when WeChat refuses the
token (docs/wechat-protocol.md §4), that token is expired only if it is still the current one, then
one refresh and one retry.

(`openplatform.wechat.client.WeChatClient` is the protocol, with every argument explicit; this is the
component's own view of it.)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from openplatform.component.config import ComponentConfig, component_config, wechat_client
from openplatform.component.token import (
    component_access_token_get,
    component_access_token_refresh_after_failure,
)
from openplatform.wechat.client import WeChatClient
from openplatform.wechat.errors import TokenInvalid
from openplatform.wechat.types import (
    AuthorizationInfo,
    AuthorizerInfo,
    AuthorizerListItem,
    AuthorizerListPage,
    AuthorizerToken,
    PreAuthCode,
)

T = TypeVar("T")


def with_component_token(call: Callable[[str], T], *, config: ComponentConfig | None = None) -> T:
    """Run `call(token)`; on a token error, expire that token only if still current, refresh once, retry once."""
    config = config or component_config()
    lease = component_access_token_get(config=config)
    try:
        return call(lease.token)
    except TokenInvalid:
        lease = component_access_token_refresh_after_failure(config=config, failed_generation=lease.generation)
        return call(lease.token)


@dataclass(frozen=True)
class ComponentApi:
    config: ComponentConfig
    client: WeChatClient

    # --- with the component access token ------------------------------------------------------------

    def pre_auth_code(self) -> PreAuthCode:
        return self._with_token(
            lambda token: self.client.create_preauthcode(component_access_token=token, component_appid=self.config.appid)
        )

    def query_auth(self, authorization_code: str) -> AuthorizationInfo:
        return self._with_token(
            lambda token: self.client.query_auth(
                component_access_token=token, component_appid=self.config.appid, authorization_code=authorization_code
            )
        )

    def authorizer_token(self, *, authorizer_appid: str, refresh_token: str) -> AuthorizerToken:
        return self._with_token(
            lambda token: self.client.authorizer_token(
                component_access_token=token,
                component_appid=self.config.appid,
                authorizer_appid=authorizer_appid,
                authorizer_refresh_token=refresh_token,
            )
        )

    def get_authorizer_info(self, authorizer_appid: str) -> AuthorizerInfo:
        return self._with_token(
            lambda token: self.client.get_authorizer_info(
                component_access_token=token, component_appid=self.config.appid, authorizer_appid=authorizer_appid
            )
        )

    def get_authorizer_list(self, *, offset: int = 0, count: int = 500) -> AuthorizerListPage:
        """One page of api_get_authorizer_list."""
        return self._with_token(
            lambda token: self.client.get_authorizer_list(
                component_access_token=token, component_appid=self.config.appid, offset=offset, count=count
            )
        )

    def all_authorizers(self) -> list[AuthorizerListItem]:
        """Every page of api_get_authorizer_list; a token error starts the listing again with the new token."""
        return self._with_token(
            lambda token: list(
                self.client.iter_authorizer_list(component_access_token=token, component_appid=self.config.appid)
            )
        )

    # --- with the AppSecret (no token: these are how to recover when the token cannot be had) ------

    def start_push_ticket(self) -> None:
        """Ask WeChat to push a component_verify_ticket now."""
        self.client.start_push_ticket(component_appid=self.config.appid, component_secret=self.config.appsecret)

    def clear_quota(self, *, appid: str | None = None) -> None:
        """Reset the component's API quota (or, with `appid`, its quota for that account): 45009's way out."""
        self.client.component_clear_quota_v2(component_appid=self.config.appid, appsecret=self.config.appsecret, appid=appid)

    def _with_token(self, call: Callable[[str], T]) -> T:
        return with_component_token(call, config=self.config)


def component_api(*, config: ComponentConfig | None = None) -> ComponentApi:
    """The component's API with the configured settings and the process-wide HTTP client."""
    return ComponentApi(config=config or component_config(), client=wechat_client())
