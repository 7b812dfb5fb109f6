from django.core.management.base import BaseCommand

from openplatform.ops.schedules import schedules_install


class Command(BaseCommand):
    help = (
        "Write the scheduled jobs to django-celery-beat: create missing ones, bring existing ones back to their "
        "task, interval (from settings) and description; an operator's `enabled` is kept. `migrate` does the same."
    )

    def handle(self, *args, **options):
        report = schedules_install()
        self.stdout.write(f"{report.created} created, {report.updated} updated")
