"""The Celery app: `celery -A openplatform worker`, `celery -A openplatform beat`."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "openplatform.settings")

app = Celery("openplatform")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
