"""The REST API's JSON shapes, defined once in :mod:`pesa.gateway_client._models`.

The gateway serves them; the REST client parses the same classes.
"""

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

__all__ = [
    "AccountList",
    "AccountOut",
    "ApiErrorBody",
    "ApiErrorDetail",
    "EventOut",
    "EventPage",
    "ExpectedPaymentCreate",
    "ExpectedPaymentOut",
    "ExpectedPaymentPage",
    "HealthOut",
    "LookupCreate",
    "LookupOut",
    "PaymentCreate",
    "PaymentOut",
    "PaymentPage",
    "ReceiptOut",
    "ReceiptPage",
]
