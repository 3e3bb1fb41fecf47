"""The dashboard's pure parts: charts, overview numbers, timelines, CSV, cookies and redirects."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from starlette.requests import Request

from pesa.daraja import lookup_code
from pesa.gateway._trust import parse_networks
from pesa.gateway.dashboard._auth import client_ip, is_https, safe_next
from pesa.gateway.dashboard._charts import Series, stacked_bars
from pesa.gateway.dashboard._views import (
    build_overview,
    csv_rows,
    day_range,
    failure_kind,
    local_time,
    money,
    pretty_json,
)
from pesa.ledger import OutcomeCount, Payment, PaymentStatus

NOW = datetime(2026, 11, 29, 9, 30, tzinfo=UTC)


def _payment(**changes: object) -> Payment:
    values: dict[str, object] = {
        "id": "pay_1",
        "status": PaymentStatus.SUCCEEDED,
        "phone": "254708374149",
        "amount": 10,
        "account_reference": "INV42",
        "description": "Order 42",
        "metadata": None,
        "idempotency_key": None,
        "checkout_request_id": "ws_CO_1",
        "merchant_request_id": "m-1",
        "result_code": "0",
        "result_desc": "ok",
        "receipt": "NLJ7RT61SV",
        "paid_amount": Decimal(10),
        "paid_phone": "254708374149",
        "transaction_date": NOW,
        "failure_reason": None,
        "flagged": False,
        "flag_reason": None,
        "created_at": NOW,
        "updated_at": NOW,
    }
    values.update(changes)
    return Payment(**values)  # type: ignore[arg-type]  # built from a dict of known fields


def test_stacked_bars_draw_one_rect_per_non_zero_value_with_a_tooltip() -> None:
    svg = str(
        stacked_bars(
            "Payments <per> day",
            ["27 Nov", "28 Nov", "29 Nov"],
            [Series("succeeded", "paid", [1, 0, 3]), Series("failed", "failed", [2, 0, 0])],
        )
    )
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert svg.count("<rect") == 3
    assert "29 Nov: 3 paid" in svg
    assert "Payments &lt;per&gt; day" in svg  # escaped
    assert "style=" not in svg  # colours come from CSS classes (strict CSP)
    with pytest.raises(ValueError, match="values"):
        stacked_bars("x", ["a"], [Series("s", "s", [1, 2])])
    with pytest.raises(ValueError, match="negative"):
        stacked_bars("x", ["a"], [Series("s", "s", [-1])])


def test_an_empty_chart_still_draws_its_axes() -> None:
    svg = str(stacked_bars("nothing", ["a", "b"], []))
    assert "<rect" not in svg and "<line" in svg


def test_failure_kinds() -> None:
    def kind(status: PaymentStatus, code: str | None, expired: bool = False) -> str | None:
        return failure_kind(OutcomeCount(0, status, code, expired, 1, 10))

    assert kind(PaymentStatus.FAILED, "1032") == "cancelled"
    assert kind(PaymentStatus.FAILED, "1") == "no_funds"
    assert kind(PaymentStatus.FAILED, "1037") == "unreachable"
    assert kind(PaymentStatus.FAILED, "2001") == "wrong_pin"
    assert kind(PaymentStatus.FAILED, None, expired=True) == "expired"
    assert kind(PaymentStatus.FAILED, "9999") == "other"
    assert kind(PaymentStatus.REJECTED, "400.002.02") == "rejected"
    assert kind(PaymentStatus.SUCCEEDED, "0") is None
    assert kind(PaymentStatus.PENDING, None) is None


def test_overview_counts_today_and_draws_the_period() -> None:
    days = day_range(date(2026, 11, 29), 3)
    assert days == [date(2026, 11, 27), date(2026, 11, 28), date(2026, 11, 29)]
    outcomes = [
        OutcomeCount(2, PaymentStatus.SUCCEEDED, "0", False, 3, 450),
        OutcomeCount(2, PaymentStatus.FAILED, "1032", False, 1, 70),
        OutcomeCount(2, PaymentStatus.PENDING, None, False, 2, 20),
        OutcomeCount(0, PaymentStatus.FAILED, None, True, 4, 40),
        OutcomeCount(1, PaymentStatus.SUCCEEDED, "0", False, 5, 999),
    ]
    overview = build_overview(outcomes, days)
    assert overview.counts["succeeded"] == 3 and overview.counts["pending"] == 2
    assert overview.counts["failed"] == 1 and overview.counts["unknown"] == 0
    assert overview.volume == 450
    assert overview.success_rate == 0.75
    assert overview.failures_today == {"cancelled": 1}
    assert [kind for kind, _ in overview.failure_legend] == ["cancelled", "expired"]
    assert "28 Nov: 5 paid" in overview.outcome_chart
    assert "27 Nov: 4 no answer (expired)" in overview.failure_chart


def test_overview_of_a_quiet_day_has_no_success_rate() -> None:
    overview = build_overview([], day_range(date(2026, 11, 29), 14))
    assert overview.success_rate is None and overview.volume == 0 and overview.days == 14


def test_csv_rows_are_rfc4180_and_neutralise_formulas() -> None:
    text = csv_rows(
        [
            _payment(),
            _payment(
                id="pay_2",
                status=PaymentStatus.FAILED,
                description='=HYPERLINK("http://evil")',
                account_reference="@SUM(A1)",
                result_code="1032",
                receipt=None,
                paid_amount=None,
                flagged=True,
                flag_reason='amount, "quoted"',
            ),
        ],
        header=True,
    )
    rows = list(csv.DictReader(io.StringIO(text)))
    assert rows[0]["paid_amount"] == "10" and rows[0]["result_meaning"] == "paid"
    assert rows[0]["created_at"] == NOW.isoformat()
    assert rows[1]["description"].startswith("'=")
    assert rows[1]["account_reference"] == "'@SUM(A1)"
    assert rows[1]["result_meaning"] == lookup_code("1032").meaning
    assert rows[1]["flag_reason"] == 'amount, "quoted"'
    assert rows[1]["receipt"] == "" and rows[1]["flagged"] == "true"
    assert csv_rows([_payment()], header=False).count("\r\n") == 1


def test_formatting() -> None:
    assert local_time(NOW) == "29 Nov 2026 12:30:00"  # Nairobi is UTC+3
    assert local_time(None) == "—"
    assert money(1250) == "KES 1,250"
    assert money(Decimal("10.50")) == "KES 10.50"
    assert money(None) == "—"
    assert pretty_json(b'{"a":[1]}') == '{\n  "a": [\n    1\n  ]\n}'
    assert pretty_json(b"not json \xff") == "not json \ufffd"


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/dashboard/payments?q=1", "/dashboard/payments?q=1"),
        (None, "/dashboard/"),
        ("//evil.example", "/dashboard/"),
        ("https://evil.example/dashboard", "/dashboard/"),
        ("/v1/payments", "/dashboard/"),
        ("/dashboard\\..\\x", "/dashboard/"),
    ],
)
def test_safe_next(target: str | None, expected: str) -> None:
    assert safe_next(target) == expected


def _request(peer: str, scheme: str = "http", headers: dict[str, str] | None = None) -> Request:
    return Request(
        {
            "type": "http",
            "scheme": scheme,
            "method": "GET",
            "path": "/dashboard/",
            "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
            "client": (peer, 50000),
            "server": ("testserver", 80),
        }
    )


def test_https_and_client_address_are_believed_only_from_trusted_proxies() -> None:
    proxies = parse_networks(["10.0.0.0/8"], setting="trusted_proxies")
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "41.90.1.2"}
    assert is_https(_request("10.1.2.3", headers=forwarded), proxies)
    assert client_ip(_request("10.1.2.3", headers=forwarded), proxies) == "41.90.1.2"
    assert not is_https(_request("203.0.113.9", headers=forwarded), proxies)
    assert client_ip(_request("203.0.113.9", headers=forwarded), proxies) == "203.0.113.9"
    assert not is_https(_request("10.1.2.3", headers=forwarded), ())
    assert is_https(_request("203.0.113.9", scheme="https"), ())
    # The nearest proxy appends: only its word counts.
    two = {"X-Forwarded-Proto": "https, http"}
    assert not is_https(_request("10.1.2.3", headers=two), proxies)


def test_day_range_ends_today() -> None:
    days = day_range(date(2026, 3, 2), 3)
    assert days[-1] - days[0] == timedelta(days=2)
