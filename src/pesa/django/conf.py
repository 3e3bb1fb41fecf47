"""The app's configuration: the same ``PESA_*`` variables, or a ``PESA = {...}`` dict.

There is one configuration language, :class:`pesa.Settings`. ``settings.PESA`` (optional)
holds the same fields as keyword arguments (``{"env": "sandbox", "shortcode": "174379"}``;
``"PESA_SHORTCODE"`` or ``"SHORTCODE"`` spellings work too); anything it does not set is read
from the environment (``PESA_*``, and a ``.env`` file), exactly as ``pesa serve`` reads it.

What the Django app adds on top is derived, never configured twice:

- the callback URL is ``PESA_PUBLIC_URL`` plus wherever the project mounted
  ``pesa.django.urls`` (``reverse("pesa:stk-callback")``); in the ``emulator`` environment,
  without ``PESA_PUBLIC_URL``, the site is taken to be ``runserver``'s
  ``http://127.0.0.1:8000``;
- in the ``emulator`` environment without ``PESA_CALLBACK_TOKEN``, the token is derived
  from ``SECRET_KEY`` (every process of the site agrees on it); elsewhere it is required.

``manage.py check`` reports what is missing (``pesa.E00x``) before anything is sent.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
from collections.abc import Callable, Mapping
from typing import Any

import httpx
import pydantic
from django.conf import settings as django_settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.db import connections, router
from django.dispatch import receiver
from django.urls import NoReverseMatch, reverse
from django.utils.module_loading import import_string

from pesa._constants import BASE_URLS
from pesa._exceptions import ConfigurationError, PesaError
from pesa._logging import get_logger
from pesa.client import Daraja
from pesa.config import Settings
from pesa.daraja import (
    SANDBOX_INITIATOR,
    SANDBOX_INITIATOR_PASSWORD,
    SANDBOX_PASSKEY,
    SANDBOX_STK_SHORTCODE,
    security_credential,
)
from pesa.daraja._trust import CallbackTrust

__all__ = [
    "EMULATOR_CONSUMER_KEY",
    "EMULATOR_PUBLIC_URL",
    "callback_token",
    "callback_trust",
    "c2b_validator",
    "callback_url",
    "daraja",
    "pesa_settings",
    "reset",
    "site_url",
]

# In the emulator the site is runserver's default address unless PESA_PUBLIC_URL says more.
EMULATOR_PUBLIC_URL = "http://127.0.0.1:8000"
# A public placeholder the emulator accepts (it checks credentials only in strict mode).
EMULATOR_CONSUMER_KEY = "pesa-emulator"
_MIN_TOKEN = 16
_REQUIRED_OUTSIDE_EMULATOR = (
    "callback_token",
    "public_url",
    "consumer_key",
    "consumer_secret",
    "shortcode",
    "passkey",
)

log = get_logger("pesa.django")
_lock = threading.Lock()
_cache: dict[str, Any] = {}


def _settings_values() -> dict[str, Any]:
    raw = getattr(django_settings, "PESA", None)
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ImproperlyConfigured(
            "settings.PESA must be a dict of pesa settings, e.g. {'env': 'sandbox'} "
            f"(got {type(raw).__name__})"
        )
    values: dict[str, Any] = {}
    for key, value in raw.items():
        name = str(key).lower()
        name = name.removeprefix("pesa_")
        if name not in Settings.model_fields:
            raise ImproperlyConfigured(
                f"settings.PESA[{key!r}] is not a pesa setting: the keys are the fields of "
                "pesa.Settings (the PESA_* variables without their prefix)"
            )
        values[name] = value
    return values


def _load() -> Settings:
    values = _settings_values()
    try:
        return Settings(**values)
    except ConfigurationError as err:
        raise ImproperlyConfigured(f"invalid pesa settings: {err}") from None
    except pydantic.ValidationError as err:
        problems = "; ".join(
            f"PESA_{'.'.join(str(p) for p in e['loc']).upper() or '?'}: {e['msg']}"
            for e in err.errors()
        )
        raise ImproperlyConfigured(f"invalid pesa settings: {problems}") from None


def pesa_settings() -> Settings:
    """The :class:`pesa.Settings` of this site (``settings.PESA`` over ``PESA_*``), cached.

    Raises:
        ImproperlyConfigured: ``settings.PESA`` names an unknown setting, or a value is
            invalid (the message names the ``PESA_*`` variable).
    """
    cached = _cache.get("settings")
    if cached is None:
        with _lock:
            cached = _cache.get("settings")
            if cached is None:
                cached = _cache["settings"] = _load()
    assert isinstance(cached, Settings)
    return cached


def reset() -> None:
    """Forget the cached settings, callback trust and Daraja client (tests, reloads)."""
    with _lock:
        client = _cache.pop("daraja", None)
        _cache.clear()
    if isinstance(client, Daraja):
        client.close()


@receiver(setting_changed)
def _on_setting_changed(*, setting: str, **kwargs: Any) -> None:  # noqa: ARG001 - signal API
    if setting in ("PESA", "SECRET_KEY", "ROOT_URLCONF"):
        reset()


def callback_token() -> str:
    """The secret path segment of the callback URL.

    ``PESA_CALLBACK_TOKEN``; in the ``emulator`` environment without one, a token derived
    from ``SECRET_KEY`` so that every process of the site (runserver's reloader, several
    workers) shares it.

    Raises:
        ImproperlyConfigured: outside the emulator without a token of 16+ characters.
    """
    settings = pesa_settings()
    if settings.callback_token is not None:
        token = settings.callback_token.get_secret_value()
        if settings.env != "emulator" and len(token) < _MIN_TOKEN:
            raise ImproperlyConfigured(
                f"PESA_CALLBACK_TOKEN must be at least {_MIN_TOKEN} characters; generate one "
                "with: python -c 'import secrets; print(secrets.token_urlsafe(32))'"
            )
        return token
    if settings.env != "emulator":
        raise ImproperlyConfigured(
            "PESA_CALLBACK_TOKEN is required outside the emulator (the secret part of the "
            "callback URL Daraja calls)"
        )
    key = str(django_settings.SECRET_KEY).encode("utf-8")
    return hmac.new(key, b"pesa.django callback token", hashlib.sha256).hexdigest()[:32]


def callback_trust() -> CallbackTrust:
    """The callback trust policy: the path token, the IP allowlist and trusted proxies."""
    cached = _cache.get("trust")
    if isinstance(cached, CallbackTrust):
        return cached
    settings = pesa_settings()
    trust = CallbackTrust.build(
        callback_token(),
        allowlist_mode=settings.callback_allowlist,
        allowed_ips=settings.callback_allowed_ips,
        trusted_proxies=settings.trusted_proxies,
    )
    _cache["trust"] = trust
    return trust


def callback_url() -> str:
    """The STK ``CallBackURL``: the public URL plus the path of ``pesa:stk-callback``.

    Raises:
        ImproperlyConfigured: ``pesa.django.urls`` is not included in the URLconf, or there
            is no ``PESA_PUBLIC_URL`` outside the emulator.
    """
    settings = pesa_settings()
    base = settings.public_url
    if base is None:
        if settings.env != "emulator":
            raise ImproperlyConfigured(
                "PESA_PUBLIC_URL is required outside the emulator: the https:// address "
                "where Daraja reaches this site"
            )
        base = EMULATOR_PUBLIC_URL
    try:
        path = reverse("pesa:stk-callback", kwargs={"token": callback_token()})
    except NoReverseMatch as err:
        raise ImproperlyConfigured(
            'the callback view is not routed: add path("mpesa/", include("pesa.django.urls")) '
            "to your urlpatterns"
        ) from err
    return base.rstrip("/") + path


def site_url(name: str) -> str:
    """The public URL of one of the app's callback routes (``pesa:<name>``).

    ``name`` is ``stk-callback``, ``b2c-result``, ``b2c-timeout``, ``status-result`` or
    ``status-timeout`` (``pesa.django.urls``), or ``c2b:confirmation`` or
    ``c2b:validation`` (``pesa.django.c2b_urls``).

    Raises:
        ImproperlyConfigured: as :func:`callback_url`.
    """
    settings = pesa_settings()
    base = settings.public_url
    if base is None:
        if settings.env != "emulator":
            raise ImproperlyConfigured(
                "PESA_PUBLIC_URL is required outside the emulator: the https:// address "
                "where Daraja reaches this site"
            )
        base = EMULATOR_PUBLIC_URL
    c2b = name.startswith("c2b:")
    view = f"pesa_c2b:{name[4:]}" if c2b else f"pesa:{name}"
    try:
        path = reverse(view, kwargs={"token": callback_token()})
    except NoReverseMatch as err:
        routing = (
            'path("c2b/", include("pesa.django.c2b_urls")) (no "mpesa" in C2B URLs)'
            if c2b
            else 'path("mpesa/", include("pesa.django.urls"))'
        )
        raise ImproperlyConfigured(
            f"the callback views are not routed: add {routing} to your urlpatterns"
        ) from err
    return base.rstrip("/") + path


def c2b_validator() -> Callable[[Any], Any] | None:
    """The merchant's C2B validation rule: the Django setting ``PESA_C2B_VALIDATOR``, a
    callable or its dotted path (used when ``PESA_C2B_VALIDATION=handler``).

    Raises:
        ImproperlyConfigured: the path does not import, or names no callable.
    """
    value = getattr(django_settings, "PESA_C2B_VALIDATOR", None)
    if value is None or callable(value):
        return value
    try:
        rule = import_string(str(value))
    except ImportError as err:
        raise ImproperlyConfigured(f"PESA_C2B_VALIDATOR {value!r} does not import: {err}") from err
    if not callable(rule):
        raise ImproperlyConfigured(f"PESA_C2B_VALIDATOR {value!r} is not callable")
    return rule  # type: ignore[no-any-return]  # import_string is untyped


def daraja() -> Daraja:
    """The site's sync Daraja client (one pooled client per process, thread-safe).

    In the ``emulator`` environment it falls back on the public sandbox shortcode and
    passkey and a placeholder consumer key, which the emulator accepts unless strict: a
    fresh project needs no credentials at all.
    """
    cached = _cache.get("daraja")
    if isinstance(cached, Daraja):
        return cached
    settings = pesa_settings()  # before the lock: it takes the lock itself when not cached
    with _lock:
        cached = _cache.get("daraja")
        if isinstance(cached, Daraja):
            return cached
        overrides: dict[str, Any] = {}
        if settings.env == "emulator":
            if settings.shortcode is None or settings.passkey is None:
                overrides.update(shortcode=SANDBOX_STK_SHORTCODE, passkey=SANDBOX_PASSKEY)
            if settings.consumer_key is None or settings.consumer_secret is None:
                overrides.update(
                    consumer_key=EMULATOR_CONSUMER_KEY, consumer_secret=EMULATOR_CONSUMER_KEY
                )
            password = settings.initiator_password
            if settings.initiator_name is None and password is None:
                # The public sandbox initiator (REFERENCE §2), which the emulator knows.
                overrides.update(
                    initiator_name=SANDBOX_INITIATOR,
                    initiator_password=SANDBOX_INITIATOR_PASSWORD,
                )
            if settings.certificate_path is None:
                plain = (
                    SANDBOX_INITIATOR_PASSWORD if password is None else password.get_secret_value()
                )
                emulator_url = settings.base_url or BASE_URLS.get("emulator")
                credential = _emulator_credential(emulator_url, plain)
                if credential is not None:
                    overrides["security_credential"] = credential
        client = Daraja.from_settings(settings, **overrides)
        _cache["daraja"] = client
        return client


def _emulator_credential(base_url: str | None, password: str) -> str | None:
    """The initiator password encrypted with the emulator's own certificate (it publishes
    it at ``/__emulator__/certificate``): payouts work on a fresh project, strict or not."""
    if base_url is None:
        return None
    try:
        response = httpx.get(base_url.rstrip("/") + "/__emulator__/certificate", timeout=5)
        response.raise_for_status()
        return security_credential(password, response.content)
    except (httpx.HTTPError, PesaError) as err:
        log.warning("the emulator's certificate could not be read (%s): payouts will fail", err)
        return None


# -- system checks (manage.py check, migrate, runserver) ------------------------------------


@checks.register("pesa")
def check_configuration(**kwargs: Any) -> list[checks.CheckMessage]:  # noqa: ARG001 - check API
    """Report settings that would make payments impossible or unsafe."""
    try:
        settings = pesa_settings()
    except ImproperlyConfigured as err:
        return [checks.Error(str(err), id="pesa.E001")]
    problems: list[checks.CheckMessage] = []
    if settings.env != "emulator":
        for name in _REQUIRED_OUTSIDE_EMULATOR:
            value = getattr(settings, name)
            if value is None or value == "":
                problems.append(
                    checks.Error(
                        f"PESA_{name.upper()} is required in the {settings.env} environment",
                        hint=f"set PESA_{name.upper()} or settings.PESA[{name!r}]",
                        id="pesa.E002",
                    )
                )
        public = settings.public_url
        if settings.env == "production" and public and not public.startswith("https://"):
            problems.append(
                checks.Error("PESA_PUBLIC_URL must be https in production", id="pesa.E004")
            )
    if not problems:
        try:
            callback_url()
            callback_trust()
        except (ImproperlyConfigured, ValueError) as err:
            problems.append(checks.Error(str(err), id="pesa.E003"))
    if not django_settings.USE_TZ:
        problems.append(
            checks.Error(
                "USE_TZ must be True: pesa stores every timestamp as an aware UTC datetime",
                id="pesa.E005",
            )
        )
    problems.extend(_database_warnings())
    return problems


def _database_warnings() -> list[checks.CheckMessage]:
    from pesa.django.models import Payment

    alias = router.db_for_write(Payment)
    config = connections.settings.get(alias, {})
    warnings: list[checks.CheckMessage] = []
    if config.get("ATOMIC_REQUESTS"):
        warnings.append(
            checks.Warning(
                f"ATOMIC_REQUESTS is on for database {alias!r}: request_payment() refuses to "
                "run inside a transaction (the intent must be committed before the STK push)",
                hint="decorate the views that call request_payment() with "
                "@transaction.non_atomic_requests",
                id="pesa.W001",
            )
        )
    return warnings
