"""Prometheus text exposition of the gateway's counters and ledger counts."""

from __future__ import annotations

import re

import pytest

from pesa import ValidationError
from pesa.gateway import Counter, Metrics, render_prometheus
from pesa.gateway._metrics import escape_label_value, format_value
from pesa.ledger import LedgerStats

from .conftest import OpenLedger, pending_payment

# One sample line of the text format: name, optional {labels}, value.
SAMPLE = re.compile(
    r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\\n]|\\["\\n])*",?)*\})? '
    r"(-?[0-9.e+]+|[+-]Inf|NaN)$"
)


def _assert_valid_exposition(text: str) -> None:
    assert text.endswith("\n")
    seen_types: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            name, kind = line.split(" ")[2:4]
            assert kind in {"counter", "gauge"}
            assert name not in seen_types, f"TYPE twice for {name}"
            seen_types.add(name)
            continue
        assert SAMPLE.match(line), line
        assert line.split("{")[0].split(" ")[0] in seen_types, f"sample before TYPE: {line}"


def test_counter_without_labels_renders_help_type_and_value() -> None:
    counter = Counter("pesa_test_total", "A test counter.")
    counter.inc()
    counter.inc(2)
    assert counter.snapshot().render() == (
        "# HELP pesa_test_total A test counter.\n"
        "# TYPE pesa_test_total counter\n"
        "pesa_test_total 3\n"
    )


def test_counter_with_labels_sorts_series() -> None:
    counter = Counter("pesa_q_total", "Queries.", ("outcome",))
    counter.inc(outcome="pending")
    counter.inc(outcome="failed")
    counter.inc(outcome="pending")
    lines = counter.snapshot().render().splitlines()
    assert lines[2:] == ['pesa_q_total{outcome="failed"} 1', 'pesa_q_total{outcome="pending"} 2']
    assert counter.value(outcome="pending") == 2
    assert counter.value(outcome="succeeded") == 0
    assert counter.total() == 3


def test_label_values_and_help_are_escaped() -> None:
    counter = Counter("pesa_esc_total", 'Help with \\ and\nnewline "quoted".', ("path",))
    counter.inc(path='a\\b"c\nd')
    text = counter.snapshot().render()
    assert '# HELP pesa_esc_total Help with \\\\ and\\nnewline "quoted".' in text
    assert 'pesa_esc_total{path="a\\\\b\\"c\\nd"} 1' in text
    _assert_valid_exposition(text)


def test_escape_label_value_order_does_not_double_escape() -> None:
    assert escape_label_value('\\"') == '\\\\\\"'


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (3, "3"),
        (3.0, "3"),
        (0.25, "0.25"),
        (float("inf"), "+Inf"),
        (float("-inf"), "-Inf"),
        (float("nan"), "NaN"),
    ],
)
def test_values_are_formatted_like_prometheus(value: float, text: str) -> None:
    assert format_value(value) == text


def test_wrong_labels_and_negative_increments_are_refused() -> None:
    counter = Counter("pesa_l_total", "L.", ("outcome",))
    with pytest.raises(ValidationError, match="labels"):
        counter.inc(status="x")
    with pytest.raises(ValidationError, match="labels"):
        counter.inc()
    with pytest.raises(ValidationError, match="only goes up"):
        counter.inc(-1, outcome="x")


@pytest.mark.parametrize("name", ["", "1abc", "has-dash", "has space", "ünïcode"])
def test_invalid_metric_names_are_refused(name: str) -> None:
    with pytest.raises(ValidationError, match="name"):
        Counter(name, "x")


def test_reserved_label_names_are_refused() -> None:
    with pytest.raises(ValidationError, match="reserved"):
        Counter("pesa_x_total", "x", ("__name",))


def test_full_page_has_every_status_and_counter() -> None:
    metrics = Metrics()
    metrics.reconciler_queries.inc(outcome="pending")
    metrics.webhook_attempts.inc(kind="webhook", outcome="delivered")
    text = render_prometheus(
        LedgerStats(
            payments={"pending": 2, "succeeded": 5},
            callbacks={"applied": 7},
            deliveries={"delivered": 3, "failed": 1},
            flagged_payments=1,
        ),
        metrics,
    )
    _assert_valid_exposition(text)
    assert 'pesa_payments{status="pending"} 2\n' in text
    assert 'pesa_payments{status="unknown"} 0\n' in text  # known statuses present as zero
    assert 'pesa_callbacks{outcome="applied"} 7\n' in text
    assert 'pesa_callbacks{outcome="invalid"} 0\n' in text
    assert 'pesa_webhook_deliveries{status="failed"} 1\n' in text
    assert 'pesa_reconciler_queries_total{outcome="pending"} 1\n' in text
    assert 'pesa_webhook_attempts_total{kind="webhook",outcome="delivered"} 1\n' in text
    assert "pesa_reconciler_rounds_total 0\n" in text
    assert "pesa_payments_flagged 1\n" in text
    assert "# TYPE pesa_payments gauge\n" in text
    assert "# TYPE pesa_reconciler_queries_total counter\n" in text


def test_statuses_the_page_does_not_know_still_appear() -> None:
    text = render_prometheus(LedgerStats({"refunded": 1}, {}, {}))
    assert 'pesa_payments{status="refunded"} 1\n' in text


def test_empty_page_is_empty() -> None:
    assert render_prometheus() == ""


async def test_page_from_a_real_ledger(open_ledger: OpenLedger) -> None:
    ledger = await open_ledger(endpoints=["https://shop.example/hooks"])
    await pending_payment(ledger, 1)
    text = render_prometheus(await ledger.stats(), Metrics())
    _assert_valid_exposition(text)
    assert 'pesa_payments{status="pending"} 1\n' in text
    assert 'pesa_webhook_deliveries{status="pending"} 1\n' in text
