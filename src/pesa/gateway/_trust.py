"""The callback trust rules, kept in :mod:`pesa.daraja._trust` (shared with the Django app)."""

from __future__ import annotations

from pesa.daraja._trust import (
    SAFARICOM_CALLBACK_IPS,
    AllowlistMode,
    CallbackTrust,
    IPNetwork,
    SourceVerdict,
    parse_networks,
    resolve_client_ip,
    tokens_match,
)

__all__ = [
    "SAFARICOM_CALLBACK_IPS",
    "AllowlistMode",
    "CallbackTrust",
    "IPNetwork",
    "SourceVerdict",
    "parse_networks",
    "resolve_client_ip",
    "tokens_match",
]
