from django.core.management.base import BaseCommand, CommandError

from openplatform.wechat.errors import WeChatError
from tenants.models import Tenant
from tenants.services.authorization import authorization_link_create


class Command(BaseCommand):
    help = "Print a fresh authorization URL to send to the merchant (PC by default, --mobile for inside WeChat)."

    def add_arguments(self, parser):
        parser.add_argument("tenant_slug")
        parser.add_argument("--mobile", action="store_true")

    def handle(self, *args, tenant_slug: str, mobile: bool, **options):
        tenant = Tenant.objects.filter(slug=tenant_slug, is_active=True).first()
        if tenant is None:
            raise CommandError(f"no active tenant {tenant_slug!r}")
        try:
            link = authorization_link_create(tenant=tenant)
        except WeChatError as exc:
            raise CommandError(f"WeChat refused the pre-authorization code: {exc}") from exc
        self.stderr.write(f"valid until {link.expires_at:%Y-%m-%d %H:%M:%S %Z}; single use")
        self.stdout.write(link.mobile_url if mobile else link.url)
