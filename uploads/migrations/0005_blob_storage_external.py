"""Image bytes are already compressed (JPEG/PNG): tell PostgreSQL not to try pglz on them.

With the default EXTENDED storage, every insert of a blob over ~2 kB runs pglz over incompressible
data before giving up and storing it out of line anyway; EXTERNAL stores it out of line directly.
"""

from django.db import migrations


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute('ALTER TABLE "uploads_uploadblob" ALTER COLUMN "data" SET STORAGE EXTERNAL')


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute('ALTER TABLE "uploads_uploadblob" ALTER COLUMN "data" SET STORAGE EXTENDED')


class Migration(migrations.Migration):
    dependencies = [("uploads", "0004_retry_budget_and_newest_index")]

    operations = [migrations.RunPython(forwards, backwards)]
