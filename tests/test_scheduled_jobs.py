"""Scheduled jobs (issue #3): ahead-of-expiry refresh, ticket watchdog, reconciliation, beat schedules.

The task functions are called directly (what a worker would run); the simulator is the WeChat they talk to.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta
from io import StringIO

import pytest
from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.db import connection
from django.db.migrations.recorder import MigrationRecorder
from django.db.models import F
from django.test import override_settings
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask, PeriodicTasks

from openplatform.component.models import ComponentAccessToken, ComponentVerifyTicket
from openplatform.component.tickets import component_ticket_store
from openplatform.ops.schedules import schedules_defined, schedules_install
from tenants.models import Authorizer
from tenants.services.reconcile import authorizer_ids_due_for_refresh
from tenants.services.tokens import authorizer_access_token_get, authorizer_access_token_refresh
from tenants.tasks import (
    purge_old_tickets,
    reconcile_authorizers,
    refresh_authorizer_tokens_batch,
    refresh_component_token,
    ticket_watchdog,
)
from tests.fixtures import sim_count

APPID = django_settings.WECHAT_COMPONENT_APPID


def _expires_in(authorizer: Authorizer, seconds: int) -> None:
    Authorizer.objects.filter(pk=authorizer.pk).update(access_token_expires_at=timezone.now() + timedelta(seconds=seconds))


# -- ahead-of-expiry refresh -----------------------------------------------------------------------------


@pytest.mark.django_db
def test_due_tokens_are_refreshed_each_at_most_once(make_authorizer, tenant, component):
    soon, later, fresh, gone = (make_authorizer(tenant) for _ in range(4))
    _expires_in(soon, 120)
    _expires_in(later, 420)  # inside the 480 s window
    _expires_in(fresh, 3600)
    _expires_in(gone, -60)
    Authorizer.objects.filter(pk=gone.pk).update(status=Authorizer.Status.REVOKED)

    due = authorizer_ids_due_for_refresh()
    assert sorted(due) == sorted([soon.pk, later.pk])

    first = refresh_authorizer_tokens_batch(due)
    # a redelivered or overlapping batch finds nothing left to do
    second = refresh_authorizer_tokens_batch(due)

    assert first == {"refreshed": 2, "skipped": 0, "failed": 0}
    assert second == {"refreshed": 0, "skipped": 2, "failed": 0}
    assert sim_count(component, "api_authorizer_token") == 2
    assert authorizer_ids_due_for_refresh() == []
    for authorizer in (soon, later):
        authorizer.refresh_from_db()
        assert authorizer.get_access_token() == component.authorizer(authorizer.appid)["access_token"]


@pytest.mark.django_db
def test_one_failing_authorizer_does_not_stop_the_batch(make_authorizer, tenant, component):
    ok, revoked_at_wechat = make_authorizer(tenant), make_authorizer(tenant)
    for authorizer in (ok, revoked_at_wechat):
        _expires_in(authorizer, 60)
    component.revoke(revoked_at_wechat.appid)

    report = refresh_authorizer_tokens_batch([revoked_at_wechat.pk, ok.pk])

    assert report == {"refreshed": 1, "skipped": 0, "failed": 1}
    assert Authorizer.objects.get(pk=revoked_at_wechat.pk).status == Authorizer.Status.REAUTHORIZATION_REQUIRED
    assert Authorizer.objects.get(pk=ok.pk).token_seconds_left() > 7000


@pytest.mark.django_db
def test_a_simulated_day_costs_at_most_13_refreshes_per_token(make_authorizer, tenant, component):
    # given two authorizers, and the beat jobs running every 240 s for 24 hours (time moves forward by
    # moving every stored expiry back; the simulator's own clock does not matter for the count)
    authorizers = [make_authorizer(tenant), make_authorizer(tenant)]
    step = timedelta(seconds=240)
    component_before = sim_count(component, "api_component_token")
    lowest_left = 7200.0
    for _tick in range(86400 // 240):
        Authorizer.objects.update(access_token_expires_at=F("access_token_expires_at") - step)
        ComponentAccessToken.objects.update(expires_at=F("expires_at") - step)
        # what a caller finds just before the beat runs
        lowest_left = min(
            lowest_left, *(a.token_seconds_left() for a in Authorizer.objects.filter(pk__in=[a.pk for a in authorizers]))
        )
        refresh_component_token()
        refresh_authorizer_tokens_batch(authorizer_ids_due_for_refresh())
    refreshes = sim_count(component, "api_authorizer_token")
    assert all(c["errcode"] == 0 for c in component.calls("/cgi-bin/component/api_authorizer_token"))
    assert 2 * 12 <= refreshes <= 2 * 13
    assert sim_count(component, "api_component_token") - component_before <= 13
    # and a caller always found a live token with at least 240 s left (openplatform/core/tokens.py: the beat
    # replaces a token when 240-480 s remain; below 300 s a caller would refresh on demand, single flight)
    assert lowest_left >= 240 - 1


# -- ticket watchdog and readiness -----------------------------------------------------------------------

OPS_TOKEN = "operator-metrics-token"


@pytest.mark.django_db
def test_ticket_watchdog_logs_an_error_when_the_ticket_is_stale_and_readyz_reports_it(
    component, ticket, client, caplog, settings
):
    settings.METRICS_TOKEN = OPS_TOKEN  # /readyz shows its checks to the operator's token only
    # given a fresh ticket: no error, ready
    with caplog.at_level(logging.INFO):
        assert ticket_watchdog() < 60
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    fresh = client.get("/readyz", HTTP_AUTHORIZATION=f"Bearer {OPS_TOKEN}").json()
    assert fresh["status"] == "ok" and fresh["checks"]["ticket"]["ok"] is True

    # when no push has arrived for 31 minutes
    ComponentVerifyTicket.objects.update(received_at=timezone.now() - timedelta(minutes=31))
    caplog.clear()
    age = ticket_watchdog()

    # then the watchdog logs an error and /readyz shows it (degraded, still serving)
    assert age > 30 * 60
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "31 minutes old" in errors[0].getMessage()
    response = client.get("/readyz", HTTP_AUTHORIZATION=f"Bearer {OPS_TOKEN}")
    body = response.json()
    assert response.status_code == 200
    assert body["status"] == "degraded"
    assert body["checks"]["ticket"]["ok"] is False
    assert body["checks"]["ticket"]["age_seconds"] >= 31 * 60
    assert body["checks"]["database"]["ok"] is True


@pytest.mark.django_db
def test_ticket_watchdog_without_any_ticket(component, client, caplog, settings):
    settings.METRICS_TOKEN = OPS_TOKEN
    assert ticket_watchdog() is None
    assert any("has ever been received" in r.getMessage() for r in caplog.records if r.levelno == logging.ERROR)
    body = client.get("/readyz", HTTP_AUTHORIZATION=f"Bearer {OPS_TOKEN}").json()
    assert body["checks"]["ticket"]["ok"] is False
    assert client.get("/healthz").json() == {"status": "ok"}


@pytest.mark.django_db
def test_purge_keeps_the_newest_ticket(component):
    for days in (5, 4, 3):
        old = timezone.now() - timedelta(days=days)
        row = component_ticket_store(component_appid=APPID, ticket=f"t{days}", pushed_at=old)
        ComponentVerifyTicket.objects.filter(pk=row.pk).update(received_at=old)
    newest = row
    assert purge_old_tickets() == 2
    assert list(ComponentVerifyTicket.objects.values_list("pk", flat=True)) == [newest.pk]


# -- reconciliation --------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_reconciliation_recovers_refresh_tokens_revokes_missing_accounts_and_finds_unknown_ones(
    make_authorizer, tenant, component
):
    lost, gone, needs_reauth, steady = (make_authorizer(tenant) for _ in range(4))
    component.invalidate_refresh_token(lost.appid)  # our stored refresh token no longer works
    component.revoke(gone.appid)  # revoked; we missed the `unauthorized` event
    Authorizer.objects.filter(pk=needs_reauth.pk).update(status=Authorizer.Status.REAUTHORIZATION_REQUIRED)
    unknown = component.authorize(APPID, nick_name="Never exchanged")  # authorized; we missed the code
    steady_before = Authorizer.objects.filter(pk=steady.pk).values().get()

    report = reconcile_authorizers()

    assert report == {"seen": 4, "refresh_tokens_recovered": 1, "revoked": 1, "restored": 1, "discovered": 1, "kept": 0}
    lost.refresh_from_db()
    assert lost.get_refresh_token() == component.authorizer(lost.appid)["refresh_token"]
    gone.refresh_from_db()
    assert gone.status == Authorizer.Status.REVOKED
    assert gone.access_token_ciphertext == gone.refresh_token_ciphertext == ""
    assert Authorizer.objects.get(pk=needs_reauth.pk).status == Authorizer.Status.AUTHORIZED
    found = Authorizer.objects.get(appid=unknown["authorizer_appid"])
    assert found.tenant is None and found.nick_name == "Never exchanged"
    assert found.get_refresh_token() == unknown["refresh_token"]
    # the recovered refresh token works
    lost.access_token_expires_at = timezone.now() - timedelta(minutes=1)
    lost.save()
    assert authorizer_access_token_get(authorizer=lost).token == component.authorizer(lost.appid)["access_token"]
    # an account WeChat lists with the refresh token we hold is not written at all (no lock, no save)
    assert Authorizer.objects.filter(pk=steady.pk).values().get() == steady_before
    assert steady_before["status"] == Authorizer.Status.AUTHORIZED
    assert Authorizer.objects.get(pk=steady.pk).get_refresh_token() == component.authorizer(steady.appid)["refresh_token"]

    # and a second run finds nothing to do
    again = reconcile_authorizers()
    assert again == {"seen": 4, "refresh_tokens_recovered": 0, "revoked": 0, "restored": 0, "discovered": 0, "kept": 0}


def _in_thread(target) -> tuple[threading.Thread, list]:
    outcome: list = []

    def run() -> None:
        try:
            outcome.append(target())
        except BaseException as exc:  # reported by the test
            outcome.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_reconciliation_does_not_overwrite_a_token_refreshed_meanwhile(make_authorizer, tenant, component):
    # given an account WeChat lists first (authorized, never exchanged: reconciliation fetches its info,
    # slowly), then ours, whose refresh token WeChat has replaced
    info_path = "/cgi-bin/component/api_get_authorizer_info"
    unknown = component.authorize(APPID)
    ours = make_authorizer(tenant)
    component.invalidate_refresh_token(ours.appid)
    component.set_latency(info_path, 0.5)

    # when reconciliation runs while a worker refreshes our token (recovering from the 61023 itself):
    # the refresh starts once reconciliation has read our row and is waiting for the unknown's info
    asked_before = sim_count(component, info_path)  # onboarding asked for ours
    thread, outcome = _in_thread(reconcile_authorizers)
    deadline = time.monotonic() + 10
    while sim_count(component, info_path) == asked_before:  # counted when it arrives, answered 0.5 s later
        assert time.monotonic() < deadline, f"reconciliation never asked for the unknown account's info: {outcome}"
        time.sleep(0.02)
    refresh_started = time.time()
    lease = authorizer_access_token_refresh(authorizer=Authorizer.objects.get(pk=ours.pk), force=True)
    thread.join(10)
    assert not thread.is_alive(), "reconciliation did not finish"

    # and they did overlap: reconciliation's info call was answered after the refresh had started, and
    # after the refresh's first call to WeChat (made under our row's lock), so reconciliation came to
    # our row with its stale copy while the refresh held it or had written it
    reconcile_info = [c for c in component.calls(info_path) if c["json"]["authorizer_appid"] == unknown["authorizer_appid"]]
    refresh_calls = [c for c in component.calls("/cgi-bin/component/api_authorizer_token")
                     if c["json"]["authorizer_appid"] == ours.appid]
    assert len(reconcile_info) == 1 and refresh_calls
    assert refresh_started < refresh_calls[0]["time"] < reconcile_info[0]["time"]

    # then the token the worker stored is still the stored one (no lost update), with its generation
    assert not isinstance(outcome[0], BaseException), outcome
    after = Authorizer.objects.get(pk=ours.pk)
    sim = component.authorizer(ours.appid)
    assert lease.token == sim["access_token"]
    assert after.get_access_token() == sim["access_token"]
    assert after.token_generation == lease.generation
    assert after.get_refresh_token() == sim["refresh_token"]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_reconciliation_does_not_revoke_an_account_shifted_out_of_the_paged_list(make_authorizer, tenant, component):
    # given 500 accounts authorized before ours (known to us too), so ours opens the list's second page
    grants = [component.authorize(APPID) for _ in range(500)]
    known = []
    for grant in grants:
        row = Authorizer(tenant=tenant, component_appid=APPID, appid=grant["authorizer_appid"])
        row.set_refresh_token(grant["refresh_token"])
        known.append(row)
    Authorizer.objects.bulk_create(known)
    ours = make_authorizer(tenant)
    component.set_latency("/cgi-bin/component/api_get_authorizer_list", 0.8)

    # when the first account is revoked while we page (after page 1 is read, before page 2)
    thread, outcome = _in_thread(reconcile_authorizers)
    list_path = "/cgi-bin/component/api_get_authorizer_list"
    deadline = time.monotonic() + 10
    while not component.calls(list_path):  # page 1 answered; page 2 is 0.8 s away
        assert time.monotonic() < deadline, f"reconciliation never read the list's first page: {outcome}"
        time.sleep(0.02)
    component.revoke(grants[0]["authorizer_appid"])
    revoked_at = time.time()
    thread.join(30)
    assert not thread.is_alive(), "reconciliation did not finish"

    # (the revocation really fell between the two pages: the second was answered after it)
    pages = component.calls(list_path)
    assert len(pages) == 2 and pages[0]["time"] < revoked_at < pages[1]["time"], pages
    # then ours, which slid onto the page already read, is not taken for revoked
    assert not isinstance(outcome[0], BaseException), outcome
    assert outcome[0]["seen"] == 500
    assert outcome[0]["revoked"] == 0 and outcome[0]["kept"] == 1
    assert Authorizer.objects.get(pk=ours.pk).status == Authorizer.Status.AUTHORIZED
    # and the next run, with a consistent list, revokes the one that did go
    component.set_latency("/cgi-bin/component/api_get_authorizer_list", 0)
    again = reconcile_authorizers()
    assert again["revoked"] == 1 and again["kept"] == 0
    assert Authorizer.objects.get(appid=grants[0]["authorizer_appid"]).status == Authorizer.Status.REVOKED
    assert Authorizer.objects.get(pk=ours.pk).status == Authorizer.Status.AUTHORIZED


@pytest.mark.django_db
def test_reconciliation_leaves_direct_accounts_alone(make_direct_authorizer, tenant, component, ticket):
    direct = make_direct_authorizer(tenant)
    report = reconcile_authorizers()
    assert report["revoked"] == 0
    assert Authorizer.objects.get(pk=direct.pk).status == Authorizer.Status.AUTHORIZED


# -- beat schedules --------------------------------------------------------------------------------------


def _beat_rows() -> dict[str, PeriodicTask]:
    return {row.name: row for row in PeriodicTask.objects.select_related("interval")}


@pytest.mark.django_db
def test_migrate_installs_every_schedule_as_defined():
    # Given an empty table (other tests may have emptied it)
    PeriodicTask.objects.all().delete()

    # When the deploy's release step runs
    call_command("migrate", verbosity=0)

    # Then every job is there, enabled, with its task and the interval the settings give it
    defined = schedules_defined()
    rows = _beat_rows()
    assert set(rows) == set(defined)
    for name, schedule in defined.items():
        assert rows[name].task == schedule.task
        assert rows[name].enabled
        assert (rows[name].interval.every, rows[name].interval.period) == (schedule.every, "seconds")
        assert rows[name].description == schedule.description
    token_refreshes = {"tenants.refresh_component_token", "tenants.refresh_due_authorizer_tokens"}
    assert {s.every for s in defined.values() if s.task in token_refreshes} == {
        django_settings.TOKEN_REFRESH_EVERY_SECONDS
    }
    # the retired data migration is applied, and does nothing any more
    assert ("uploads", "0002_install_schedules") in MigrationRecorder(connection).applied_migrations()


def test_every_scheduled_task_is_a_registered_celery_task():
    from openplatform.celery import app

    app.loader.import_default_modules()
    for name, schedule in schedules_defined().items():
        assert schedule.task in app.tasks, f"schedule {name!r} names an unregistered task {schedule.task!r}"


@pytest.mark.django_db
def test_a_changed_interval_setting_reaches_existing_rows_on_migrate_and_the_operators_switch_stays():
    # Given installed jobs, one switched off by an operator and one whose interval was edited in the admin
    PeriodicTask.objects.all().delete()
    schedules_install()
    PeriodicTask.objects.filter(name="Reconcile authorizers").update(enabled=False)
    sweep = PeriodicTask.objects.get(name="Sweep stuck uploads")
    sweep.interval = IntervalSchedule.objects.create(every=999, period="seconds")
    sweep.save()
    changed_before = PeriodicTasks.last_change()

    # When the settings change and the next deploy migrates
    with override_settings(TOKEN_REFRESH_EVERY_SECONDS=300, SCHEDULE_EVERY_SECONDS={"tenants.ticket_watchdog": 600}):
        call_command("migrate", verbosity=0)

    # Then the existing rows follow the settings (the admin's interval edit is undone: settings own it)
    rows = _beat_rows()
    assert len(rows) == len(schedules_defined())
    assert rows["Refresh component token"].interval.every == 300
    assert rows["Refresh authorizer tokens due"].interval.every == 300
    assert "within 10 minutes" in rows["Refresh authorizer tokens due"].description  # two periods of 300 s
    assert rows["Ticket watchdog"].interval.every == 600
    assert rows["Sweep stuck uploads"].interval.every == 60
    # and the operator's switch is kept; the others stay on
    assert rows["Reconcile authorizers"].enabled is False
    assert all(row.enabled for name, row in rows.items() if name != "Reconcile authorizers")
    # and beat is told to reload its schedule
    assert PeriodicTasks.last_change() > changed_before


@pytest.mark.django_db
def test_install_schedules_command_is_idempotent_and_keeps_the_operators_switch():
    PeriodicTask.objects.all().delete()
    out = StringIO()
    call_command("install_schedules", stdout=out)
    assert out.getvalue().strip() == f"{len(schedules_defined())} created, 0 updated"

    PeriodicTask.objects.filter(name="Reconcile authorizers").update(enabled=False)
    out = StringIO()
    call_command("install_schedules", stdout=out)
    assert out.getvalue().strip() == "0 created, 0 updated"
    assert PeriodicTask.objects.get(name="Reconcile authorizers").enabled is False
    assert PeriodicTask.objects.filter(name__in=list(schedules_defined())).count() == len(schedules_defined())


@pytest.mark.parametrize("task", ["tenants.refresh_component_token", "uploads.no_such_task"])
def test_an_interval_setting_for_a_token_refresh_or_an_unknown_task_is_refused(task):
    with override_settings(SCHEDULE_EVERY_SECONDS={task: 60}), pytest.raises(ImproperlyConfigured, match=task):
        schedules_defined()


@pytest.mark.django_db
def test_sweeper_closes_authorization_events_whose_code_has_expired(component, caplog):
    from openplatform.component.models import ComponentEvent
    from tenants.tasks import sweep_component_events

    stale = ComponentEvent(component_appid=APPID, info_type="authorized", authorizer_appid="wxold")
    stale.set_auth_code("queryauthcode@@@long-gone")
    stale.error = "no component_verify_ticket received in the last 12 hours"
    stale.save()
    ComponentEvent.objects.filter(pk=stale.pk).update(received_at=timezone.now() - timedelta(hours=3))

    assert sweep_component_events() == 0  # nothing left to enqueue

    stale.refresh_from_db()
    assert stale.processed_at is not None
    assert stale.auth_code_ciphertext == ""
    assert "expired" in stale.error
    assert any("expired unprocessed" in r.getMessage() for r in caplog.records if r.levelno == logging.ERROR)


@pytest.mark.django_db
def test_component_token_beat_refreshes_ahead_of_the_on_demand_margin(component, ticket):
    from openplatform.component.token import component_access_token_get

    first = component_access_token_get()
    ComponentAccessToken.objects.update(expires_at=timezone.now() + timedelta(seconds=900))
    assert refresh_component_token() == first.generation  # plenty left: nothing to do
    ComponentAccessToken.objects.update(expires_at=timezone.now() + timedelta(seconds=400))

    generation = refresh_component_token()  # inside the beat's window, before callers would refresh

    assert generation == first.generation + 1
    assert sim_count(component, "api_component_token") == 2
    assert component_access_token_get().generation == generation
