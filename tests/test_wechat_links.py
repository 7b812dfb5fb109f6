"""Authorization link builders (openplatform/wechat/links.py): pure functions, no HTTP.

The pages these links open are exercised against the simulator in test_simulator.py.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

import pytest

from openplatform.wechat.links import (
    format_category_id_list,
    mobile_authorization_url,
    parse_category_id_list,
    pc_authorization_url,
)

REDIRECT = "https://svc.example/wechat/component/authorized/?state=abc%3D&x=1"
COMMON = {"component_appid": "wxcomponent01", "pre_auth_code": "preauthcode@@@XYZ", "redirect_uri": REDIRECT}


def test_pc_link_has_the_documented_path_and_parameters_in_order():
    url = pc_authorization_url(
        mp_base="https://mp.weixin.qq.com/", **COMMON, auth_type=1, biz_appid="wxbiz", category_id_list=[11, 18]
    )

    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path, parts.fragment) == (
        "https",
        "mp.weixin.qq.com",
        "/cgi-bin/componentloginpage",
        "",
    )
    assert parse_qsl(parts.query) == [
        ("component_appid", "wxcomponent01"),
        ("pre_auth_code", "preauthcode@@@XYZ"),
        ("redirect_uri", REDIRECT),  # encoded once, so our own query (the signed state) survives
        ("auth_type", "1"),
        ("biz_appid", "wxbiz"),
        ("category_id_list", "11|18"),
    ]


def test_mobile_link_is_on_open_weixin_with_action_no_scan_and_wechat_redirect():
    url = mobile_authorization_url(open_base="https://open.weixin.qq.com", **COMMON, auth_type=3, category_id_list=[11])

    parts = urlsplit(url)
    assert (parts.netloc, parts.path, parts.fragment) == ("open.weixin.qq.com", "/wxaopen/safe/bindcomponent", "wechat_redirect")
    assert parse_qsl(parts.query) == [
        ("action", "bindcomponent"),
        ("no_scan", "1"),
        ("component_appid", "wxcomponent01"),
        ("pre_auth_code", "preauthcode@@@XYZ"),
        ("redirect_uri", REDIRECT),
        ("auth_type", "3"),
        ("category_id_list", "11"),
    ]


def test_defaults_are_the_real_hosts_and_optional_parameters_are_left_out():
    pc = urlsplit(pc_authorization_url(**COMMON))
    mobile = urlsplit(mobile_authorization_url(**COMMON, category_id_list=[]))

    assert pc.netloc == "mp.weixin.qq.com" and mobile.netloc == "open.weixin.qq.com"
    for parts in (pc, mobile):
        names = [name for name, _ in parse_qsl(parts.query)]
        assert not {"auth_type", "biz_appid", "category_id_list"} & set(names)


def test_category_id_list_is_joined_by_a_vertical_bar_without_duplicates():
    assert format_category_id_list([11, 18, 11, 1]) == "11|18|1"
    assert format_category_id_list(()) == ""
    assert parse_category_id_list("11|18|11") == [11, 18]
    assert parse_category_id_list(format_category_id_list([99, 31])) == [99, 31]


@pytest.mark.parametrize("bad", ["", "11,18", "11|", "a|1", "0", "-1", "１１"])
def test_malformed_category_id_lists_are_refused(bad):
    with pytest.raises(ValueError):
        parse_category_id_list(bad)


@pytest.mark.parametrize(
    "override",
    [
        {"category_id_list": [11, 0]},
        {"category_id_list": ["11"]},
        {"category_id_list": [True]},
        {"auth_type": 0},
        {"auth_type": "3"},
        {"pre_auth_code": ""},
        {"redirect_uri": ""},
        {"component_appid": None},
    ],
)
def test_bad_arguments_raise_value_error_for_both_links(override):
    for build in (pc_authorization_url, mobile_authorization_url):
        with pytest.raises(ValueError):
            build(**{**COMMON, **override})
