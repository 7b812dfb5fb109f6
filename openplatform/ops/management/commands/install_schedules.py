from django.core.management.base import BaseCommand

from openplatform.ops.schedules import install_schedules


class Command(BaseCommand):
    help = "Create the scheduled jobs in django-celery-beat (existing entries are left as they are)."

    def handle(self, *args, **options):
        self.stdout.write(str(install_schedules()))
