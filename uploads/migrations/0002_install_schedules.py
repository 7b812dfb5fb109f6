from django.db import migrations


def forwards(apps, schema_editor):
    from openplatform.ops.schedules import install_schedules

    install_schedules(apps)


class Migration(migrations.Migration):
    dependencies = [
        ("uploads", "0001_initial"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
