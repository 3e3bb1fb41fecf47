"""Setting pesa.django up: one configuration language, checks that name what is missing,
migrations that match the models, and no server dependency."""

from __future__ import annotations

import io
import subprocess
import sys
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command

from conftest import CALLBACK_TOKEN
from pesa.django import conf

pytestmark = pytest.mark.django_db(databases="__all__")


def errors(settings: Any, **pesa: Any) -> dict[str, list[str]]:
    settings.PESA = pesa
    found: dict[str, list[str]] = {}
    for message in conf.check_configuration():
        found.setdefault(message.id or "", []).append(str(message.msg))
    return found


def test_the_pesa_dict_takes_the_settings_fields_in_either_spelling(settings: Any) -> None:
    settings.PESA = {"env": "emulator", "PESA_SHORTCODE": "600000", "TIMEOUT": 7}
    pesa = conf.pesa_settings()
    assert (pesa.shortcode, pesa.timeout) == ("600000", 7.0)


def test_an_unknown_or_invalid_setting_is_named(settings: Any) -> None:
    settings.PESA = {"shortcod": "600000"}
    with pytest.raises(ImproperlyConfigured, match=r"PESA\['shortcod'\] is not a pesa setting"):
        conf.pesa_settings()
    settings.PESA = {"timeout": -1}
    with pytest.raises(ImproperlyConfigured, match="PESA_TIMEOUT"):
        conf.pesa_settings()


def test_the_environment_fills_in_what_the_dict_leaves_out(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PESA_SHORTCODE", "600978")
    settings.PESA = {"timeout": 3}
    assert conf.pesa_settings().shortcode == "600978"


def test_sandbox_without_credentials_fails_the_checks_naming_each_variable(settings: Any) -> None:
    found = errors(settings, env="sandbox")
    named = " ".join(found["pesa.E002"])
    for variable in (
        "PESA_CALLBACK_TOKEN",
        "PESA_PUBLIC_URL",
        "PESA_CONSUMER_KEY",
        "PESA_CONSUMER_SECRET",
        "PESA_SHORTCODE",
        "PESA_PASSKEY",
    ):
        assert variable in named
    production = errors(
        settings,
        env="production",
        callback_token="x" * 32,
        public_url="http://shop.example",
        consumer_key="k",
        consumer_secret="s",
        shortcode="600000",
        passkey="p",
    )
    assert "https" in production["pesa.E004"][0]


def test_a_short_callback_token_is_refused_outside_the_emulator(settings: Any) -> None:
    found = errors(
        settings,
        env="sandbox",
        callback_token="short",
        public_url="https://shop.example",
        consumer_key="k",
        consumer_secret="s",
        shortcode="600000",
        passkey="p",
    )
    assert "at least 16 characters" in found["pesa.E003"][0]


def test_the_emulator_derives_a_stable_callback_token_from_secret_key(settings: Any) -> None:
    settings.PESA = {"env": "emulator"}
    first = conf.callback_token()
    assert len(first) == 32 and first == conf.callback_token()
    assert conf.callback_url() == f"http://127.0.0.1:8000/mpesa/callbacks/{first}/stk"
    settings.SECRET_KEY = "another-secret-key-for-another-site"
    assert conf.callback_token() != first


def test_the_callback_url_follows_the_public_url_and_the_mount(settings: Any) -> None:
    settings.PESA = {"public_url": "https://shop.example/", "callback_token": CALLBACK_TOKEN}
    assert conf.callback_url() == f"https://shop.example/mpesa/callbacks/{CALLBACK_TOKEN}/stk"


def test_the_migrations_match_the_models() -> None:
    out = io.StringIO()
    call_command("makemigrations", "pesa", "--check", "--dry-run", stdout=out)
    assert "No changes detected" in out.getvalue()


def test_the_app_imports_without_the_server_extra_nor_the_gateway() -> None:
    # pesa[django] brings no SQLAlchemy, FastAPI or uvicorn: make them unimportable. And the
    # app stands on pesa.daraja, pesa.client and the ledger's pure rules, never the gateway.
    code = """
import sys
for name in ("sqlalchemy", "fastapi", "uvicorn", "alembic", "starlette"):
    sys.modules[name] = None
import django
from django.conf import settings
settings.configure(
    INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth",
                    "django.contrib.admin", "django.contrib.messages", "pesa.django"],
    DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
    ROOT_URLCONF="pesa.django.urls", USE_TZ=True, SECRET_KEY="x",
)
django.setup()
import pesa.django.admin, pesa.django.views, pesa.django._store, pesa.django.c2b_urls
import pesa.django._payouts, pesa.django._receipts, pesa.django._payout_checks
from pesa.django import request_payment, ask_daraja, reconcile, send_payout
from pesa.django.management.commands import pesa_reconcile, pesa_c2b_register
servers = ("sqlalchemy", "fastapi", "pesa.gateway.", "pesa.emulator", "pesa.testing")
loaded = [
    m for m, v in sys.modules.items()
    if v is not None and (m == "pesa.gateway" or m.startswith(servers))
]
print("ok", sorted(loaded))
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok []"


def test_the_public_surface_is_sorted_resolvable_and_documented() -> None:
    import inspect

    import pesa.django

    assert pesa.django.__all__ == sorted(pesa.django.__all__)
    for name in pesa.django.__all__:
        assert inspect.getdoc(getattr(pesa.django, name)), name
