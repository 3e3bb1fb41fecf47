"""A typed client of the pesa gateway's own REST API (``/v1``), sync and async.

Merchant apps in Python use it instead of hand-written HTTP calls: create a payment with
an idempotency key, read it, list payments and events with automatic pagination, refresh
a payment. Needs only ``pip install pesa``.
"""

from pesa.gateway_client._client import AsyncGatewayClient, BaseGatewayClient, GatewayClient
from pesa.gateway_client._models import (
    AccountList,
    AccountOut,
    ApiErrorBody,
    ApiErrorDetail,
    EventOut,
    EventPage,
    ExpectedPaymentCreate,
    ExpectedPaymentOut,
    ExpectedPaymentPage,
    HealthOut,
    LookupCreate,
    LookupOut,
    PaymentCreate,
    PaymentOut,
    PaymentPage,
    ReceiptOut,
    ReceiptPage,
)
from pesa.gateway_client._transfer_models import (
    AccountBalanceOut,
    BalanceOut,
    BatchCreate,
    BatchOut,
    PayoutCreate,
    PayoutOut,
    PayoutPage,
    RefundCreate,
    RefundOut,
    RefundPage,
)

__all__ = [
    "AccountBalanceOut",
    "AccountList",
    "AccountOut",
    "ApiErrorBody",
    "ApiErrorDetail",
    "AsyncGatewayClient",
    "BalanceOut",
    "BaseGatewayClient",
    "BatchCreate",
    "BatchOut",
    "EventOut",
    "EventPage",
    "ExpectedPaymentCreate",
    "ExpectedPaymentOut",
    "ExpectedPaymentPage",
    "GatewayClient",
    "HealthOut",
    "LookupCreate",
    "LookupOut",
    "PaymentCreate",
    "PaymentOut",
    "PaymentPage",
    "PayoutCreate",
    "PayoutOut",
    "PayoutPage",
    "ReceiptOut",
    "ReceiptPage",
    "RefundCreate",
    "RefundOut",
    "RefundPage",
]
