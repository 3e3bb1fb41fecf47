"""The payments gateway: REST API, Daraja callback routes and background workers (ASGI)."""

from pesa.gateway._trust import SAFARICOM_CALLBACK_IPS, CallbackTrust, tokens_match

__all__ = ["SAFARICOM_CALLBACK_IPS", "CallbackTrust", "tokens_match"]
