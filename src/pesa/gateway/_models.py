"""The REST API's JSON shapes, defined once in :mod:`pesa.gateway_client._models`.

The gateway serves them; the REST client parses the same classes.
"""

from pesa.gateway_client._models import (
    ApiErrorBody,
    ApiErrorDetail,
    EventOut,
    EventPage,
    HealthOut,
    PaymentCreate,
    PaymentOut,
    PaymentPage,
)

__all__ = [
    "ApiErrorBody",
    "ApiErrorDetail",
    "EventOut",
    "EventPage",
    "HealthOut",
    "PaymentCreate",
    "PaymentOut",
    "PaymentPage",
]
