from django.core.management.base import BaseCommand, CommandError

from tenants.models import Tenant
from tenants.services.keys import api_key_create


class Command(BaseCommand):
    help = "Create an API key for a tenant. Prints the key last; it is shown once and stored hashed."

    def add_arguments(self, parser):
        parser.add_argument("tenant_slug")
        parser.add_argument("--name", default="cli", help="a label for the key (not secret)")

    def handle(self, *args, tenant_slug: str, name: str, **options):
        tenant = Tenant.objects.filter(slug=tenant_slug).first()
        if tenant is None:
            raise CommandError(f"no tenant {tenant_slug!r}; create it with create_tenant")
        _, key = api_key_create(tenant=tenant, name=name)
        self.stderr.write(f"API key for {tenant.slug} (shown once; send it as 'Authorization: Api-Key <key>'):")
        self.stdout.write(key)
