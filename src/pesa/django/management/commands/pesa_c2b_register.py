"""``manage.py pesa_c2b_register``: tell Daraja where to send C2B confirmations.

Registers this site's ``c2b-confirmation`` and ``c2b-validation`` URLs (under the secret
callback token) for ``PESA_SHORTCODE`` (or ``--shortcode``), with
``PESA_C2B_RESPONSE_TYPE`` (what Daraja does when validation cannot be reached) and
``PESA_C2B_VERSION``. Run it once per shortcode, again when ``PESA_PUBLIC_URL`` or the token
changes. In production Daraja accepts a registration once: change it on the portal.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from pesa._exceptions import PesaError
from pesa.django import conf


class Command(BaseCommand):
    help = "Register this site's C2B confirmation and validation URLs with Daraja."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--shortcode", help="the PayBill or till (default PESA_SHORTCODE)")

    def handle(self, *args: Any, **options: Any) -> None:  # noqa: ARG002 - Django API
        settings = conf.pesa_settings()
        client = conf.daraja()
        shortcode = options.get("shortcode") or client.shortcode
        if not shortcode:
            raise CommandError("no shortcode: set PESA_SHORTCODE or pass --shortcode")
        confirmation = conf.site_url("c2b:confirmation")
        validation = conf.site_url("c2b:validation")
        try:
            response = client.c2b_register_urls(
                confirmation,
                validation,
                shortcode=shortcode,
                response_type=settings.c2b_response_type,
                version=settings.c2b_version,
            )
        except PesaError as err:
            raise CommandError(f"Daraja refused the registration: {err}") from err
        token = conf.callback_token()
        self.stdout.write(
            f"registered for {shortcode}: {confirmation.replace(token, '<token>')} "
            f"({response.response_description})"
        )
