from django.apps import apps
from django.core.management.base import BaseCommand
from django.db import transaction

from openplatform.core.secrets import EncryptedSecretsMixin


class Command(BaseCommand):
    help = (
        "Re-encrypt every stored secret under the first key of FIELD_ENCRYPTION_KEYS. "
        "Rotate by prepending a new key, running this, then removing the old key."
    )

    def handle(self, *args, **options):
        total = 0
        for model in apps.get_models():
            if not issubclass(model, EncryptedSecretsMixin):
                continue
            count = 0
            for pk in model.objects.values_list("pk", flat=True).iterator(chunk_size=500):
                with transaction.atomic():
                    row = model.objects.select_for_update().get(pk=pk)
                    changed = row.rotate_secrets()
                    if changed:
                        row.save(update_fields=changed)
                        count += 1
            self.stderr.write(f"{model._meta.label}: {count} rows re-encrypted")
            total += count
        self.stdout.write(str(total))
