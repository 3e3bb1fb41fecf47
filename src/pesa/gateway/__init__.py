"""The payments gateway: REST API, callback routes, reconciler, webhook dispatcher, metrics."""

# Last: the app factory imports the modules above through this package.
from pesa.gateway._app import GatewayUrls, check_settings, create_app, run_workers
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
    "GatewayUrls",
    "LedgerCounts",
    "Metrics",
    "ReconcileReport",
    "Reconciler",
    "ReconcilerOptions",
    "StkQueryClient",
    "TokenBucket",
    "WebhookDispatcher",
    "check_settings",
    "create_app",
    "delivery_endpoints",
    "handler_endpoint",
    "render_prometheus",
    "run_workers",
    "tokens_match",
]
