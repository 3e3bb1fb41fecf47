"""The payments gateway: REST API, callback routes, reconciler, webhook dispatcher, metrics."""

from pesa.gateway._backoff import Backoff
from pesa.gateway._metrics import PROMETHEUS_CONTENT_TYPE, Counter, Metrics, render_prometheus
from pesa.gateway._throttle import TokenBucket
from pesa.gateway._trust import SAFARICOM_CALLBACK_IPS, CallbackTrust, tokens_match

__all__ = [
    "PROMETHEUS_CONTENT_TYPE",
    "SAFARICOM_CALLBACK_IPS",
    "Backoff",
    "CallbackTrust",
    "Counter",
    "Metrics",
    "TokenBucket",
    "render_prometheus",
    "tokens_match",
]
