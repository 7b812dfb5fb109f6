"""The third-party platform's own configuration, read once into a small validated object."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from django.conf import settings

from openplatform.wechat.client import RetryPolicy, WeChatClient


@dataclass(frozen=True)
class ComponentConfig:
    appid: str
    appsecret: str
    token: str
    aes_key: str
    api_base: str
    mp_base: str
    open_base: str
    public_base_url: str
    http_timeout: float
    http_max_retries: int
    #: Pushes whose `timestamp` is further than this from now are refused; 0: no check.
    push_max_age_seconds: int = 600

    @property
    def is_configured(self) -> bool:
        return bool(self.appid and self.appsecret and self.token and len(self.aes_key) == 43)

    @property
    def events_url(self) -> str:
        return self.public_base_url.rstrip("/") + "/wechat/component/events/"

    @property
    def authorized_redirect_url(self) -> str:
        return self.public_base_url.rstrip("/") + "/wechat/component/authorized/"


def component_config() -> ComponentConfig:
    return ComponentConfig(
        appid=settings.WECHAT_COMPONENT_APPID,
        appsecret=settings.WECHAT_COMPONENT_APPSECRET,
        token=settings.WECHAT_COMPONENT_TOKEN,
        aes_key=settings.WECHAT_COMPONENT_AES_KEY,
        api_base=settings.WECHAT_API_BASE,
        mp_base=settings.WECHAT_MP_BASE,
        open_base=settings.WECHAT_OPEN_BASE,
        public_base_url=settings.PUBLIC_BASE_URL,
        http_timeout=settings.WECHAT_HTTP_TIMEOUT,
        http_max_retries=settings.WECHAT_HTTP_MAX_RETRIES,
        push_max_age_seconds=settings.WECHAT_PUSH_MAX_AGE_SECONDS,
    )


@lru_cache(maxsize=8)
def _client(api_base: str, timeout: float, max_retries: int) -> WeChatClient:
    return WeChatClient(api_base=api_base, timeout=timeout, retry=RetryPolicy(max_retries=max_retries))


def wechat_client() -> WeChatClient:
    """The process-wide client (one pooled HTTP session) for the configured API base."""
    config = component_config()
    return _client(config.api_base, config.http_timeout, config.http_max_retries)
