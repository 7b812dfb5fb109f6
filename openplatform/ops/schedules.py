"""The scheduled jobs, stored in django-celery-beat's tables so operators see and edit them in the admin.

Installed by a data migration and by `manage.py install_schedules` (idempotent: an existing entry,
possibly edited by an operator, is left as it is). Exactly one `celery beat` must run.
"""

from __future__ import annotations

#: name -> (task, every N seconds, description)
SCHEDULES: dict[str, tuple[str, int, str]] = {
    "Refresh component token": ("tenants.refresh_component_token", 240,
                                "Refresh component_access_token ahead of expiry."),
    "Refresh authorizer tokens due": ("tenants.refresh_due_authorizer_tokens", 240,
                                      "Refresh authorizer tokens expiring within 8 minutes, in jittered batches."),
    "Ticket watchdog": ("tenants.ticket_watchdog", 300, "Log an error when the newest ticket is over 30 minutes old."),
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


def install_schedules(apps=None) -> int:
    if apps is None:
        from django_celery_beat.models import IntervalSchedule, PeriodicTask
    else:
        IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
        PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    created = 0
    for name, (task, seconds, description) in SCHEDULES.items():
        if PeriodicTask.objects.filter(name=name).exists():
            continue
        interval, _ = IntervalSchedule.objects.get_or_create(every=seconds, period="seconds")
        PeriodicTask.objects.create(name=name, task=task, interval=interval, description=description, enabled=True)
        created += 1
    return created
