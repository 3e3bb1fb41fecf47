"""pesa: M-Pesa payments you can trust.

A typed Daraja client (:class:`Daraja`, :class:`AsyncDaraja`), a durable payments gateway
(``pesa serve``) and a faithful local Daraja emulator (``pesa emulator``).
"""

from pesa._exceptions import (
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    DarajaError,
    DuplicateRequestError,
    GatewayError,
    InvalidCallbackError,
    InvalidTokenError,
    OutcomeUnknownError,
    PesaError,
    RateLimitError,
    RedactedRequest,
    ServerError,
    TransportError,
    UnexpectedResponseError,
    ValidationError,
)
from pesa._logging import mask_phone
from pesa._version import __version__
from pesa._webhooks import WebhookSignatureError, sign_webhook, verify_webhook
from pesa.client import Account, Accounts, AsyncDaraja, Daraja
from pesa.config import Settings
from pesa.daraja import parse_stk_callback
from pesa.gateway_client import AsyncGatewayClient, GatewayClient

__all__ = [
    "Account",
    "Accounts",
    "AsyncDaraja",
    "AsyncGatewayClient",
    "AuthenticationError",
    "BadRequestError",
    "ConfigurationError",
    "Daraja",
    "DarajaError",
    "DuplicateRequestError",
    "GatewayClient",
    "GatewayError",
    "InvalidCallbackError",
    "InvalidTokenError",
    "OutcomeUnknownError",
    "PesaError",
    "RateLimitError",
    "RedactedRequest",
    "ServerError",
    "Settings",
    "TransportError",
    "UnexpectedResponseError",
    "ValidationError",
    "WebhookSignatureError",
    "__version__",
    "mask_phone",
    "parse_stk_callback",
    "sign_webhook",
    "verify_webhook",
]
