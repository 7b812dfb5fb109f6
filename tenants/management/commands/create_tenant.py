from django.core.management.base import BaseCommand, CommandError
from django.utils.text import slugify

from tenants.models import Tenant


class Command(BaseCommand):
    help = "Create a merchant (tenant). Prints the tenant's slug last. Re-running with the same slug reuses it."

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument("--name", default="")

    def handle(self, *args, slug: str, name: str, **options):
        clean = slugify(slug)
        if not clean or clean != slug:
            raise CommandError(f"invalid slug {slug!r}: use lowercase letters, digits and hyphens (e.g. {clean!r})")
        tenant, created = Tenant.objects.get_or_create(slug=slug, defaults={"name": name or slug})
        if not created and name and tenant.name != name:
            tenant.name = name
            tenant.save(update_fields=["name"])
        self.stderr.write(("created" if created else "exists") + f": tenant {tenant.slug}")
        self.stdout.write(tenant.slug)
