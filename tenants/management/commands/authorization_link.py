from django.core.management.base import BaseCommand, CommandError

from openplatform.wechat.errors import WeChatError
from tenants.errors import TenantsError
from tenants.models import Tenant
from tenants.services.authorization import authorization_link_create


def _set_ids(value: str) -> list[int]:
    """`11`, `11,18` or `11|18` (WeChat's own separator)."""
    try:
        return [int(part) for part in value.replace("|", ",").split(",") if part.strip()]
    except ValueError:
        raise CommandError(f"--category-id-list takes permission-set ids such as 11 or 11,18, not {value!r}") from None


class Command(BaseCommand):
    help = "Print a fresh authorization URL to send to the merchant (PC by default, --mobile for inside WeChat)."

    def add_arguments(self, parser):
        parser.add_argument("tenant_slug")
        parser.add_argument("--mobile", action="store_true")
        parser.add_argument(
            "--category-id-list", type=_set_ids, default=[], metavar="IDS",
            help="ask only for these permission sets, e.g. 11 (uploads to an Official Account) or 11,18",
        )

    def handle(self, *args, tenant_slug: str, mobile: bool, category_id_list: list[int], **options):
        tenant = Tenant.objects.filter(slug=tenant_slug, is_active=True).first()
        if tenant is None:
            raise CommandError(f"no active tenant {tenant_slug!r}")
        try:
            link = authorization_link_create(tenant=tenant, category_id_list=category_id_list)
        except TenantsError as exc:
            raise CommandError(exc.detail) from exc
        except WeChatError as exc:
            raise CommandError(f"WeChat refused the pre-authorization code: {exc}") from exc
        self.stderr.write(f"valid until {link.expires_at:%Y-%m-%d %H:%M:%S %Z}; single use")
        self.stdout.write(link.mobile_url if mobile else link.url)
