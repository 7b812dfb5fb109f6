"""``manage.py wechat_simulator``: the local WeChat API simulator, wired to this project's component.

The simulator itself imports no Django; this command only reads the component's credentials from the
settings, registers them, and pushes a component_verify_ticket to our events URL now and every
``--ticket-interval`` seconds, as WeChat would, so the local run can obtain a component token.
With SIMULATOR_CONTROL_TOKEN set, the control API (/_sim/) needs it as a bearer token; without it, the
command refuses any --host but loopback.
"""

from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from openplatform.wechat.simulator.server import TICKET_INTERVAL, UnsafeBind, serve

EVENTS_PATH = "/wechat/component/events/"


class Command(BaseCommand):
    help = (
        "Run the local WeChat API simulator until stopped (point WECHAT_API_BASE and WECHAT_MP_BASE at it)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=9000)
        parser.add_argument(
            "--ticket-interval",
            type=float,
            default=TICKET_INTERVAL,
            help="seconds between component_verify_ticket pushes (0 disables them)",
        )

    def handle(self, *args, host: str, port: int, ticket_interval: float, **options):
        component = None
        appid = settings.WECHAT_COMPONENT_APPID
        secret = settings.WECHAT_COMPONENT_APPSECRET
        token = settings.WECHAT_COMPONENT_TOKEN
        aes_key = settings.WECHAT_COMPONENT_AES_KEY
        if appid and secret and token and aes_key:
            component = {
                "component_appid": appid,
                "component_appsecret": secret,
                "token": token,
                "encoding_aes_key": aes_key,
                "events_url": settings.PUBLIC_BASE_URL.rstrip("/") + EVENTS_PATH,
            }
        else:
            self.stderr.write(
                "WECHAT_COMPONENT_APPID/APPSECRET/TOKEN/AES_KEY are not all set: no component registered "
                "(register one with POST /_sim/components)."
            )
        try:
            serve(host=host, port=port, component=component, ticket_interval=ticket_interval,
                  control_token=settings.SIMULATOR_CONTROL_TOKEN or None, out=self.stdout)
        except UnsafeBind as exc:
            raise CommandError(str(exc)) from None
