"""`manage.py seed_demo [--wait]`: the local run's demo, through the real flows (used by `make run`).

Waits for the web server and the simulator, makes sure a ticket has arrived, creates a demo tenant,
an API key and a superuser, authorizes a demo Official Account through the simulator's authorization
page (exactly as a merchant would), and prints what to paste. Re-running reuses what exists; the
generated secrets are kept in var/demo.json (local development only).
"""

from __future__ import annotations

import io
import json
import re
import secrets
import shlex
import time
from pathlib import Path

import requests
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from PIL import Image

from openplatform.component.config import component_config
from openplatform.component.tickets import component_ticket_latest
from tenants.models import Authorizer, Tenant, TenantAPIKey
from tenants.services.authorization import authorization_link_create
from tenants.services.keys import api_key_create

DEMO_FILE = settings.VAR_DIR / "demo.json"
SAMPLE_FILE = settings.VAR_DIR / "sample.png"


def _wait_for(url: str, what: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=2).status_code < 500:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise CommandError(f"{what} did not answer at {url} within {timeout:.0f} s")


class Command(BaseCommand):
    help = "Seed the local demo (tenant, API key, superuser, an authorized account) and print how to use it."

    def add_arguments(self, parser):
        parser.add_argument("--wait", action="store_true", help="keep running after printing (for honcho)")
        parser.add_argument("--web", default=None, help="our base URL (default PUBLIC_BASE_URL)")

    def handle(self, *args, wait: bool, web: str | None, **options):
        config = component_config()
        web = (web or config.public_base_url).rstrip("/")
        _wait_for(config.api_base.rstrip("/") + "/_sim/counters", "the WeChat simulator")
        _wait_for(web + "/healthz", "the web server")
        self._wait_for_ticket(config.appid)

        state = json.loads(DEMO_FILE.read_text()) if DEMO_FILE.exists() else {}
        tenant, _ = Tenant.objects.get_or_create(slug="demo", defaults={"name": "Demo merchant"})
        api_key = state.get("api_key")
        if not api_key or not TenantAPIKey.objects.filter(prefix=api_key.partition(".")[0], revoked=False).exists():
            _, api_key = api_key_create(tenant=tenant, name="demo")
        password = state.get("admin_password") or secrets.token_urlsafe(12)
        user_model = get_user_model()
        admin = user_model.objects.filter(username="admin").first()
        if admin is None:
            user_model.objects.create_superuser("admin", "admin@example.invalid", password)
        elif not admin.check_password(password):
            admin.set_password(password)
            admin.save(update_fields=["password"])
        DEMO_FILE.write_text(json.dumps({"api_key": api_key, "admin_password": password}))
        DEMO_FILE.chmod(0o600)

        authorizer = tenant.authorizers.authorized().first()
        if authorizer is None:
            authorizer = self._authorize_through_page(tenant, web)
        if not SAMPLE_FILE.exists():
            buf = io.BytesIO()
            Image.new("RGB", (320, 200), (7, 193, 96)).save(buf, format="PNG")
            SAMPLE_FILE.write_bytes(buf.getvalue())
        self._print(web, api_key, password, authorizer.appid)
        if wait:
            while True:  # honcho stops every process when one exits
                time.sleep(3600)

    def _wait_for_ticket(self, appid: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            latest = component_ticket_latest(component_appid=appid)
            if latest is not None and latest.is_valid:
                return
            # Ask the simulator to push one now (WeChat pushes every 10 minutes).
            try:
                token = settings.SIMULATOR_CONTROL_TOKEN  # the simulator's control API may need it (staging)
                requests.post(component_config().api_base.rstrip("/") + "/_sim/tickets/push",
                              json={"component_appid": appid}, timeout=10,
                              headers={"Authorization": f"Bearer {token}"} if token else {})
            except requests.RequestException:
                pass
            time.sleep(1)
        raise CommandError("no component_verify_ticket arrived: is the events URL reachable from the simulator?")

    def _authorize_through_page(self, tenant: Tenant, web: str) -> Authorizer:
        link = authorization_link_create(tenant=tenant, auth_type=1)
        session = requests.Session()
        page = session.get(link.url, timeout=10)
        page.raise_for_status()
        match = re.search(r"name='appid' value='([^']+)'", page.text)
        appid = match.group(1) if match else "wx" + secrets.token_hex(8)
        done = session.post(
            link.url,
            data={"appid": appid, "nick_name": "Demo Official Account", "account_type": "official_account",
                  "func": ["1", "11"]},
            timeout=30,
        )
        if done.status_code != 200:
            raise CommandError(f"authorization through the simulator's page failed: HTTP {done.status_code}")
        authorizer = Authorizer.objects.filter(tenant=tenant, appid=appid).first()
        if authorizer is None:
            raise CommandError("the authorization page redirected back but no authorizer was bound")
        return authorizer

    def _print(self, web: str, api_key: str, password: str, appid: str) -> None:
        # Every command runs as printed when pasted into a shell: quoted where needed, no placeholders, and
        # one line each (honcho prefixes every output line, so a continued command would not paste).
        auth = shlex.quote(f"Authorization: Api-Key {api_key}")
        media = shlex.quote(f"media=@{Path(SAMPLE_FILE).resolve()}")
        self.stdout.write(f"""
================================ demo ready ================================
Admin console:   {web}/{settings.ADMIN_URL}   user: admin   password: {password}
API docs:        {web}/api/docs/
Demo API key:    {api_key}
Demo account:    {appid} (an Official Account authorized through the simulator)

Upload a sample image (answers 202 with the upload as JSON):
  curl -s -H {auth} -F {media} -F authorizer_appid={appid} {web}/api/v1/uploads/

Read its status (your uploads, newest first; one upload is {web}/api/v1/uploads/ID/):
  curl -s -H {auth} {web}/api/v1/uploads/

List your accounts:
  curl -s -H {auth} {web}/api/v1/authorizers/
============================================================================
""")
