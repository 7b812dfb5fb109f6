"""Once installed the beat schedules. They are now written (and kept up to date) after every migrate by
openplatform/ops/schedules.py, which this app, a lower layer, does not import: a no-op, kept for the
migration history."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("uploads", "0001_initial"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(migrations.RunPython.noop, migrations.RunPython.noop)]
