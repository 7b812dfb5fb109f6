"""Ownership of WeChat accounts and the cost of onboarding (issue 11, points 1, 2, 3 and 5).

1. Re-authorization never moves or revives an account behind anyone's back: a live binding keeps the
   fresh tokens, a revoked one stays revoked and becomes a transfer request for the operator; the event
   path never revives a revoked binding.
2. The worker re-checks ownership right before sending: an upload of an account that moved is rejected.
3. An exchange expires with its code; a link's state binds one account.
5. Throttles on the link API and the redirect; no row lock held while WeChat answers; a dead code
   costs one api_query_auth call.

Everything runs through the real code paths against the simulator (real HTTP), on the test database.
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from django.conf import settings as django_settings
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from openplatform.component.models import ComponentEvent
from tenants.models import AuthCodeExchange, AuthorizationStateUse, Authorizer, AuthorizerTransferRequest
from tenants.services.authorization import _code_hash, authorization_state_make, authorizer_revoke
from tenants.services.reconcile import authorizers_reconcile
from tenants.tasks import process_component_event, sweep_component_events
from tests.fixtures import (
    AUTHORIZED_REDIRECT_PATH,
    COMPONENT_EVENTS_PATH,
    image_bytes,
    media_file,
    post_raw,
    signed_event,
    sim_count,
)
from uploads.models import Upload
from uploads.services.process import upload_process

APPID = django_settings.WECHAT_COMPONENT_APPID
QUERY_AUTH = "/cgi-bin/component/api_query_auth"


def redirect(client, tenant, grant, **params):
    query = {"state": authorization_state_make(tenant=tenant), "auth_code": grant["auth_code"], **params}
    return client.get(AUTHORIZED_REDIRECT_PATH, query)


def authorized_xml(grant: dict, *, info_type: str = "authorized", lifetime: int = 3600) -> str:
    """An authorization push as WeChat sends it now (CreateTime now, the code's expiry `lifetime` later)."""
    now = int(time.time())
    return (
        f"<xml><AppId>{APPID}</AppId><CreateTime>{now}</CreateTime><InfoType>{info_type}</InfoType>"
        f"<AuthorizerAppid>{grant['authorizer_appid']}</AuthorizerAppid>"
        f"<AuthorizationCode>{grant['auth_code']}</AuthorizationCode>"
        f"<AuthorizationCodeExpiredTime>{now + lifetime}</AuthorizationCodeExpiredTime>"
        "<PreAuthCode>p</PreAuthCode></xml>"
    )


def push(client, xml: str) -> ComponentEvent:
    body, params = signed_event(xml)
    assert post_raw(client, COMPONENT_EVENTS_PATH, body, params).content == b"success"
    return ComponentEvent.objects.order_by("-pk").first()


def wait_for(predicate, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


def _transfer_group(html: str) -> str:
    """The dashboard's "Transfer requested" group, up to the next group."""
    start = html.index('id="op-attention-transfer_requested"')
    return html[start:html.index('id="op-attention-', start + 1)]


def _action(admin_client, model: str, action: str, pks):
    return admin_client.post(
        f"/admin/{model}/", {"action": action, "_selected_action": [str(pk) for pk in pks]}, follow=True
    )


@pytest.fixture
def revoked_for_alpha(component, make_tenant, make_authorizer, make_upload):
    """alpha's account, with one upload sent, then revoked by the merchant (the `unauthorized` event)."""
    alpha, beta = make_tenant("alpha"), make_tenant("beta")
    authorizer = make_authorizer(alpha, func_info=(1, 11))
    sent = make_upload(authorizer)
    assert upload_process(upload_id=sent.pk).status == "succeeded"
    component.revoke(authorizer.appid)
    authorizer_revoke(authorizer=authorizer)
    return alpha, beta, Authorizer.objects.get(pk=authorizer.pk), sent


def _nothing_stored(authorizer: Authorizer, tenant) -> None:
    row = Authorizer.objects.get(pk=authorizer.pk)
    assert row.tenant == tenant
    assert row.status == Authorizer.Status.REVOKED
    assert (row.refresh_token_ciphertext, row.access_token_ciphertext) == ("", "")


# -- 1. re-authorization through another tenant's link ----------------------------------------------------


@pytest.mark.django_db
def test_a_live_binding_keeps_working_with_the_fresh_tokens_and_the_other_tenant_gets_409(
    ticket, component, make_tenant, make_authorizer, make_upload, client
):
    alpha, beta = make_tenant("alpha"), make_tenant("beta")
    authorizer = make_authorizer(alpha)
    grant = component.authorize(APPID, authorizer_appid=authorizer.appid, func_info=[1, 11])

    response = redirect(client, beta, grant)

    assert response.status_code == 409
    assert b"already connected to another merchant" in response.content
    row = Authorizer.objects.get(pk=authorizer.pk)
    assert row.tenant == alpha and row.status == Authorizer.Status.AUTHORIZED
    # WeChat replaced the refresh token: alpha holds the new one, and alpha's uploads still go out
    assert row.get_refresh_token() == component.authorizer(authorizer.appid)["refresh_token"]
    assert upload_process(upload_id=make_upload(row).pk).status == "succeeded"
    assert not AuthorizerTransferRequest.objects.exists()
    assert not AuthorizationStateUse.objects.exists()  # a 409 binds nothing: beta's link stays usable


@pytest.mark.django_db
def test_a_revoked_binding_stays_revoked_and_the_operator_may_move_it(
    ticket, component, revoked_for_alpha, make_upload, make_api_client, client, admin_client,
    django_capture_on_commit_callbacks,
):
    alpha, beta, authorizer, sent = revoked_for_alpha
    # alpha still queues an upload for the account (accepted; the worker would reject it)
    queued = make_upload(authorizer)
    # given the account's administrator authorizes it again, through beta's link
    grant = component.authorize(APPID, authorizer_appid=authorizer.appid, func_info=[11])
    params = {"state": authorization_state_make(tenant=beta), "auth_code": grant["auth_code"]}

    response = client.get(AUTHORIZED_REDIRECT_PATH, params)

    # then beta gets the 409 page, and nothing is stored for alpha: still revoked, no token
    assert response.status_code == 409
    assert b"already connected to another merchant" in response.content
    _nothing_stored(authorizer, alpha)
    # and a transfer request waits, with WeChat's refresh token kept encrypted
    transfer = AuthorizerTransferRequest.objects.get()
    assert (transfer.appid, transfer.from_tenant, transfer.to_tenant) == (authorizer.appid, alpha, beta)
    assert transfer.state == AuthorizerTransferRequest.State.PENDING and transfer.func_info == [11]
    fresh = component.authorizer(authorizer.appid)["refresh_token"]
    assert transfer.get_refresh_token() == fresh and fresh not in transfer.refresh_token_ciphertext
    # a reload changes nothing
    assert client.get(AUTHORIZED_REDIRECT_PATH, params).status_code == 409
    assert AuthorizerTransferRequest.objects.count() == 1
    _nothing_stored(authorizer, alpha)

    # when the operator opens the admin: the dashboard lists it, the request's page never shows the token
    group = _transfer_group(admin_client.get("/admin/").content.decode())
    assert authorizer.appid in group and "beta" in group and "alpha" in group
    assert f"/admin/tenants/authorizertransferrequest/{transfer.pk}/change/" in group
    page = admin_client.get(f"/admin/tenants/authorizertransferrequest/{transfer.pk}/change/").content.decode()
    assert fresh not in page and transfer.refresh_token_ciphertext not in page

    # and moves the account to beta
    with django_capture_on_commit_callbacks(execute=True):
        moved = _action(admin_client, "tenants/authorizertransferrequest", "move_to_requesting_tenant", [transfer.pk])
    assert moved.status_code == 200 and f"{authorizer.appid[1:]}: moved to beta".encode() in moved.content

    # then it is beta's, authorized with the kept refresh token; the request is closed and wiped
    row = Authorizer.objects.get(pk=authorizer.pk)
    assert row.tenant == beta and row.status == Authorizer.Status.AUTHORIZED and row.func_info == [11]
    assert row.get_refresh_token() == fresh
    transfer.refresh_from_db()
    assert transfer.state == AuthorizerTransferRequest.State.TRANSFERRED and transfer.refresh_token_ciphertext == ""
    # alpha's queued upload is rejected, never sent; alpha's history stays alpha's
    queued.refresh_from_db()
    assert queued.status == Upload.Status.REJECTED and "moved to another merchant" in queued.errmsg
    sent.refresh_from_db()
    assert sent.tenant == alpha and sent.status == Upload.Status.SUCCEEDED
    alpha_api, beta_api = make_api_client(alpha), make_api_client(beta)
    assert alpha_api.get("/api/v1/authorizers/").json()["count"] == 0
    assert {u["id"] for u in alpha_api.get("/api/v1/uploads/").json()["results"]} == {str(sent.pk), str(queued.pk)}
    assert beta_api.get("/api/v1/uploads/").json()["count"] == 0
    # and beta's uploads go out on it (the access token comes from the kept refresh token)
    accepted = beta_api.post("/api/v1/uploads/", {"media": media_file(image_bytes()), "authorizer_appid": row.appid},
                             format="multipart")
    assert accepted.status_code == 202, accepted.content
    assert upload_process(upload_id=accepted.json()["id"]).status == "succeeded"
    assert sim_count(component, "/cgi-bin/media/uploadimg") == 2  # alpha's first one, beta's


@pytest.mark.django_db
def test_declining_a_transfer_leaves_the_account_revoked_and_wipes_the_kept_token(
    ticket, component, revoked_for_alpha, client, admin_client
):
    alpha, beta, authorizer, _ = revoked_for_alpha
    grant = component.authorize(APPID, authorizer_appid=authorizer.appid)
    assert redirect(client, beta, grant).status_code == 409
    transfer = AuthorizerTransferRequest.objects.get()

    response = _action(admin_client, "tenants/authorizertransferrequest", "decline", [transfer.pk])

    assert response.status_code == 200
    transfer.refresh_from_db()
    assert transfer.state == AuthorizerTransferRequest.State.DECLINED and transfer.refresh_token_ciphertext == ""
    _nothing_stored(authorizer, alpha)
    # a declined request cannot be approved afterwards
    again = _action(admin_client, "tenants/authorizertransferrequest", "move_to_requesting_tenant", [transfer.pk])
    assert b"not pending" in again.content
    _nothing_stored(authorizer, alpha)


@pytest.mark.django_db
def test_the_owner_authorizing_again_itself_revives_it_and_supersedes_a_pending_transfer(
    ticket, component, revoked_for_alpha, client, admin_client
):
    alpha, beta, authorizer, _ = revoked_for_alpha
    assert redirect(client, beta, component.authorize(APPID, authorizer_appid=authorizer.appid)).status_code == 409
    transfer = AuthorizerTransferRequest.objects.get()

    # alpha's administrator authorizes again through alpha's own link
    grant = component.reauthorize(authorizer.appid)
    response = redirect(client, alpha, grant)

    assert response.status_code == 200 and b"Authorization complete" in response.content
    row = Authorizer.objects.get(pk=authorizer.pk)
    assert row.tenant == alpha and row.status == Authorizer.Status.AUTHORIZED
    assert row.get_refresh_token() == component.authorizer(authorizer.appid)["refresh_token"]
    transfer.refresh_from_db()
    assert transfer.state == AuthorizerTransferRequest.State.SUPERSEDED and transfer.refresh_token_ciphertext == ""
    assert authorizer.appid not in _transfer_group(admin_client.get("/admin/").content.decode())


@pytest.mark.django_db(transaction=True)
def test_an_authorization_event_never_revives_a_revoked_binding(ticket, component, revoked_for_alpha, client):
    alpha, beta, authorizer, _ = revoked_for_alpha
    grant = component.authorize(APPID, authorizer_appid=authorizer.appid, func_info=[11])
    calls = sim_count(component, QUERY_AUTH)

    # WeChat pushes `authorized` (no tenant here: nobody to decide for)
    event = push(client, authorized_xml(grant))
    process_component_event(event.pk)

    # then nothing is stored and the code is left to the redirect: WeChat was not asked
    _nothing_stored(authorizer, alpha)
    assert sim_count(component, QUERY_AUTH) == calls
    event.refresh_from_db()
    assert event.processed_at is not None and event.auth_code_ciphertext == ""
    assert "binding to its merchant is revoked" in event.error
    # and the redirect that follows decides: through beta's link, a transfer request
    assert redirect(client, beta, grant).status_code == 409
    _nothing_stored(authorizer, alpha)
    assert AuthorizerTransferRequest.objects.get().to_tenant == beta
    assert sim_count(component, QUERY_AUTH) == calls + 1


@pytest.mark.django_db(transaction=True)
def test_after_the_event_the_owners_own_redirect_still_revives_it(ticket, component, revoked_for_alpha, client):
    alpha, _, authorizer, _ = revoked_for_alpha
    grant = component.authorize(APPID, authorizer_appid=authorizer.appid)
    process_component_event(push(client, authorized_xml(grant)).pk)  # usually first: WeChat pushes at once

    response = redirect(client, alpha, grant)

    assert response.status_code == 200, response.content
    row = Authorizer.objects.get(pk=authorizer.pk)
    assert row.tenant == alpha and row.status == Authorizer.Status.AUTHORIZED
    assert row.get_refresh_token() == component.authorizer(authorizer.appid)["refresh_token"]


@pytest.mark.django_db
def test_reconciliation_stores_nothing_for_a_revoked_binding_wechat_lists_again(
    ticket, component, revoked_for_alpha
):
    alpha, _, authorizer, _ = revoked_for_alpha
    component.authorize(APPID, authorizer_appid=authorizer.appid)  # listed again, with a refresh token

    authorizers_reconcile()

    _nothing_stored(authorizer, alpha)


# -- 2. ownership re-checked at send time --------------------------------------------------------------------


@pytest.mark.django_db
def test_an_upload_whose_account_moves_while_it_is_processed_is_rejected_and_never_sent(
    component, make_tenant, make_authorizer, make_upload
):
    alpha, beta = make_tenant("alpha"), make_tenant("beta")
    authorizer = make_authorizer(alpha)
    upload = make_upload(authorizer)
    moved: list[bool] = []

    def move_while_the_image_is_read(execute, sql, params, many, context):
        # The worker has claimed the upload and checked it; the operator moves the account meanwhile
        # (a transfer, the admin form). The upload is `uploading`, so no queued-upload sweep sees it.
        if "uploads_uploadblob" in sql and not moved:
            moved.append(True)
            Authorizer.objects.filter(pk=authorizer.pk).update(tenant=beta)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(move_while_the_image_is_read):
        outcome = upload_process(upload_id=upload.pk)

    assert moved, "the image was never read"
    assert outcome.status == Upload.Status.REJECTED
    upload.refresh_from_db()
    assert upload.status == Upload.Status.REJECTED and upload.tenant == alpha
    assert "moved to another merchant" in upload.errmsg and "nothing was sent" in upload.errmsg
    assert component.uploads() == [] and sim_count(component, "/cgi-bin/media/uploadimg") == 0


@pytest.mark.django_db
def test_moving_an_account_in_the_admin_form_rejects_the_old_tenants_queued_uploads(
    component, make_tenant, make_authorizer, make_upload, admin_client, django_capture_on_commit_callbacks
):
    alpha, beta = make_tenant("alpha"), make_tenant("beta")
    authorizer = make_authorizer(alpha)
    queued = make_upload(authorizer)
    # (the form's one editable field is the tenant: everything else comes from WeChat)
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(f"/admin/tenants/authorizer/{authorizer.pk}/change/", {"tenant": str(beta.pk)})

    assert response.status_code == 302, response.content[:2000]
    assert Authorizer.objects.get(pk=authorizer.pk).tenant == beta
    queued.refresh_from_db()
    assert queued.status == Upload.Status.REJECTED and queued.tenant == alpha
    assert sim_count(component, "/cgi-bin/media/uploadimg") == 0


# -- 3. expiry with the code, single-use state ---------------------------------------------------------------


@pytest.mark.django_db
def test_an_exchange_expires_with_the_code_and_then_never_asks_wechat(ticket, component, tenant, client):
    grant = component.authorize(APPID)
    state = authorization_state_make(tenant=tenant)
    params = {"state": state, "auth_code": grant["auth_code"], "expires_in": 1}
    component.inject_fault(QUERY_AUTH, "http_status", count=5, status=502)
    assert client.get(AUTHORIZED_REDIRECT_PATH, params).status_code == 502  # WeChat down at first
    component.clear_faults()
    calls = sim_count(component, QUERY_AUTH)
    time.sleep(1.2)  # the code's second is over (the simulator's code would still work)

    reload = client.get(AUTHORIZED_REDIRECT_PATH, params)

    assert reload.status_code == 400 and b"expired" in reload.content
    assert sim_count(component, QUERY_AUTH) == calls
    assert not Authorizer.objects.exists()


@pytest.mark.django_db
def test_an_exchange_lives_at_most_an_hour_whatever_expires_in_says(ticket, component, tenant, client):
    grant = component.authorize(APPID)
    before = timezone.now()
    assert redirect(client, tenant, grant, expires_in=86400).status_code == 200
    exchange = AuthCodeExchange.objects.get(code_sha256=_code_hash(grant["auth_code"]))
    assert timedelta(minutes=59) < exchange.expires_at - before <= timedelta(hours=1, seconds=5)
    assert exchange.claimed_until is None and exchange.claim_token == ""


@pytest.mark.django_db(transaction=True)
def test_an_event_whose_code_expired_is_closed_without_asking_wechat(ticket, component, client):
    grant = component.authorize(APPID)
    event = push(client, authorized_xml(grant, lifetime=1))
    assert event.auth_code_expires_at - event.received_at <= timedelta(seconds=1)
    time.sleep(1.2)

    process_component_event(event.pk)

    event.refresh_from_db()
    assert event.processed_at is not None and event.auth_code_ciphertext == ""
    assert "61010" in event.error and "authorize again" in event.error
    assert sim_count(component, QUERY_AUTH) == 0
    assert not Authorizer.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_the_sweeper_closes_an_event_at_its_codes_expiry(ticket, component, client):
    grant = component.authorize(APPID)
    event = push(client, authorized_xml(grant, lifetime=1))
    ComponentEvent.objects.filter(pk=event.pk).update(received_at=timezone.now() - timedelta(minutes=5))
    time.sleep(1.2)

    assert sweep_component_events() == 0  # closed, not re-enqueued

    event.refresh_from_db()
    assert event.processed_at is not None and "expired" in event.error and event.auth_code_ciphertext == ""
    assert sim_count(component, QUERY_AUTH) == 0


@pytest.mark.django_db
def test_a_link_binds_one_account_and_a_reload_still_shows_its_page(ticket, component, tenant, client):
    state = authorization_state_make(tenant=tenant)
    first = component.authorize(APPID)
    assert client.get(AUTHORIZED_REDIRECT_PATH, {"state": state, "auth_code": first["auth_code"]}).status_code == 200

    # the same link's state with another code (a leaked link, replayed for another account)
    second = component.authorize(APPID)
    replay = client.get(AUTHORIZED_REDIRECT_PATH, {"state": state, "auth_code": second["auth_code"]})

    assert replay.status_code == 400 and b"already been used" in replay.content
    assert not Authorizer.objects.filter(appid=second["authorizer_appid"]).exists()
    assert sim_count(component, QUERY_AUTH) == 1  # refused before WeChat was asked
    # a reload of the first redirect is still its page
    reload = client.get(AUTHORIZED_REDIRECT_PATH, {"state": state, "auth_code": first["auth_code"]})
    assert reload.status_code == 200 and b"Authorization complete" in reload.content
    assert AuthorizationStateUse.objects.get().code_sha256 == _code_hash(first["auth_code"])


@pytest.mark.django_db
def test_a_link_that_met_a_409_stays_usable(ticket, component, make_tenant, make_authorizer, client):
    alpha, beta = make_tenant("alpha"), make_tenant("beta")
    taken = make_authorizer(alpha)
    state = authorization_state_make(tenant=beta)
    wrong = component.authorize(APPID, authorizer_appid=taken.appid)
    assert client.get(AUTHORIZED_REDIRECT_PATH, {"state": state, "auth_code": wrong["auth_code"]}).status_code == 409

    right = component.authorize(APPID)
    response = client.get(AUTHORIZED_REDIRECT_PATH, {"state": state, "auth_code": right["auth_code"]})

    assert response.status_code == 200
    assert Authorizer.objects.get(appid=right["authorizer_appid"]).tenant == beta


# -- 5. quota burn --------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_authorization_links_are_throttled_per_tenant_at_20_an_hour(
    ticket, component, api_client, make_tenant, make_api_client
):
    for _ in range(20):
        assert api_client.post("/api/v1/authorization-links/").status_code == 201

    refused = api_client.post("/api/v1/authorization-links/")

    assert refused.status_code == 429 and refused.json()["code"] == "throttled"
    assert 0 < int(refused["Retry-After"]) <= 3600  # the rest of the hour's window (fixed windows)
    assert sim_count(component, "api_create_preauthcode") == 20
    # another tenant has its own budget, and the tenant's other endpoints are not affected
    assert make_api_client(make_tenant("other")).post("/api/v1/authorization-links/").status_code == 201
    assert api_client.get("/api/v1/authorizers/").status_code == 200


@pytest.mark.django_db
def test_the_link_rate_is_a_setting(ticket, component, api_client, settings):
    settings.AUTHORIZATION_LINK_THROTTLE_RATE = "2/min"
    assert [api_client.post("/api/v1/authorization-links/").status_code for _ in range(3)] == [201, 201, 429]


@pytest.mark.django_db
def test_the_redirect_is_throttled_per_client_address(ticket, component, tenant, client):
    outsider = {"REMOTE_ADDR": "203.0.113.7"}
    for _ in range(30):  # the default rate: 30 an hour
        assert client.get(AUTHORIZED_REDIRECT_PATH, {"state": "x"}, **outsider).status_code == 400

    grant = component.authorize(APPID)
    params = {"state": authorization_state_make(tenant=tenant), "auth_code": grant["auth_code"]}
    refused = client.get(AUTHORIZED_REDIRECT_PATH, params, **outsider)

    assert refused.status_code == 429 and b"Too many authorization attempts" in refused.content
    assert 0 < int(refused["Retry-After"]) <= 3600  # the rest of the hour's window (fixed windows)
    assert sim_count(component, QUERY_AUTH) == 0  # refused before WeChat was asked
    # another address is not affected
    assert client.get(AUTHORIZED_REDIRECT_PATH, params, REMOTE_ADDR="198.51.100.9").status_code == 200


@pytest.mark.django_db
def test_the_redirect_rate_is_a_setting(ticket, client, settings):
    settings.AUTHORIZED_REDIRECT_THROTTLE_RATE = "2/min"
    codes = [client.get(AUTHORIZED_REDIRECT_PATH).status_code for _ in range(3)]
    assert codes == [400, 400, 429]


def _row_is_free(model, **lookup) -> bool:
    """Whether another connection can lock the row right now (PostgreSQL: NOWAIT fails at once if not).
    A row not visible yet is not free either: its transaction is still open."""
    try:
        with transaction.atomic():
            model.objects.select_for_update(nowait=True).get(**lookup)
    except (DatabaseError, model.DoesNotExist):
        return False
    return True


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_no_row_lock_is_held_while_wechat_answers_the_exchange(ticket, component, make_tenant, make_authorizer, client):
    # given an account being authorized again (so there is an authorizer row), with WeChat slow to answer
    tenant = make_tenant("alpha")
    authorizer = make_authorizer(tenant)
    grant = component.reauthorize(authorizer.appid)
    event = push(client, authorized_xml(grant, info_type="updateauthorized"))
    component.set_latency(QUERY_AUTH, 1.0)
    component.set_latency("/cgi-bin/component/api_get_authorizer_info", 1.0)
    before = {path: sim_count(component, path) for path in (QUERY_AUTH, "api_get_authorizer_info")}
    errors: list[BaseException] = []

    def run() -> None:
        try:
            process_component_event(event.pk)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connection.close()

    worker = threading.Thread(target=run)
    worker.start()
    free = {}
    try:
        # while api_query_auth is in flight: the exchange, the event and the account can all be locked
        wait_for(lambda: sim_count(component, QUERY_AUTH) > before[QUERY_AUTH])
        digest = _code_hash(grant["auth_code"])
        free["query_auth"] = (
            _row_is_free(AuthCodeExchange, code_sha256=digest), _row_is_free(ComponentEvent, pk=event.pk),
            _row_is_free(Authorizer, pk=authorizer.pk),
        )
        # and while api_get_authorizer_info is (the names, fetched after the result is written)
        wait_for(lambda: sim_count(component, "api_get_authorizer_info") > before["api_get_authorizer_info"])
        free["get_authorizer_info"] = (
            _row_is_free(AuthCodeExchange, code_sha256=digest), _row_is_free(ComponentEvent, pk=event.pk),
            _row_is_free(Authorizer, pk=authorizer.pk),
        )
        in_flight = worker.is_alive()
    finally:
        worker.join(15)
    assert in_flight, "the calls were over before the probes ran"
    assert not errors and not worker.is_alive()
    assert free == {"query_auth": (True, True, True), "get_authorizer_info": (True, True, True)}
    event.refresh_from_db()
    assert event.processed_at is not None and event.error == ""
    assert Authorizer.objects.get(pk=authorizer.pk).get_refresh_token() == component.authorizer(authorizer.appid)[
        "refresh_token"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("code", ["unknown", "expired"])
def test_a_dead_code_costs_one_query_auth_call_on_every_path(ticket, component, tenant, client, settings, code):
    settings.WECHAT_HTTP_MAX_RETRIES = 2  # production's client retries
    grant = component.authorize(APPID)
    if code == "unknown":
        grant = {**grant, "auth_code": "queryauthcode@@@made-up"}
    else:
        component.advance_clock(3601)  # WeChat's hour is over; ours is not (the code's first sighting)

    first = redirect(client, tenant, grant)
    event = push(client, authorized_xml(grant))
    process_component_event.apply(args=[event.pk])  # as a worker runs it, with its retries
    ComponentEvent.objects.filter(pk=event.pk).update(received_at=timezone.now() - timedelta(minutes=5))
    sweep_component_events()
    reload = redirect(client, tenant, grant)

    assert first.status_code == reload.status_code == 400
    assert sim_count(component, QUERY_AUTH) == 1
    event.refresh_from_db()
    assert event.processed_at is not None and "dead" in event.error
