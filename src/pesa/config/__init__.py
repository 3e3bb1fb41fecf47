"""Configuration: one settings object read from ``PESA_*`` environment variables."""

from pesa.config._settings import Settings

__all__ = ["Settings"]
