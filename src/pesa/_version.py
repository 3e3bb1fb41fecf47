"""The installed version of pesa."""

__version__ = "0.1.0"
