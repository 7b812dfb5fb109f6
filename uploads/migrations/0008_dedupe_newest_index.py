# The dedupe lookup's plan (docs/architecture.md §7, "Plans that stay cheap as the table grows"): its
# index carries finished_at, and PostgreSQL is told that sha256 is (nearly) unique to each upload, so
# that many uploads of one image do not make it read the whole dedupe window through
# upload_finished_at_idx instead. deploy/OPERATIONS.md, "Index migrations on a large uploads table".

from django.db import migrations, models


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute('ALTER TABLE "uploads_upload" ALTER COLUMN "sha256" SET (n_distinct = -1)')
        schema_editor.execute('ANALYZE "uploads_upload"')


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute('ALTER TABLE "uploads_upload" ALTER COLUMN "sha256" RESET (n_distinct)')


class Migration(migrations.Migration):

    dependencies = [
        ('uploads', '0007_leaner_indexes'),
    ]

    operations = [
        migrations.AddIndex(
            model_name='upload',
            index=models.Index(condition=models.Q(('status', 'succeeded')), fields=['authorizer', 'sha256', '-finished_at'], name='upload_dedupe_newest_idx'),
        ),
        migrations.RemoveIndex(
            model_name='upload',
            name='upload_dedupe_succeeded_idx',
        ),
        migrations.RunPython(forwards, backwards),
    ]
