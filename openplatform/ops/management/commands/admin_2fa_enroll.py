"""`manage.py admin_2fa_enroll <username>`: give a staff member the TOTP device the admin asks for.

With ADMIN_REQUIRE_2FA on, a staff session counts only once a code from a registered device has been
entered at login. This creates (or, with --replace, replaces) the user's device and prints the
`otpauth://` URL to add to an authenticator app (scan it as a QR code with --qr). The URL carries the
device's secret: it is shown once, here, and never again.
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django_otp.plugins.otp_totp.models import TOTPDevice


class Command(BaseCommand):
    help = "Create a TOTP device for a staff user and print its otpauth:// URL (shown once)."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--replace", action="store_true", help="delete the user's existing devices first")
        parser.add_argument("--qr", action="store_true", help="also print the URL as a QR code in the terminal")

    def handle(self, *args, username: str, replace: bool, qr: bool, **options):
        user = get_user_model().objects.filter(username=username).first()
        if user is None or not user.is_staff:
            raise CommandError(f"no staff user named {username!r}")
        devices = TOTPDevice.objects.devices_for_user(user, confirmed=None)
        if devices.exists() and not replace:
            raise CommandError(f"{username} already has a device; use --replace to issue a new one")
        devices.delete()
        device = TOTPDevice.objects.create(user=user, name="authenticator app", confirmed=True)
        if qr:
            import qrcode

            code = qrcode.QRCode(border=1)
            code.add_data(device.config_url)
            code.print_ascii(out=self.stdout)
        self.stdout.write(device.config_url)
