"""The token service (issue #3): single flight across threads and processes, compare-and-expire,
61023 recovery, re-authorization, updateauthorized/unauthorized, missing ticket, direct mode.

All against the simulator over real HTTP; the simulator's counters are the ground truth of how many
times WeChat was asked.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
import requests
from django.conf import settings as django_settings
from django.db import connection
from django.utils import timezone

from openplatform.component.api import with_component_token
from openplatform.component.models import ComponentAccessToken, ComponentVerifyTicket
from openplatform.component.token import component_access_token_get, component_access_token_refresh
from openplatform.wechat.errors import ConfigurationError, MissingTicket, TokenInvalid, TransientError
from tenants.errors import AuthorizerUnavailable, ReauthorizationRequired
from tenants.models import Authorizer
from tenants.services.authorization import authorization_code_exchange, authorizer_revoke
from tenants.services.tokens import (
    authorizer_access_token_force_refresh,
    authorizer_access_token_get,
    authorizer_access_token_refresh,
    authorizer_access_token_replace_leaked,
)
from tests.fixtures import expire_access_token, sim_count

APPID = django_settings.WECHAT_COMPONENT_APPID
ROOT = Path(__file__).resolve().parent.parent
AUTHORIZER_TOKEN = "/cgi-bin/component/api_authorizer_token"
COMPONENT_TOKEN = "/cgi-bin/component/api_component_token"

pytestmark = pytest.mark.django_db(transaction=True)


def sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


# -- single flight ---------------------------------------------------------------------------------------

# A separate OS process (its own interpreter, connection pool and HTTP session), started before the
# threads and released at the same moment: it loads the authorizer with its expired token, says
# "ready", waits for "go", then asks for the token. It prints only a hash of what it got.
CHILD = textwrap.dedent(
    """
    import hashlib, sys, time
    import django
    django.setup()
    from tenants.models import Authorizer
    from tenants.services.tokens import authorizer_access_token_get
    authorizer = Authorizer.objects.get(pk=int(sys.argv[1]))
    print("ready", flush=True)
    sys.stdin.readline()
    started = time.monotonic()
    lease = authorizer_access_token_get(authorizer=authorizer)
    print("token", hashlib.sha256(lease.token.encode()).hexdigest(), lease.generation, started, time.monotonic(),
          flush=True)
    """
)


def _child_env(simulator) -> dict[str, str]:
    db = connection.settings_dict
    auth = db["USER"] + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="tests.settings",
        DATABASE_URL=f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}",
        WECHAT_API_BASE=simulator.url,
        WECHAT_MP_BASE=simulator.url,
        WECHAT_OPEN_BASE=simulator.url,
        WECHAT_HTTP_MAX_RETRIES="1",
        PYTHONPATH=str(ROOT),
    )
    return env


def _start_children(count: int, authorizer_pk: int, simulator) -> list[subprocess.Popen]:
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, str(authorizer_pk)],
            cwd=ROOT,
            env=_child_env(simulator),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(count)
    ]
    for child in children:
        line = child.stdout.readline()
        if line.strip() != "ready":
            child.kill()
            raise AssertionError(f"child did not start: {line!r} {child.stderr.read()[-2000:]}")
    return children


def _concurrent_callers(authorizer_pk: int, threads: int, processes: int, simulator) -> list[tuple[str, int]]:
    """Every caller's (sha256 of token, generation), threads and processes released together.

    Fails unless every caller answered and all of them overlapped: each had asked for the token before
    the first one got it (the single flight is what is being tested, not callers that came one by one).
    CLOCK_MONOTONIC is system-wide on Linux, so the children's times compare with the threads'.
    """
    children = _start_children(processes, authorizer_pk, simulator) if processes else []
    barrier = threading.Barrier(threads + 1)
    results: list[tuple[str, int]] = []
    spans: list[tuple[float, float]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def call() -> None:
        try:
            authorizer = Authorizer.objects.get(pk=authorizer_pk)  # each with the expired token in memory
            barrier.wait(timeout=30)
            started = time.monotonic()
            lease = authorizer_access_token_get(authorizer=authorizer)
            with lock:
                spans.append((started, time.monotonic()))
                results.append((sha(lease.token), lease.generation))
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    workers = [threading.Thread(target=call) for _ in range(threads)]
    for worker in workers:
        worker.start()
    barrier.wait(timeout=30)
    for child in children:
        child.stdin.write("go\n")
        child.stdin.flush()
    for worker in workers:
        worker.join(60)
    assert not [w for w in workers if w.is_alive()], "a caller thread did not finish"
    for child in children:
        out, err = child.communicate(timeout=60)
        assert child.returncode == 0, err[-3000:]
        _, digest, generation, started, ended = out.split()
        results.append((digest, int(generation)))
        spans.append((float(started), float(ended)))
    assert not errors, errors[:3]
    assert len(results) == len(spans) == threads + processes, "a caller produced no result"
    first_answer = min(ended for _, ended in spans)
    late = [started - first_answer for started, _ in spans if started >= first_answer]
    assert not late, f"{len(late)} caller(s) asked only after the first had its token (by {max(late):.3f}s): no race"
    return results


@pytest.mark.postgres
def test_expired_token_is_refreshed_once_for_32_threads_and_2_processes(authorizer, component):
    # given an authorizer whose stored token has expired, and a WeChat that answers slowly
    expire_access_token(authorizer)
    component.set_latency(AUTHORIZER_TOKEN, 0.3)
    before = sim_count(component, AUTHORIZER_TOKEN)

    # when 32 threads and 2 separate processes ask for its token at the same moment
    results = _concurrent_callers(authorizer.pk, threads=32, processes=2, simulator=component)

    # then WeChat was asked exactly once and every caller got that one new token
    assert sim_count(component, AUTHORIZER_TOKEN) - before == 1
    current = component.authorizer(authorizer.appid)["access_token"]
    assert len(results) == 34
    assert {digest for digest, _ in results} == {sha(current)}
    authorizer.refresh_from_db()
    assert authorizer.get_access_token() == current
    assert {generation for _, generation in results} == {authorizer.token_generation}
    assert authorizer.refresh_count == 1


@pytest.mark.postgres
@pytest.mark.parametrize("callers", [8, 32, 64])
def test_concurrent_callers_on_an_expired_token_cause_one_refresh(authorizer, component, callers, record_property):
    expire_access_token(authorizer)
    # Long enough that every caller has asked before the first answer, even on a busy 2-core machine.
    component.set_latency(AUTHORIZER_TOKEN, 1.0)
    before = sim_count(component, AUTHORIZER_TOKEN)

    results = _concurrent_callers(authorizer.pk, threads=callers, processes=0, simulator=component)

    refreshes = sim_count(component, AUTHORIZER_TOKEN) - before
    record_property("api_authorizer_token_calls", refreshes)
    print(f"\n[measure] {callers} concurrent callers -> {refreshes} api_authorizer_token call(s)")
    assert refreshes == 1
    assert len({digest for digest, _ in results}) == 1
    assert len(results) == callers


@pytest.mark.postgres
def test_expired_component_token_is_refreshed_once_under_concurrency(authorizer, component):
    ComponentAccessToken.objects.filter(component_appid=APPID).update(expires_at=timezone.now() - timedelta(minutes=1))
    component.set_latency(COMPONENT_TOKEN, 0.3)
    before = sim_count(component, COMPONENT_TOKEN)
    barrier = threading.Barrier(16)
    tokens: list[str] = []
    errors: list[BaseException] = []
    spans: list[tuple[float, float]] = []

    def call() -> None:
        try:
            barrier.wait(timeout=30)
            started = time.monotonic()
            tokens.append(component_access_token_get().token)
            spans.append((started, time.monotonic()))
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    workers = [threading.Thread(target=call) for _ in range(16)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)

    assert not errors
    assert not [w for w in workers if w.is_alive()]
    # every caller asked before the first one had its token: they raced
    assert len(spans) == 16 and max(s for s, _ in spans) < min(e for _, e in spans), spans
    assert sim_count(component, COMPONENT_TOKEN) - before == 1
    assert len(set(tokens)) == 1 and len(tokens) == 16
    assert ComponentAccessToken.objects.get(component_appid=APPID).refresh_count == 2  # onboarding + this one


# -- serving and refreshing ------------------------------------------------------------------------------


def test_fresh_token_is_served_without_calling_wechat(authorizer, component):
    before = component.counters()
    lease = authorizer_access_token_get(authorizer=authorizer)
    again = authorizer_access_token_get(authorizer=Authorizer.objects.get(pk=authorizer.pk))
    assert lease.token == again.token == component.authorizer(authorizer.appid)["access_token"]
    assert component.counters() == before
    assert "token=" not in repr(lease) and lease.token not in repr(lease)


def test_token_inside_the_refresh_margin_is_refreshed_ahead_of_expiry(authorizer, component):
    Authorizer.objects.filter(pk=authorizer.pk).update(access_token_expires_at=timezone.now() + timedelta(seconds=120))
    authorizer.refresh_from_db()
    old = authorizer.get_access_token()
    lease = authorizer_access_token_get(authorizer=authorizer)
    assert lease.token != old
    assert sim_count(component, AUTHORIZER_TOKEN) == 1
    assert authorizer.token_seconds_left() > 7000  # the caller's instance is updated in place


def test_refresh_persists_a_rotated_refresh_token(authorizer, component):
    component.configure(rotate_refresh_tokens=True)
    expire_access_token(authorizer)
    old_refresh = authorizer.get_refresh_token()
    authorizer_access_token_get(authorizer=authorizer)
    authorizer.refresh_from_db()
    assert authorizer.get_refresh_token() == component.authorizer(authorizer.appid)["refresh_token"] != old_refresh
    # and the next refresh uses the new one successfully
    expire_access_token(authorizer)
    authorizer_access_token_get(authorizer=authorizer)
    assert [c["errcode"] for c in component.calls(AUTHORIZER_TOKEN)] == [0, 0]


# -- compare-and-expire ----------------------------------------------------------------------------------


def test_stale_token_error_does_not_throw_away_a_token_another_worker_refreshed(authorizer, component):
    # given worker A used generation g and got 40001 late, while worker B has already refreshed
    stale = authorizer_access_token_get(authorizer=authorizer)
    fresh = authorizer_access_token_refresh(authorizer=Authorizer.objects.get(pk=authorizer.pk), force=True)
    assert fresh.generation > stale.generation
    calls = sim_count(component, AUTHORIZER_TOKEN)

    # when A reports its failure against the stale generation
    lease = authorizer_access_token_refresh(authorizer=authorizer, failed_generation=stale.generation)

    # then A gets B's token and WeChat is not asked again
    assert lease.token == fresh.token
    assert lease.generation == fresh.generation
    assert sim_count(component, AUTHORIZER_TOKEN) == calls
    authorizer.refresh_from_db()
    assert authorizer.get_access_token() == fresh.token


def test_token_error_on_the_current_generation_refreshes_once(authorizer, component):
    current = authorizer_access_token_get(authorizer=authorizer)
    component.invalidate_tokens(authorizer.appid, errcode=40001)

    lease = authorizer_access_token_refresh(authorizer=authorizer, failed_generation=current.generation)
    again = authorizer_access_token_refresh(authorizer=authorizer, failed_generation=current.generation)

    assert lease.token != current.token
    assert again.token == lease.token  # the second report of the same failure is a no-op
    assert sim_count(component, AUTHORIZER_TOKEN) == 1


def test_component_token_error_expires_only_the_failed_generation(authorizer, component):
    # given the component token WeChat rejects (40001), e.g. another deployment refreshed it
    component.invalidate_tokens(APPID, errcode=40001)
    before = sim_count(component, COMPONENT_TOKEN)
    seen: list[str] = []

    def call(token: str) -> str:
        seen.append(token)
        if len(seen) == 1:
            raise TokenInvalid(40001, "invalid credential")
        return token

    # when a call fails with a token error: one refresh, one retry
    result = with_component_token(call)
    assert result == seen[1] != seen[0]
    assert sim_count(component, COMPONENT_TOKEN) - before == 1

    # and a late report against the old generation does not refresh again
    row = ComponentAccessToken.objects.get(component_appid=APPID)
    lease = component_access_token_refresh(failed_generation=row.generation - 1)
    assert lease.token == result
    assert sim_count(component, COMPONENT_TOKEN) - before == 1


def test_component_token_rejected_by_wechat_is_replaced_in_a_real_call(authorizer, component):
    # The component token dies at WeChat; the next authorizer refresh recovers by itself.
    component.invalidate_tokens(APPID, errcode=40001)
    expire_access_token(authorizer)
    lease = authorizer_access_token_get(authorizer=authorizer)
    assert lease.token == component.authorizer(authorizer.appid)["access_token"]
    assert [c["errcode"] for c in component.calls(AUTHORIZER_TOKEN)] == [40001, 0]


# -- refresh-token recovery and re-authorization ---------------------------------------------------------


def test_61023_recovers_the_refresh_token_once(authorizer, component):
    # given WeChat no longer accepts our refresh token, but still lists the account (a new token)
    component.invalidate_refresh_token(authorizer.appid)
    expire_access_token(authorizer)
    info_calls = sim_count(component, "api_get_authorizer_info")

    lease = authorizer_access_token_get(authorizer=authorizer)

    sim = component.authorizer(authorizer.appid)
    assert lease.token == sim["access_token"]
    assert [c["errcode"] for c in component.calls(AUTHORIZER_TOKEN)] == [61023, 0]
    assert sim_count(component, "api_get_authorizer_info") - info_calls == 1
    authorizer.refresh_from_db()
    assert authorizer.status == Authorizer.Status.AUTHORIZED
    assert authorizer.get_refresh_token() == sim["refresh_token"]


def test_revoked_without_event_becomes_reauthorization_required_with_a_clear_error(authorizer, component):
    # given the merchant revoked and we missed the `unauthorized` event
    component.revoke(authorizer.appid, push_event=False)
    expire_access_token(authorizer)

    with pytest.raises(ReauthorizationRequired) as caught:
        authorizer_access_token_get(authorizer=authorizer)

    assert "authorize again" in str(caught.value)
    authorizer.refresh_from_db()
    assert authorizer.status == Authorizer.Status.REAUTHORIZATION_REQUIRED
    assert "authorize again" in authorizer.last_error
    assert authorizer.last_error_at is not None
    assert authorizer.access_token_ciphertext == "" and authorizer.refresh_token_ciphertext == ""
    # and nobody asks WeChat again for it
    calls = component.counters()
    with pytest.raises(AuthorizerUnavailable):
        authorizer_access_token_get(authorizer=authorizer)
    with pytest.raises(AuthorizerUnavailable):
        authorizer_access_token_refresh(authorizer=Authorizer.objects.get(pk=authorizer.pk), force=True)
    assert component.counters() == calls


def test_transient_failure_is_recorded_and_keeps_the_authorizer(authorizer, component):
    expire_access_token(authorizer)
    component.inject_fault(AUTHORIZER_TOKEN, "http_status", count=5, status=503)
    with pytest.raises(TransientError):
        authorizer_access_token_get(authorizer=authorizer)
    authorizer.refresh_from_db()
    assert authorizer.status == Authorizer.Status.AUTHORIZED
    assert "503" in authorizer.last_error
    assert authorizer.refresh_token_ciphertext  # nothing thrown away
    component.clear_faults()
    assert authorizer_access_token_get(authorizer=authorizer).token


def test_updateauthorized_exchange_replaces_tokens_and_permission_sets(authorizer, component, tenant):
    old_access, old_refresh = authorizer.get_access_token(), authorizer.get_refresh_token()
    update = component.reauthorize(authorizer.appid, func_info=[1, 11, 7])

    again = authorization_code_exchange(auth_code=update["auth_code"])

    assert again.pk == authorizer.pk
    authorizer.refresh_from_db()
    sim = component.authorizer(authorizer.appid)
    assert authorizer.func_info == [1, 7, 11]
    assert authorizer.get_access_token() == sim["access_token"] != old_access
    assert authorizer.get_refresh_token() == sim["refresh_token"] != old_refresh
    assert authorizer.tenant == tenant
    # the previous refresh token is dead at WeChat; ours works
    expire_access_token(authorizer)
    assert authorizer_access_token_get(authorizer=authorizer).token == component.authorizer(authorizer.appid)["access_token"]


def test_reauthorization_restores_an_account_that_needed_it(authorizer, component, tenant):
    component.revoke(authorizer.appid)
    expire_access_token(authorizer)
    with pytest.raises(ReauthorizationRequired):
        authorizer_access_token_get(authorizer=authorizer)

    grant = component.authorize(APPID, authorizer_appid=authorizer.appid, func_info=[11])
    restored = authorization_code_exchange(auth_code=grant["auth_code"], tenant=tenant)

    assert restored.status == Authorizer.Status.AUTHORIZED
    assert restored.last_error == ""
    assert authorizer_access_token_get(authorizer=restored).token == component.authorizer(authorizer.appid)["access_token"]


def test_unauthorized_wipes_tokens(authorizer):
    revoked = authorizer_revoke(authorizer=authorizer)
    revoked.refresh_from_db()
    assert revoked.status == Authorizer.Status.REVOKED
    assert (revoked.access_token_ciphertext, revoked.refresh_token_ciphertext) == ("", "")
    with pytest.raises(AuthorizerUnavailable):
        authorizer_access_token_get(authorizer=revoked)


# -- missing ticket --------------------------------------------------------------------------------------


def test_missing_ticket_is_a_clear_error(component, db):
    with pytest.raises(MissingTicket) as caught:
        component_access_token_get()
    assert "component_verify_ticket" in str(caught.value)
    assert "api_start_push_ticket" in str(caught.value)
    row = ComponentAccessToken.objects.get(component_appid=APPID)
    assert "component_verify_ticket" in row.last_error
    assert sim_count(component, COMPONENT_TOKEN) == 0  # we do not even ask WeChat


def test_ticket_older_than_12_hours_is_missing(component, db):
    raw = component.issue_ticket(APPID)
    from openplatform.component.tickets import component_ticket_store

    row = component_ticket_store(component_appid=APPID, ticket=raw, pushed_at=timezone.now())
    ComponentVerifyTicket.objects.filter(pk=row.pk).update(received_at=timezone.now() - timedelta(hours=13))
    with pytest.raises(MissingTicket):
        component_access_token_get()


def test_rejected_ticket_is_reported_with_the_way_out(component, db):
    from openplatform.component.tickets import component_ticket_store
    from openplatform.wechat.errors import TicketInvalid

    component_ticket_store(component_appid=APPID, ticket="ticket@@@never-issued", pushed_at=timezone.now())
    with pytest.raises(TicketInvalid):
        component_access_token_get()
    row = ComponentAccessToken.objects.get(component_appid=APPID)
    assert "61006" in row.last_error and "api_start_push_ticket" in row.last_error


# -- direct mode -----------------------------------------------------------------------------------------


def test_direct_account_gets_tokens_from_stable_token_through_the_same_service(make_direct_authorizer, tenant, component):
    authorizer = make_direct_authorizer(tenant)

    lease = authorizer_access_token_get(authorizer=authorizer)

    assert lease.token
    assert sim_count(component, "/cgi-bin/stable_token") == 1
    stored = Authorizer.objects.get(pk=authorizer.pk)
    assert stored.get_access_token() == lease.token
    assert stored.token_seconds_left() > 7000
    assert authorizer_access_token_get(authorizer=stored).token == lease.token
    assert sim_count(component, "/cgi-bin/stable_token") == 1
    assert sim_count(component, AUTHORIZER_TOKEN) == 0

    # a token error (someone else forced a refresh) is recovered with a normal call, never a forced one:
    # forcing would cut off every other holder of the AppID (issue 12, point 2)
    component.invalidate_tokens(authorizer.appid, errcode=40001)
    new = authorizer_access_token_refresh(authorizer=stored, failed_generation=lease.generation)
    assert new.token != lease.token
    calls = component.calls("/cgi-bin/stable_token")
    assert [c["json"]["force_refresh"] for c in calls] == [False, False]
    assert all(c["errcode"] == 0 for c in calls)


def test_only_the_leaked_token_action_forces_a_stable_token_and_it_cuts_the_old_one_off(
    make_direct_authorizer, tenant, component
):
    authorizer = make_direct_authorizer(tenant)
    old = authorizer_access_token_get(authorizer=authorizer)
    stored = Authorizer.objects.get(pk=authorizer.pk)

    refreshed = authorizer_access_token_force_refresh(authorizer=stored)  # "refresh now": a normal call
    assert refreshed.token == old.token  # WeChat keeps a token with more than 5 minutes left
    leaked = authorizer_access_token_replace_leaked(authorizer=Authorizer.objects.get(pk=authorizer.pk))

    assert leaked.token != old.token
    calls = component.calls("/cgi-bin/stable_token")
    assert [c["json"]["force_refresh"] for c in calls] == [False, False, True]
    assert _token_answers(component, old.token) == 40001  # cut off at once, for everyone
    assert _token_answers(component, leaked.token) == 0


def _token_answers(component, token: str) -> int:
    """What WeChat says to a call made with `token` (openapi/quota/get: any API taking an access_token)."""
    response = requests.post(
        f"{component.url}/cgi-bin/openapi/quota/get", params={"access_token": token},
        json={"cgi_path": "/cgi-bin/media/uploadimg"}, timeout=5,
    )
    return response.json().get("errcode", 0)


@pytest.mark.postgres
def test_direct_account_expired_token_is_refreshed_once_under_concurrency(make_direct_authorizer, tenant, component):
    authorizer = make_direct_authorizer(tenant)
    authorizer_access_token_get(authorizer=authorizer)
    expire_access_token(authorizer)
    component.set_latency("/cgi-bin/stable_token", 0.2)
    before = sim_count(component, "/cgi-bin/stable_token")
    results = _concurrent_callers(authorizer.pk, threads=16, processes=0, simulator=component)
    assert sim_count(component, "/cgi-bin/stable_token") - before == 1
    assert len(results) == 16
    stored = Authorizer.objects.get(pk=authorizer.pk)
    assert {digest for digest, _ in results} == {sha(stored.get_access_token())}
    assert {generation for _, generation in results} == {stored.token_generation}


def test_direct_account_with_a_wrong_secret_keeps_a_clear_error(make_direct_authorizer, tenant, component):
    authorizer = make_direct_authorizer(tenant)
    authorizer.set_app_secret("wrong")
    authorizer.save()
    with pytest.raises(ConfigurationError) as caught:
        authorizer_access_token_get(authorizer=authorizer)
    assert caught.value.errcode == 40125
    authorizer.refresh_from_db()
    assert "40125" in authorizer.last_error
    assert authorizer.status == Authorizer.Status.AUTHORIZED
