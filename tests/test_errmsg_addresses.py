"""WeChat's errmsg reaches tenants without our servers' IP addresses; operators keep the full text.

WeChat names the caller's address in some errmsgs (40164 "invalid ip 1.2.3.4 ipv6 ::ffff:1.2.3.4, not in
whitelist rid: ...", 61004 "... requestIP: 1.2.3.4"; docs/wechat-protocol.md §11). The caller is us: the
address is our egress, which is no tenant's to read. The simulator answers with the address it saw (the
test's, 127.0.0.1), as WeChat would.
"""

from __future__ import annotations

import pytest

from openplatform.wechat.errors import without_addresses
from tests.fixtures import expire_access_token
from uploads.models import Upload, UploadAttempt
from uploads.services.process import upload_process

UPLOADIMG = "/cgi-bin/media/uploadimg"
AUTHORIZER_TOKEN = "/cgi-bin/component/api_authorizer_token"
PREAUTHCODE = "/cgi-bin/component/api_create_preauthcode"


@pytest.mark.parametrize(("errmsg", "scrubbed"), [
    ("invalid ip 1.2.3.4 ipv6 ::ffff:1.2.3.4, not in whitelist rid: 6543a1b2-0c7d1e2f-3a4b5c6d",
     "invalid ip [address] ipv6 [address], not in whitelist rid: 6543a1b2-0c7d1e2f-3a4b5c6d"),
    ("api ip not in whitelist 203.0.113.9 hint: [Nb2xuA0256e542] rid: 65f0a1b2-1c2d3e4f",
     "api ip not in whitelist [address] hint: [Nb2xuA0256e542] rid: 65f0a1b2-1c2d3e4f"),
    ("access clientip is not registered requestIP: 2001:db8:85a3::8a2e:370:7334",
     "access clientip is not registered requestIP: [address]"),
    ("from fe80::1%eth0, [2001:db8::2]:443 and 10.0.0.7:8080.", "from [address], [[address]]:443 and [address]:8080."),
    ("::1 and 0.0.0.0", "[address] and [address]"),
])
def test_ipv4_and_ipv6_addresses_are_replaced(errmsg, scrubbed):
    assert without_addresses(errmsg) == scrubbed


@pytest.mark.parametrize("kept", [
    "45009 reach max api daily quota limit rid: 65f0a1b2-1c2d3e4f-5a6b7c8d (daily API quota reached)",
    "at 10:30:00, version 1.2.3, build 1.2.3.4.5, 999.1.1.1",
    "access token: /cgi-bin/component/api_authorizer_token errcode=-1 http_status=500 system error",
    "",
])
def test_text_without_addresses_is_unchanged(kept):
    assert without_addresses(kept) == kept


def _api_errmsg(api_client, upload) -> str:
    detail = api_client.get(f"/api/v1/uploads/{upload.pk}/").json()["errmsg"]
    listed = [r for r in api_client.get("/api/v1/uploads/").json()["results"] if r["id"] == str(upload.pk)]
    assert listed[0]["errmsg"] == detail
    return detail


def test_40164_from_uploadimg_reaches_the_tenant_without_the_address(
    api_client, authorizer, component, make_upload, admin_client
):
    upload = make_upload(authorizer)
    component.inject_fault(UPLOADIMG, "errcode", count=1, errcode=40164)  # WeChat's text, with our address

    upload_process(upload_id=upload.pk)

    upload.refresh_from_db()
    (attempt,) = UploadAttempt.objects.filter(upload=upload)
    assert upload.status == Upload.Status.FAILED and upload.errcode == 40164
    # operators: the record, its attempt and the admin keep WeChat's full text
    assert "invalid ip 127.0.0.1 ipv6 ::ffff:127.0.0.1" in attempt.errmsg
    assert "127.0.0.1" in upload.errmsg
    page = admin_client.get(f"/admin/uploads/upload/{upload.pk}/change/").content.decode()
    assert "invalid ip 127.0.0.1 ipv6 ::ffff:127.0.0.1" in page
    # the tenant: the same message, addresses replaced
    shown = _api_errmsg(api_client, upload)
    assert "127.0.0.1" not in shown and "::ffff" not in shown
    assert shown == upload.errmsg.replace("::ffff:127.0.0.1", "[address]").replace("127.0.0.1", "[address]")
    assert shown.startswith("40164 invalid ip [address] ipv6 [address], not in whitelist rid: ")


def test_61004_with_an_ipv6_address_while_refreshing_the_token_reaches_the_tenant_without_it(
    api_client, authorizer, component, make_upload
):
    expire_access_token(authorizer)
    upload = make_upload(authorizer)
    component.inject_fault(AUTHORIZER_TOKEN, "errcode", count=1, errcode=61004,
                           errmsg="api ip not in whitelist 2001:db8::17 hint: [Xy12ab]")

    upload_process(upload_id=upload.pk)

    upload.refresh_from_db()
    assert upload.status == Upload.Status.FAILED and upload.errcode == 61004
    assert "2001:db8::17" in upload.errmsg
    assert "2001:db8::17" in UploadAttempt.objects.get(upload=upload).errmsg
    shown = _api_errmsg(api_client, upload)
    assert "2001:db8" not in shown
    assert "api ip not in whitelist [address] hint: [Xy12ab]" in shown


def test_a_refusal_quoting_wechat_carries_no_address(api_client, component, ticket):
    """POST /api/v1/authorization-links/ quotes WeChat when it cannot get a pre-authorization code."""
    component.inject_fault(PREAUTHCODE, "errcode", count=1, errcode=61004)

    response = api_client.post("/api/v1/authorization-links/", {}, format="json")

    assert response.status_code == 503, response.content
    body = response.json()
    assert body["code"] == "wechat_unavailable"
    assert "61004" in body["detail"] and "requestIP: [address]" in body["detail"]
    assert "127.0.0.1" not in body["detail"]
