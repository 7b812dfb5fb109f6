"""Permission sets (funcscope_category ids), docs/wechat-protocol.md §9.

Sources: https://developers.weixin.qq.com/doc/oplatform/Third-party_Platforms/2.0/product/offical_account_authority.html
and .../miniprogram_authority.html.
"""

from __future__ import annotations

from collections.abc import Iterable

OFFICIAL_ACCOUNT_SETS: dict[int, str] = {
    1: "Message management (消息管理)",
    2: "User management (用户管理)",
    3: "Account service (账号服务)",
    4: "Web page service (网页服务)",
    5: "WeChat Store (微信小店)",
    6: "Multi-agent customer service (微信多客服)",
    7: "Broadcast and notifications (群发与通知)",
    8: "Cards and coupons (微信卡券)",
    9: "WeChat Scan (微信扫一扫)",
    10: "Wi-Fi (微信连WIFI)",
    11: "Material management (素材管理)",
    12: "Shake Nearby (微信摇周边)",
    13: "Stores (微信门店)",
    15: "Menu management (菜单管理)",
    22: "City services (城市服务)",
    23: "Ads management (广告管理)",
    24: "Open Platform account management (开放平台账号管理)",
    26: "E-invoice (微信电子发票)",
    27: "Fast-register Mini Program (快速注册小程序)",
    33: "Mini Program linking (小程序关联管理)",
    34: "Product library (微信商品库管理)",
    44: "Haowuquan (好物圈)",
    46: "One item one code (微信一物一码)",
    47: "Fiscal e-receipts (微信财政电子票据)",
    54: "Service account conversations (服务号对话管理)",
    66: "Service market (微信服务市场管理)",
    89: "Subscription notices (服务号订阅通知)",
    113: "Medical assistant (就医助手)",
}

MINI_PROGRAM_SETS: dict[int, str] = {
    17: "Mini Program codes (获取小程序码)",
    18: "Development and data analysis (小程序开发与数据分析)",
    19: "Customer service (客服管理)",
    25: "Open Platform account management (开放平台账号管理)",
    30: "Basic information (基本信息管理)",
    31: "Verification name check (认证名称检测)",
    36: "WeChat calories (微信卡路里)",
    37: "Nearby Mini Programs (附近的小程序管理)",
    40: "Plugins (插件管理)",
    41: "Haowuquan (好物圈)",
    45: "Logistics (微信物流服务)",
    48: "Fiscal e-receipts (财政电子票据)",
    49: "Cloud development (云开发管理)",
    51: "Instant delivery (即时配送)",
    52: "Live streaming (直播管理)",
    65: "Ads management (广告管理)",
    67: "Service market (服务市场管理)",
    70: "Standard trade component: products",
    71: "Standard trade component: orders, logistics, after-sales",
    73: "Standard trade component onboarding",
    76: "Violations and trade complaints",
    81: "Trial Mini Program fast verification",
    84: "Standard trade component coupons",
    85: "Custom trade component",
}

OTHER_SETS: dict[int, str] = {
    100: "Unlisted set 100 (accepted by uploadimg; not in public tables)",
}

PERMISSION_SET_NAMES: dict[int, str] = {**OFFICIAL_ACCOUNT_SETS, **MINI_PROGRAM_SETS, **OTHER_SETS}

#: media/uploadimg needs any one of these ("1、8-9、11、18、37、100").
#: https://developers.weixin.qq.com/doc/service/api/material/permanent/api_uploadimage
UPLOADIMG_REQUIRED_ANY_OF: tuple[int, ...] = (1, 8, 9, 11, 18, 37, 100)


def permission_set_name(set_id: int) -> str:
    return PERMISSION_SET_NAMES.get(set_id, f"Permission set {set_id}")


def can_upload_images(granted: Iterable[int]) -> bool:
    return bool(set(granted) & set(UPLOADIMG_REQUIRED_ANY_OF))


_UPLOAD_SET_LABELS = {11: "Material management, 素材管理", 18: "Development and data analysis"}


def upload_permission_set(*, is_mini_program: bool) -> int:
    """The one set to ask a merchant for (e.g. in ``category_id_list``) so that uploadimg works."""
    return 18 if is_mini_program else 11


def uploadimg_hint(*, is_mini_program: bool, errcode: int | None = None) -> str:
    """What the operator must do when uploadimg is refused; ``errcode`` says whose side lacks what.

    61007: the account has not granted the set to our platform (it was unticked, or the platform does
    not hold it on the Open Platform console, so it was never offered). 48001: the account itself lacks
    the API, which no authorization fixes. Source: the permission-set troubleshooting guide,
    https://developers.weixin.qq.com/doc/oplatform/Third-party_Platforms/2.0/troubleshooting/third_party_authority_instructions_troubleshooting.html
    """
    set_id = upload_permission_set(is_mini_program=is_mini_program)
    named = f"permission set {set_id} ({_UPLOAD_SET_LABELS[set_id]})"
    if errcode == 61007:
        return (
            f"the merchant's authorization does not grant {named} to this platform: make sure the platform "
            f"holds that set (Open Platform console > third-party platform > permission sets), then ask the "
            f"merchant to re-authorize with it (an authorization link with category_id_list={set_id})"
        )
    if errcode == 48001:
        return (
            "the merchant's account itself lacks this API (e.g. an unverified account, or an account type "
            "without it); re-authorizing does not help: the merchant must obtain the capability first "
            "(e.g. complete WeChat verification)"
        )
    return f"the merchant must grant {named} to this platform"
