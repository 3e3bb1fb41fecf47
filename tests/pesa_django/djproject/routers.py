"""Sends the ``pesa`` app to the database under test (``default`` or ``pg``)."""

from __future__ import annotations

import os
from typing import Any

# Set by the tests' ``pesa_db`` fixture; a subprocess reads PESA_DJANGO_ALIAS.
current = os.environ.get("PESA_DJANGO_ALIAS", "default")


class PesaRouter:
    def db_for_read(self, model: type[Any], **hints: Any) -> str | None:  # noqa: ARG002
        return current if model._meta.app_label == "pesa" else None

    def db_for_write(self, model: type[Any], **hints: Any) -> str | None:  # noqa: ARG002
        return current if model._meta.app_label == "pesa" else None

    def allow_relation(self, obj1: Any, obj2: Any, **hints: Any) -> bool | None:  # noqa: ARG002
        return True
