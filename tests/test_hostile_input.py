"""Every input field and query parameter of the merchant API, with each hostile value: a NUL byte, a lone
surrogate (JSON's "\\ud800", or its UTF-8 bytes %ED%A0%80 in a query string or a form), a string far
longer than any real value. Each answers a 4xx with its stable code, never a 500: PostgreSQL refuses NUL
in text, and a lone surrogate cannot be encoded to UTF-8 (neither for the database nor in a JSON answer).

Runs on PostgreSQL (`make test`), where NUL used to reach a query.
"""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest

from tests.fixtures import image_bytes
from uploads.models import Upload

pytestmark = pytest.mark.postgres

UPLOADS = "/api/v1/uploads/"
AUTHORIZERS = "/api/v1/authorizers/"
LINKS = "/api/v1/authorization-links/"

#: name -> (the value as a Python string, as it is put in a query string or a multipart form)
HOSTILE = {
    "nul": ("wx\x00abc", "wx%00abc", b"wx\x00abc"),
    "lone-surrogate": ("\ud800", "%ED%A0%80", b"\xed\xa0\x80"),
    "overlong": ("w" * 20_000, "w" * 20_000, b"w" * 20_000),
}


def assert_code(response, status: int, code: str) -> None:
    assert response.status_code == status, (response.status_code, response.content[:300])
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert body["code"] == code, body
    assert body["detail"]


def multipart(fields: list[tuple[str, bytes]], media: bytes) -> tuple[bytes, str]:
    """A multipart body with raw field bytes (a test client would encode a str to UTF-8 first)."""
    boundary = "hostile0b0undary"
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode() + value + b"\r\n"
             for name, value in fields]
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="media"; filename="a.png"\r\n'
                 "Content-Type: image/png\r\n\r\n".encode() + media + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


# -- query parameters -------------------------------------------------------------------------------------

QUERY_PARAMETERS = {
    # (path, parameter) -> (status, code)
    (UPLOADS, "status"): (400, "invalid_status"),
    (UPLOADS, "authorizer_appid"): (400, "invalid_authorizer_appid"),
    (UPLOADS, "page"): (400, "invalid_page"),
    (AUTHORIZERS, "page"): (400, "invalid_page"),
}


@pytest.mark.parametrize("value", list(HOSTILE))
@pytest.mark.parametrize(("path", "parameter"), list(QUERY_PARAMETERS))
def test_query_parameters_refuse_hostile_values_with_their_code(api_client, authorizer, path, parameter, value):
    _, in_query, _ = HOSTILE[value]

    response = api_client.get(f"{path}?{parameter}={in_query}")

    assert_code(response, *QUERY_PARAMETERS[(path, parameter)])


@pytest.mark.parametrize("value", list(HOSTILE))
def test_fit_in_the_query_refuses_hostile_values(api_client, authorizer, value):
    _, in_query, _ = HOSTILE[value]

    response = api_client.post(f"{UPLOADS}?fit={in_query}", {"authorizer_appid": authorizer.appid,
                                                              "media": _media()}, format="multipart")

    assert_code(response, 400, "invalid")
    assert not Upload.objects.exists()


@pytest.mark.parametrize("value", list(HOSTILE))
def test_the_upload_id_in_the_path_is_a_404_for_hostile_values(api_client, authorizer, value):
    """An id that names nothing is not_found, as another tenant's is (never a 400 that would tell them apart)."""
    _, in_query, _ = HOSTILE[value]

    assert_code(api_client.get(f"{UPLOADS}{in_query}/"), 404, "not_found")


@pytest.mark.parametrize("value", list(HOSTILE))
@pytest.mark.parametrize("path", [UPLOADS, AUTHORIZERS])
def test_format_and_unknown_parameters_never_error(api_client, authorizer, path, value):
    """`?format=` is DRF's (an unknown renderer is a 404, docs/contract.md); other parameters are ignored."""
    _, in_query, _ = HOSTILE[value]

    assert_code(api_client.get(f"{path}?format={in_query}"), 404, "not_found")
    assert api_client.get(f"{path}?{in_query}={in_query}").status_code == 200


# -- POST /api/v1/uploads/: form fields and the Idempotency-Key header ---------------------------------------


def _media():
    from tests.fixtures import media_file

    return media_file(image_bytes())


@pytest.mark.parametrize("value", list(HOSTILE))
@pytest.mark.parametrize(("field", "code"), [("authorizer_appid", "unknown_authorizer"), ("fit", "invalid")])
def test_upload_form_fields_refuse_hostile_values(api_client, authorizer, field, code, value):
    _, _, raw = HOSTILE[value]
    fields = {"authorizer_appid": authorizer.appid.encode(), field: raw}
    body, content_type = multipart(list(fields.items()), image_bytes())

    response = api_client.generic("POST", UPLOADS, body, content_type=content_type)

    assert_code(response, 400, code)
    assert not Upload.objects.exists()


@pytest.mark.parametrize("value", list(HOSTILE))
def test_idempotency_key_refuses_hostile_values(api_client, authorizer, value):
    as_text, _, _ = HOSTILE[value]

    response = api_client.post(UPLOADS, {"authorizer_appid": authorizer.appid, "media": _media()},
                               format="multipart", headers={"Idempotency-Key": as_text})

    assert_code(response, 400, "invalid_idempotency_key")
    assert not Upload.objects.exists()


@pytest.mark.parametrize(("value", "answer"), [
    ("nul", (202, None)),  # Django drops the NUL; the name is not kept anyway (the content decides)
    ("lone-surrogate", (400, "missing_media")),  # a part header that is not UTF-8 is skipped
    ("overlong", (400, "parse_error")),  # past Django's limit on a part's headers
])
def test_a_hostile_file_name_is_accepted_or_refused_never_an_error(api_client, authorizer, value, answer):
    _, _, raw = HOSTILE[value]
    body, content_type = multipart([("authorizer_appid", authorizer.appid.encode())], image_bytes())
    body = body.replace(b'filename="a.png"', b'filename="' + raw + b'.png"')

    response = api_client.generic("POST", UPLOADS, body, content_type=content_type)

    if answer[1] is None:
        assert response.status_code == 202, response.content[:300]
    else:
        assert_code(response, *answer)


# -- POST /api/v1/authorization-links/ -----------------------------------------------------------------------


@pytest.mark.parametrize("value", list(HOSTILE))
@pytest.mark.parametrize("shape", ["item", "list", "key"])
def test_authorization_link_fields_refuse_hostile_values(api_client, component, ticket, shape, value):
    as_text, _, _ = HOSTILE[value]
    body = {
        "item": {"category_id_list": [as_text]},
        "list": {"category_id_list": as_text},
        "key": {as_text: [11], "category_id_list": [as_text]},
    }[shape]

    # json.dumps escapes the surrogate as \ud800, as a client's JSON encoder would
    response = api_client.generic("POST", LINKS, json.dumps(body), content_type="application/json")

    assert_code(response, 400, "invalid")


@pytest.mark.parametrize("value", list(HOSTILE))
def test_authorization_link_form_fields_refuse_hostile_values(api_client, component, ticket, value):
    _, in_query, _ = HOSTILE[value]

    response = api_client.generic("POST", LINKS, f"category_id_list={in_query}",
                                  content_type="application/x-www-form-urlencoded")

    assert_code(response, 400, "invalid")


def test_a_json_body_that_is_not_utf8_is_a_parse_error(api_client, component, ticket):
    response = api_client.generic("POST", LINKS, b'{"category_id_list": ["\xed\xa0\x80"]}',
                                  content_type="application/json")

    assert_code(response, 400, "parse_error")


def test_hostile_values_are_refused_before_any_query_of_them(api_client, authorizer, django_assert_max_num_queries):
    """The filter is checked before the database sees it: the API key's query only."""
    with django_assert_max_num_queries(1):
        response = api_client.get(f"{UPLOADS}?authorizer_appid={quote(chr(0))}")
    assert_code(response, 400, "invalid_authorizer_appid")
