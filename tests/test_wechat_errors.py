"""The errcode -> exception mapper (openplatform/wechat/errors.py, docs/wechat-protocol.md §11)."""

from __future__ import annotations

import pytest

from openplatform.wechat import errors
from openplatform.wechat.errors import (
    AccountLacksApi,
    AdminConfirmationRequired,
    AuthCodeExpired,
    AuthCodeInvalid,
    ClearQuotaExhausted,
    ConfigurationError,
    InvalidPayload,
    MissingTicket,
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
    error_class_for,
    error_for,
)
from openplatform.wechat.permissions import uploadimg_hint

EXPECTED_CLASS_BY_ERRCODE: dict[int, type[WeChatError]] = {
    -1: TransientError,
    45011: RateLimited,
    40001: TokenInvalid,
    40014: TokenInvalid,
    42001: TokenInvalid,
    61023: RefreshTokenInvalid,
    61003: NotAuthorized,
    61005: TicketInvalid,
    61006: TicketInvalid,
    45009: QuotaExceeded,
    48006: ClearQuotaExhausted,
    48001: AccountLacksApi,
    61007: PermissionSetNotGranted,
    48004: PermissionDenied,
    50001: PermissionDenied,
    50002: PermissionDenied,
    40005: InvalidPayload,
    40009: InvalidPayload,
    41005: InvalidPayload,
    44001: InvalidPayload,
    45001: InvalidPayload,
    61009: AuthCodeInvalid,
    61010: AuthCodeExpired,
    89503: AdminConfirmationRequired,
    89506: AdminConfirmationRequired,
    89507: AdminConfirmationRequired,
    40013: ConfigurationError,
    40125: ConfigurationError,
    41004: ConfigurationError,
    40164: ConfigurationError,
    61004: ConfigurationError,
    61011: ConfigurationError,
}


def _every_mapped_errcode() -> set[int]:
    return {code for cls in errors._ALL_CLASSES for code in cls.errcodes}


def test_expected_table_covers_every_errcode_declared_in_errors_py():
    assert set(EXPECTED_CLASS_BY_ERRCODE) == _every_mapped_errcode()


@pytest.mark.parametrize(("errcode", "cls"), sorted(EXPECTED_CLASS_BY_ERRCODE.items()))
def test_each_errcode_maps_to_its_class(errcode, cls):
    error = error_for(errcode, "some errmsg", http_status=200, path="/cgi-bin/x")

    assert type(error) is cls
    assert error_class_for(errcode) is cls
    assert error.errcode == errcode
    assert error.errmsg == "some errmsg"
    assert error.http_status == 200
    assert error.path == "/cgi-bin/x"


@pytest.mark.parametrize("cls", errors._ALL_CLASSES)
def test_every_declared_errcode_of_a_class_maps_back_to_that_class(cls):
    for errcode in cls.errcodes:
        assert type(error_for(errcode)) is cls


@pytest.mark.parametrize("errcode", [12345, 0, 40002, 99999, -2])
def test_unknown_errcode_maps_to_base_wechat_error(errcode):
    error = error_for(errcode, "whatever")

    assert type(error) is WeChatError
    assert error.errcode == errcode
    assert error.retryable is False


@pytest.mark.parametrize(
    ("cls", "retryable"),
    [
        (WeChatError, False),
        (TransientError, True),
        (NetworkError, True),
        (RateLimited, True),
        (TokenInvalid, False),
        (RefreshTokenInvalid, False),
        (NotAuthorized, False),
        (TicketInvalid, False),
        (MissingTicket, False),
        (QuotaExceeded, False),
        (ClearQuotaExhausted, False),
        (PermissionDenied, False),
        (AccountLacksApi, False),
        (PermissionSetNotGranted, False),
        (InvalidPayload, False),
        (AuthCodeInvalid, False),
        (AuthCodeExpired, False),
        (AdminConfirmationRequired, False),
        (ConfigurationError, False),
    ],
)
def test_only_transient_errors_are_retryable(cls, retryable):
    assert cls.retryable is retryable


def test_network_and_rate_limit_errors_are_transient():
    assert issubclass(NetworkError, TransientError)
    assert issubclass(RateLimited, TransientError)
    assert issubclass(MissingTicket, TicketInvalid)


def test_every_error_class_is_a_wechat_error():
    for cls in (*errors._ALL_CLASSES, NetworkError, MissingTicket):
        assert issubclass(cls, WeChatError)


def test_message_names_path_errcode_status_and_errmsg():
    error = error_for(40001, "invalid credential", http_status=200, path="/cgi-bin/media/uploadimg")

    assert str(error) == "/cgi-bin/media/uploadimg errcode=40001 http_status=200 invalid credential"


def test_transient_error_without_errcode_keeps_http_status():
    error = TransientError(None, "<html>bad gateway</html>", http_status=502, path="/cgi-bin/x")

    assert error.errcode is None
    assert error.http_status == 502
    assert "http_status=502" in str(error)


def test_missing_ticket_has_default_message_and_no_errcode():
    error = MissingTicket()

    assert error.errcode is None
    assert "component_verify_ticket" in str(error)


def test_every_mapped_errcode_has_a_human_meaning():
    assert _every_mapped_errcode() <= set(errors.ERRCODE_MEANINGS)


# -- dead authorization codes, and whose side lacks a permission --------------------------------------------


def test_an_expired_code_is_caught_as_a_dead_code():
    expired, unknown = error_for(61010, "code is expired"), error_for(61009, "code is invalid")

    assert type(expired) is AuthCodeExpired and type(unknown) is AuthCodeInvalid
    # One except clause treats both as final: the code can never be exchanged again.
    for error in (expired, unknown):
        with pytest.raises(AuthCodeInvalid):
            raise error
    assert "expired" in errors.ERRCODE_MEANINGS[61010]


def test_61007_and_48001_are_told_apart_but_caught_as_permission_denied():
    not_granted, lacking = error_for(61007), error_for(48001)

    assert type(not_granted) is PermissionSetNotGranted and type(lacking) is AccountLacksApi
    assert isinstance(not_granted, PermissionDenied) and isinstance(lacking, PermissionDenied)
    assert not isinstance(not_granted, AccountLacksApi) and not isinstance(lacking, PermissionSetNotGranted)
    assert "has not granted this API's permission set" in errors.ERRCODE_MEANINGS[61007]
    assert "account itself" in errors.ERRCODE_MEANINGS[48001]


@pytest.mark.parametrize(("is_mini_program", "set_id"), [(False, 11), (True, 18)])
def test_uploadimg_hint_tells_the_operator_what_to_do_for_each_code(is_mini_program, set_id):
    not_granted = uploadimg_hint(is_mini_program=is_mini_program, errcode=61007)
    lacking = uploadimg_hint(is_mini_program=is_mini_program, errcode=48001)
    default = uploadimg_hint(is_mini_program=is_mini_program)

    # 61007: hold the set on the console, then a re-authorization that asks for it
    assert f"permission set {set_id}" in not_granted
    assert "Open Platform console" in not_granted and f"category_id_list={set_id}" in not_granted
    # 48001: the account itself; re-authorizing does not help
    assert "account itself lacks" in lacking and "re-authorizing does not help" in lacking
    # without an errcode the hint is what it always was
    assert default == f"the merchant must grant permission set {set_id} " + (
        "(Development and data analysis) to this platform"
        if is_mini_program
        else "(Material management, 素材管理) to this platform"
    )
