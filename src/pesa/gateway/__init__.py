"""The payments gateway: REST API, callback routes, reconciler, webhook dispatcher, metrics."""

from pesa.gateway._backoff import Backoff
from pesa.gateway._dispatcher import (
    DispatcherOptions,
    DispatchReport,
    EventHandler,
    WebhookDispatcher,
    delivery_endpoints,
    handler_endpoint,
)
from pesa.gateway._metrics import (
    PROMETHEUS_CONTENT_TYPE,
    Counter,
    LedgerCounts,
    Metrics,
    render_prometheus,
)
from pesa.gateway._reconciler import (
    Reconciler,
    ReconcileReport,
    ReconcilerOptions,
    StkQueryClient,
)
from pesa.gateway._throttle import TokenBucket
from pesa.gateway._trust import SAFARICOM_CALLBACK_IPS, CallbackTrust, tokens_match

__all__ = [
    "PROMETHEUS_CONTENT_TYPE",
    "SAFARICOM_CALLBACK_IPS",
    "Backoff",
    "CallbackTrust",
    "Counter",
    "DispatchReport",
    "DispatcherOptions",
    "EventHandler",
    "LedgerCounts",
    "Metrics",
    "ReconcileReport",
    "Reconciler",
    "ReconcilerOptions",
    "StkQueryClient",
    "TokenBucket",
    "WebhookDispatcher",
    "delivery_endpoints",
    "handler_endpoint",
    "render_prometheus",
    "tokens_match",
]
