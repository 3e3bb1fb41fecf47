"""The Django application config of ``pesa.django`` (``INSTALLED_APPS += ["pesa.django"]``)."""

from __future__ import annotations

from django.apps import AppConfig


class PesaConfig(AppConfig):
    """M-Pesa payments in the project's own database: models, admin, callbacks, commands.

    The app label is ``pesa``: its tables are ``pesa_payment``, ``pesa_callback``,
    ``pesa_paymentevent`` and ``pesa_stkquery``.
    """

    name = "pesa.django"
    label = "pesa"
    verbose_name = "M-Pesa"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Registers the system checks (``manage.py check``) and the settings-change hook.
        from pesa.django import conf  # noqa: F401
