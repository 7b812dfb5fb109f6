import os
import sys

from django.core.management.base import BaseCommand, CommandError

from tenants.errors import TenantsError
from tenants.models import Tenant
from tenants.services.direct import authorizer_create_direct


class Command(BaseCommand):
    help = (
        "Register an account in direct mode (its own AppID/AppSecret, tokens from stable_token). "
        "The AppSecret is read from the environment variable WECHAT_APP_SECRET or from standard input, "
        "never from the command line (it would end up in shell history and process lists)."
    )

    def add_arguments(self, parser):
        parser.add_argument("tenant_slug")
        parser.add_argument("appid")
        parser.add_argument("--mini-program", action="store_true")
        parser.add_argument("--name", default="")

    def handle(self, *args, tenant_slug: str, appid: str, mini_program: bool, name: str, **options):
        tenant = Tenant.objects.filter(slug=tenant_slug).first()
        if tenant is None:
            raise CommandError(f"no tenant {tenant_slug!r}")
        secret = os.environ.get("WECHAT_APP_SECRET") or sys.stdin.readline().strip()
        if not secret:
            raise CommandError("no AppSecret given (WECHAT_APP_SECRET or standard input)")
        try:
            authorizer = authorizer_create_direct(
                tenant=tenant, appid=appid, app_secret=secret, nick_name=name,
                account_type="mini_program" if mini_program else "official_account",
                func_info=[18] if mini_program else [11],
            )
        except TenantsError as exc:
            raise CommandError(exc.detail) from exc
        self.stdout.write(authorizer.appid)
