"""`manage.py start_push_ticket`: ask WeChat to push a component_verify_ticket now.

WeChat pushes a ticket to the authorization-event URL every 10 minutes once the component is live.
When tickets stop arriving (after a long outage, a changed events URL, or a fresh deployment),
`api_start_push_ticket` restarts the pushes; the ticket then arrives at /wechat/component/events/ within
seconds, and `/readyz` shows its age. See deploy/OPERATIONS.md, "When tickets stop arriving".
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from openplatform.component.api import component_api
from openplatform.component.config import component_config
from openplatform.wechat.errors import WeChatError


class Command(BaseCommand):
    help = "Ask WeChat to push a component_verify_ticket to our events URL now (api_start_push_ticket)."

    def handle(self, *args, **options):
        config = component_config()
        if not (config.appid and config.appsecret):
            raise CommandError("WECHAT_COMPONENT_APPID and WECHAT_COMPONENT_APPSECRET must be set")
        try:
            component_api(config=config).start_push_ticket()
        except WeChatError as exc:
            raise CommandError(f"api_start_push_ticket failed: {exc}") from exc
        self.stdout.write(
            f"requested a component_verify_ticket push for {config.appid}; WeChat sends it to "
            f"{config.events_url} (check /readyz for its age)"
        )
