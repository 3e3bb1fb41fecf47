"""The gateway's counters and their Prometheus text exposition (``GET /metrics``).

Two kinds of figures end up on the page: counts read from the ledger at scrape time
(payments by status, stored callbacks by outcome, webhook deliveries by status), which are
the same whichever gateway process is scraped, and in-process counters kept by
:class:`Metrics` (reconciler queries, webhook attempts, ...), which count what this process
did since it started, as Prometheus counters do.

The format is Prometheus text exposition 0.0.4: ``# HELP`` and ``# TYPE`` once per metric
family, then one sample per line, label values escaped.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal, Protocol

from pesa._exceptions import ValidationError

__all__ = [
    "PROMETHEUS_CONTENT_TYPE",
    "Counter",
    "LedgerCounts",
    "Metrics",
    "MetricsSnapshot",
    "Sample",
    "render_prometheus",
]

PROMETHEUS_CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"

MetricType = Literal["counter", "gauge"]
LabelValues = tuple[str, ...]


def _check_name(name: str) -> None:
    if not name or not (name[0].isalpha() or name[0] in "_:"):
        raise ValidationError("name", "a metric name starts with a letter, '_' or ':'", name)
    if not all(c.isascii() and (c.isalnum() or c in "_:") for c in name):
        raise ValidationError("name", "a metric name has only [a-zA-Z0-9_:]", name)


def escape_label_value(value: str) -> str:
    """Escape a label value: backslash, double quote and newline."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_help(text: str) -> str:
    """Escape HELP text: backslash and newline."""
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float) -> str:
    """A sample value as Prometheus writes it: integers without ``.0``, ``+Inf``, ``NaN``."""
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(value)


@dataclass(frozen=True, slots=True)
class Sample:
    """One line of a metric family: its label values and its value."""

    labels: Mapping[str, str]
    value: float


@dataclass(frozen=True, slots=True)
class MetricsSnapshot:
    """A metric family ready to render: name, type, help text and samples."""

    name: str
    type: MetricType
    help: str
    samples: Sequence[Sample] = field(default_factory=tuple)

    def render(self) -> str:
        """The family in text exposition format, ending with a newline."""
        lines = [f"# HELP {self.name} {escape_help(self.help)}", f"# TYPE {self.name} {self.type}"]
        for sample in self.samples:
            if sample.labels:
                inner = ",".join(
                    f'{key}="{escape_label_value(str(val))}"' for key, val in sample.labels.items()
                )
                lines.append(f"{self.name}{{{inner}}} {format_value(sample.value)}")
            else:
                lines.append(f"{self.name} {format_value(sample.value)}")
        return "\n".join(lines) + "\n"


class Counter:
    """A monotonically increasing count, optionally split by labels.

    Example:
        >>> queries = Counter("pesa_reconciler_queries_total", "STK queries.", ("outcome",))
        >>> queries.inc(outcome="pending")
    """

    def __init__(self, name: str, help: str, labelnames: Sequence[str] = ()) -> None:
        _check_name(name)
        for label in labelnames:
            _check_name(label)
            if label.startswith("__"):
                raise ValidationError("labelnames", "names starting with '__' are reserved", label)
        self.name = name
        self.help = help
        self.labelnames = tuple(labelnames)
        self._values: dict[LabelValues, float] = {}
        # Sync webhook handlers run in worker threads and may count too.
        self._lock = threading.Lock()
        if not self.labelnames:
            self._values[()] = 0

    def _key(self, labels: Mapping[str, str]) -> LabelValues:
        if set(labels) != set(self.labelnames):
            raise ValidationError(
                "labels",
                f"{self.name} takes exactly the labels {list(self.labelnames)}",
                sorted(labels),
            )
        return tuple(str(labels[name]) for name in self.labelnames)

    def inc(self, amount: float = 1, **labels: str) -> None:
        """Add ``amount`` (default 1, never negative) to the series named by ``labels``."""
        if amount < 0:
            raise ValidationError("amount", "a counter only goes up", amount)
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0) + amount

    def value(self, **labels: str) -> float:
        """The current value of one series (0 if it was never incremented)."""
        key = self._key(labels)
        with self._lock:
            return self._values.get(key, 0)

    def total(self) -> float:
        """The sum over every series."""
        with self._lock:
            return sum(self._values.values())

    def snapshot(self) -> MetricsSnapshot:
        """The counter's current samples, sorted by label values."""
        with self._lock:
            items = sorted(self._values.items())
        samples = [Sample(dict(zip(self.labelnames, key, strict=True)), val) for key, val in items]
        return MetricsSnapshot(self.name, "counter", self.help, tuple(samples))


class Metrics:
    """The in-process counters of one gateway process (reconciler, webhooks, handlers).

    One instance is shared by the reconciler, the dispatcher and the app; ``GET /metrics``
    renders it with :func:`render_prometheus`.

    Attributes:
        reconciler_rounds: reconciliation rounds run.
        reconciler_queries: STK queries sent, by outcome (``succeeded``, ``failed``,
            ``pending``, ``rate_limited``, ``refused`` (an id learnt from a callback that
            Daraja does not know), ``error``).
        reconciler_expired: payments failed with reason ``expired`` by the reconciler.
        reconciler_rate_limited: spike arrest / quota answers that made the reconciler back off.
        reconciler_stale_recovered: intents left in ``created`` turned ``unknown``.
        webhook_attempts: webhook and handler delivery attempts, by outcome
            (``delivered``, ``failed``).
        webhook_gave_up: deliveries abandoned after the last attempt.
        callbacks_received: callbacks received by the gateway, by outcome (the callback
            route counts these).
        c2b_received: C2B confirmations and Transaction Status results, by kind and outcome.
        c2b_validations: C2B validation answers, by answer and by whom (``rule``,
            ``fallback``).
        receipt_queries: Transaction Status queries about receipts, by purpose
            (``verify``, ``lookup``) and outcome (``sent``, ``error``, ``rate_limited``).
    """

    def __init__(self) -> None:
        self.reconciler_rounds = Counter(
            "pesa_reconciler_rounds_total", "Reconciliation rounds run by this process."
        )
        self.reconciler_queries = Counter(
            "pesa_reconciler_queries_total",
            "STK queries sent by the reconciler, by outcome.",
            ("outcome",),
        )
        self.reconciler_expired = Counter(
            "pesa_reconciler_expired_total",
            "Payments the reconciler failed with reason expired after the deadline.",
        )
        self.reconciler_rate_limited = Counter(
            "pesa_reconciler_rate_limited_total",
            "Spike arrest or quota answers that made the reconciler back off.",
        )
        self.reconciler_stale_recovered = Counter(
            "pesa_reconciler_stale_recovered_total",
            "Payment intents stuck in created (send never recorded) marked unknown.",
        )
        self.webhook_attempts = Counter(
            "pesa_webhook_attempts_total",
            "Webhook and Python handler delivery attempts, by kind and outcome.",
            ("kind", "outcome"),
        )
        self.webhook_gave_up = Counter(
            "pesa_webhook_gave_up_total",
            "Deliveries abandoned after their last allowed attempt, by kind.",
            ("kind",),
        )
        self.callbacks_received = Counter(
            "pesa_callbacks_received_total",
            "Daraja callbacks received by this process, by outcome.",
            ("outcome",),
        )
        self.c2b_received = Counter(
            "pesa_c2b_received_total",
            "C2B confirmations and Transaction Status results received, by kind and outcome.",
            ("kind", "outcome"),
        )
        self.c2b_validations = Counter(
            "pesa_c2b_validations_total",
            "C2B validation requests answered, by answer (accepted, rejected) and by whom "
            "(rule, fallback).",
            ("answer", "by"),
        )
        self.receipt_queries = Counter(
            "pesa_receipt_queries_total",
            "Transaction Status queries about receipts, by purpose and outcome.",
            ("purpose", "outcome"),
        )

    def counters(self) -> list[Counter]:
        """Every counter, in the order they are rendered."""
        return [value for value in vars(self).values() if isinstance(value, Counter)]


def _gauge(
    name: str, help: str, label: str, counts: Mapping[str, int], known: Iterable[str] = ()
) -> MetricsSnapshot:
    # Known label values are always present (as 0) so that dashboards and alerts see the
    # series before the first payment reaches that status.
    merged = {key: 0 for key in known}
    merged.update({str(key): value for key, value in counts.items()})
    samples = tuple(Sample({label: key}, merged[key]) for key in sorted(merged))
    return MetricsSnapshot(name, "gauge", help, samples)


PAYMENT_STATUSES: Final = ("created", "pending", "succeeded", "failed", "rejected", "unknown")
CALLBACK_OUTCOMES: Final = ("applied", "duplicate", "ignored", "unknown_payment", "invalid")
DELIVERY_STATUSES: Final = ("pending", "delivered", "failed")


class LedgerCounts(Protocol):
    """What ``/metrics`` reads from the ledger (:class:`pesa.ledger.LedgerStats` fits)."""

    @property
    def payments(self) -> Mapping[str, int]:
        """Payments by status."""
        ...

    @property
    def callbacks(self) -> Mapping[str, int]:
        """Stored callbacks by outcome."""
        ...

    @property
    def deliveries(self) -> Mapping[str, int]:
        """Webhook deliveries by status."""
        ...

    @property
    def flagged_payments(self) -> int:
        """Payments flagged for review (amount or phone mismatch, ...)."""
        ...


def render_prometheus(stats: LedgerCounts | None = None, metrics: Metrics | None = None) -> str:
    """Render the ``/metrics`` page in Prometheus text format.

    Args:
        stats: the ledger's counts (``await ledger.stats()``), identical in every process.
        metrics: this process's counters.

    Returns:
        The page; serve it with ``Content-Type: PROMETHEUS_CONTENT_TYPE``.

    Example:
        >>> text = render_prometheus(await ledger.stats(), metrics)  # doctest: +SKIP
    """
    families: list[MetricsSnapshot] = []
    if stats is not None:
        families.append(
            _gauge(
                "pesa_payments",
                "Payments in the ledger, by status.",
                "status",
                stats.payments,
                PAYMENT_STATUSES,
            )
        )
        families.append(
            MetricsSnapshot(
                "pesa_payments_flagged",
                "gauge",
                "Payments flagged for review (a success whose amount or phone differs, ...).",
                (Sample({}, stats.flagged_payments),),
            )
        )
        families.append(
            _gauge(
                "pesa_callbacks",
                "Callbacks stored in the ledger, by outcome.",
                "outcome",
                stats.callbacks,
                CALLBACK_OUTCOMES,
            )
        )
        families.append(
            _gauge(
                "pesa_webhook_deliveries",
                "Webhook and handler deliveries in the ledger, by status.",
                "status",
                stats.deliveries,
                DELIVERY_STATUSES,
            )
        )
    if metrics is not None:
        families.extend(counter.snapshot() for counter in metrics.counters())
    return "".join(family.render() for family in families)
