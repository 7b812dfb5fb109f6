"""The scheduled jobs, kept in django-celery-beat's tables: beat reads them there, operators see them in the admin.

Defined here, with their intervals from settings, and written to the database on every `migrate` (a
post_migrate handler connected in openplatform/ops/apps.py) and by `manage.py install_schedules`, for a
deploy that wants to run it on its own. Both are idempotent. A job missing from the table is created;
an existing one is brought back to its definition, so a changed interval reaches every database at its
next migrate. Who owns what on a row:

* the definition owns `task`, the interval and `description`. To change an interval, change its
  setting (TOKEN_REFRESH_EVERY_SECONDS for the two token refreshes, SCHEDULE_EVERY_SECONDS for the
  others) and migrate: an interval (or crontab) edited in the admin lasts until the next migrate;
* the operator owns `enabled`: a job switched off in the admin stays off across migrates, and the
  other fields (queue, expiry, start time) are left as they are;
* a row whose name is not defined here (one an operator added, or a job since renamed) is left alone.

Exactly one `celery beat` must run (deploy/OPERATIONS.md).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from django.apps import apps as global_apps
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import DEFAULT_DB_ALIAS, router, transaction
from django.utils import timezone

from openplatform.component.models import TICKET_STALE_AFTER
from openplatform.core.tokens import scheduled_refresh_window

logger = logging.getLogger(__name__)

#: Marks the jobs that run every settings.TOKEN_REFRESH_EVERY_SECONDS (the token margins derive from it).
TOKEN_REFRESH = None


@dataclass(frozen=True)
class Schedule:
    task: str
    every: int  # seconds
    description: str


@dataclass(frozen=True)
class SchedulesReport:
    created: int
    updated: int


def _minutes(seconds: float) -> str:
    return f"{seconds // 60:.0f} minutes" if seconds % 60 == 0 else f"{seconds:.0f} s"


def _jobs() -> dict[str, tuple[str, int | None, str]]:
    """name -> (task, default seconds between runs or TOKEN_REFRESH, description)."""
    window = scheduled_refresh_window(every=timedelta(seconds=settings.TOKEN_REFRESH_EVERY_SECONDS))
    stale = TICKET_STALE_AFTER.total_seconds()
    return {
        "Refresh component token": ("tenants.refresh_component_token", TOKEN_REFRESH,
                                    "Refresh component_access_token ahead of expiry."),
        "Refresh authorizer tokens due": (
            "tenants.refresh_due_authorizer_tokens", TOKEN_REFRESH,
            f"Refresh authorizer tokens expiring within {_minutes(window.total_seconds())}, in jittered batches.",
        ),
        "Ticket watchdog": ("tenants.ticket_watchdog", 300,
                            f"Log an error when the newest ticket is over {_minutes(stale)} old."),
        "Reconcile authorizers": ("tenants.reconcile_authorizers", 86400,
                                  "Compare with api_get_authorizer_list: recover refresh tokens, notice revocations."),
        "Re-enqueue stored authorization events": ("tenants.sweep_component_events", 120,
                                                   "Process authorization events whose task was never run."),
        "Purge old tickets": ("tenants.purge_old_tickets", 86400, "Keep two days of ticket history."),
        "Sweep stuck uploads": ("uploads.sweep_stuck_uploads", 60,
                                "Re-enqueue queued uploads past due and uploads whose worker lease ran out."),
        "Purge image bytes": ("uploads.purge_image_bytes", 3600,
                              "Delete image bytes of finished uploads after UPLOAD_BYTES_RETENTION_DAYS."),
        "Sweep webhook deliveries": ("webhooks.sweep_deliveries", 60,
                                     "Enqueue webhook deliveries past due (broker down at the change, long backoffs)."),
        "Purge old webhook events": ("webhooks.purge_old_events", 86400,
                                     "Delete webhook events (and their attempts) after WEBHOOK_EVENT_RETENTION_DAYS."),
    }


def schedules_defined() -> dict[str, Schedule]:
    """The jobs by name, with the intervals the settings give them now."""
    jobs = _jobs()
    overrides = dict(settings.SCHEDULE_EVERY_SECONDS)
    adjustable = {task for task, every, _ in jobs.values() if every is not TOKEN_REFRESH}
    unknown = sorted(set(overrides) - adjustable)
    if unknown:
        raise ImproperlyConfigured(
            f"SCHEDULE_EVERY_SECONDS names {', '.join(unknown)}: not a scheduled task whose interval it sets "
            f"(those are {', '.join(sorted(adjustable))}; the token refreshes follow TOKEN_REFRESH_EVERY_SECONDS)"
        )
    defined = {}
    for name, (task, every, description) in jobs.items():
        seconds = settings.TOKEN_REFRESH_EVERY_SECONDS if every is TOKEN_REFRESH else overrides.get(task, every)
        if seconds <= 0:
            raise ImproperlyConfigured(f"the interval of {task} must be a positive number of seconds, not {seconds}")
        defined[name] = Schedule(task=task, every=seconds, description=description)
    return defined


def schedules_install(*, apps=global_apps, using: str = DEFAULT_DB_ALIAS) -> SchedulesReport:
    """Create the missing jobs and bring existing ones back to their definition (the operator's `enabled` stays).

    `apps` is the registry to take django-celery-beat's models from: the project's, or the migration
    state a post_migrate handler is given.
    """
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTasks = apps.get_model("django_celery_beat", "PeriodicTasks")
    defined = schedules_defined()
    created = updated = 0
    with transaction.atomic(using=using):
        rows = {row.name: row for row in PeriodicTask.objects.using(using).filter(name__in=list(defined))}
        for name, schedule in defined.items():
            interval = IntervalSchedule.objects.using(using).filter(every=schedule.every, period="seconds").first()
            if interval is None:
                interval = IntervalSchedule.objects.using(using).create(every=schedule.every, period="seconds")
            row = rows.get(name)
            if row is None:
                PeriodicTask.objects.using(using).create(
                    name=name, task=schedule.task, interval=interval, description=schedule.description, enabled=True
                )
                created += 1
            elif _differs(row, schedule, interval):
                row.task, row.interval, row.description = schedule.task, interval, schedule.description
                row.crontab = row.solar = row.clocked = None  # an interval job: one kind of schedule per row
                row.save(update_fields=["task", "interval", "crontab", "solar", "clocked", "description"])
                updated += 1
        if created or updated:
            # Beat reloads its schedule when this marker moves (django-celery-beat's models move it from
            # their save(), which the migration state's models do not have).
            PeriodicTasks.objects.using(using).update_or_create(ident=1, defaults={"last_update": timezone.now()})
    if created or updated:
        logger.info("scheduled jobs: %d created, %d updated to their definition", created, updated)
    return SchedulesReport(created=created, updated=updated)


def _differs(row, schedule: Schedule, interval) -> bool:
    return (
        (row.task, row.interval_id, row.description) != (schedule.task, interval.pk, schedule.description)
        or any(getattr(row, f"{kind}_id") is not None for kind in ("crontab", "solar", "clocked"))
    )


def schedules_install_after_migrate(sender, *, using: str = DEFAULT_DB_ALIAS, apps=global_apps, **kwargs) -> None:
    """post_migrate handler. Skipped when django-celery-beat's tables are not (or no longer) migrated.

    `flush` (as run between transactional tests) sends post_migrate without `apps`: the project's models then.
    """
    try:
        PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    except LookupError:
        return
    if router.allow_migrate_model(using, PeriodicTask):
        schedules_install(apps=apps, using=using)
