"""The Django project of pesa's own Django tests (tests/pesa_django).

SQLite always (``default``), PostgreSQL too when ``PESA_TEST_DATABASE_URL`` is set (``pg``);
a router sends the ``pesa`` app to the database under test. The conftest names the test
databases (unique per run: helpers share the PostgreSQL server) in the environment, so that
``pesa_reconcile`` subprocesses find the same ones.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

SECRET_KEY = "pesa-tests-not-a-secret"
DEBUG = False
USE_TZ = True
TIME_ZONE = "Africa/Nairobi"
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "djproject.urls"
STATIC_URL = "/static/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "pesa.django",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

_DIR = Path(os.environ.get("PESA_DJANGO_TEST_DIR", "/tmp"))
# pesa_reconcile subprocesses open the test databases the test session created.
_SUBPROCESS = os.environ.get("PESA_DJANGO_USE_TEST_DATABASES") == "1"
_SQLITE_TEST = str(_DIR / "test.sqlite3")

DATABASES: dict[str, dict[str, object]] = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": _SQLITE_TEST if _SUBPROCESS else str(_DIR / "main.sqlite3"),
        "TEST": {"NAME": _SQLITE_TEST},
        "OPTIONS": {
            "transaction_mode": "IMMEDIATE",
            "timeout": 30,
            "init_command": "PRAGMA journal_mode=WAL;",
        },
    }
}

_PG = os.environ.get("PESA_TEST_DATABASE_URL")
if _PG:
    parts = urlsplit(_PG.replace("postgresql+psycopg://", "postgresql://"))
    _PG_TEST = os.environ.get("PESA_DJANGO_PG_TEST_NAME", "test_pesa_django")
    DATABASES["pg"] = {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _PG_TEST if _SUBPROCESS else (parts.path.lstrip("/") or "postgres"),
        "USER": parts.username or "postgres",
        "PASSWORD": parts.password or "",
        "HOST": parts.hostname or "127.0.0.1",
        "PORT": str(parts.port or 5432),
        "TEST": {"NAME": _PG_TEST},
    }

DATABASE_ROUTERS = ["djproject.routers.PesaRouter"]

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"pesa": {"handlers": ["console"], "level": "WARNING"}},
}
