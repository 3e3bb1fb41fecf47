"""The payments gateway: REST API, callback routes (STK and C2B), reconciler, receipt verifier,
webhook dispatcher, metrics."""

# Last: the app factory imports the modules above through this package.
from pesa.gateway._accounts import AccountClients
from pesa.gateway._app import GatewayUrls, check_settings, create_app, run_workers
from pesa.gateway._backoff import Backoff
from pesa.gateway._c2b import C2BValidation, C2BValidator, C2BValidatorRule, ValidationVerdict
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
from pesa.gateway._receipts import (
    C2BRegistrar,
    ReceiptVerifier,
    Registration,
    VerifyReport,
    receipt_account_resolver,
    register_c2b_urls,
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
    "AccountClients",
    "Backoff",
    "C2BRegistrar",
    "C2BValidation",
    "C2BValidator",
    "C2BValidatorRule",
    "CallbackTrust",
    "Counter",
    "DispatchReport",
    "DispatcherOptions",
    "EventHandler",
    "GatewayUrls",
    "LedgerCounts",
    "Metrics",
    "ReceiptVerifier",
    "ReconcileReport",
    "Reconciler",
    "ReconcilerOptions",
    "Registration",
    "StkQueryClient",
    "TokenBucket",
    "ValidationVerdict",
    "VerifyReport",
    "WebhookDispatcher",
    "check_settings",
    "create_app",
    "delivery_endpoints",
    "handler_endpoint",
    "receipt_account_resolver",
    "register_c2b_urls",
    "render_prometheus",
    "run_workers",
    "tokens_match",
]
