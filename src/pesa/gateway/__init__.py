"""The payments gateway: REST API, callback routes, reconciler, webhook dispatcher, metrics."""

from pesa.gateway._backoff import Backoff
from pesa.gateway._metrics import PROMETHEUS_CONTENT_TYPE, Counter, Metrics, render_prometheus
from pesa.gateway._throttle import TokenBucket

__all__ = [
    "PROMETHEUS_CONTENT_TYPE",
    "Backoff",
    "Counter",
    "Metrics",
    "TokenBucket",
    "render_prometheus",
]
