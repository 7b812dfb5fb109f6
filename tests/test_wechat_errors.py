"""The errcode -> exception mapper (openplatform/wechat/errors.py, docs/wechat-protocol.md §11)."""

from __future__ import annotations

import pytest

from openplatform.wechat import errors
from openplatform.wechat.errors import (
    AdminConfirmationRequired,
    AuthCodeInvalid,
    ClearQuotaExhausted,
    ConfigurationError,
    InvalidPayload,
    MissingTicket,
    NetworkError,
    NotAuthorized,
    PermissionDenied,
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
    48001: PermissionDenied,
    61007: PermissionDenied,
    48004: PermissionDenied,
    50001: PermissionDenied,
    50002: PermissionDenied,
    40005: InvalidPayload,
    40009: InvalidPayload,
    41005: InvalidPayload,
    44001: InvalidPayload,
    45001: InvalidPayload,
    61009: AuthCodeInvalid,
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
        (InvalidPayload, False),
        (AuthCodeInvalid, False),
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
