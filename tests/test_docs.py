"""The documentation's examples run as written, and what it cites ships with the repository."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [
    ROOT / "README.md",
    *sorted(p for p in (ROOT / "docs").glob("*.md") if p.name != "daraja-reference.md"),
]


def _python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text("utf-8"), re.S)


def test_the_ledger_quick_start_runs(tmp_path: Path) -> None:
    quick_start = _python_blocks(ROOT / "docs" / "ledger.md")[0]
    result = subprocess.run(
        [sys.executable, "-c", quick_start],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "applied succeeded"


async def test_ingest_stk_callback_takes_bytes_str_or_a_dict(tmp_path: Path) -> None:
    from pesa.ledger import Ledger
    from pesa.testing import stk_callback_payload

    ledger = await Ledger.open(f"sqlite:///{tmp_path / 'l.db'}")
    await ledger.migrate()
    try:
        statuses = []
        for n, shape in enumerate((bytes, str, dict)):
            checkout = f"ws_CO_{n:026d}"
            payment, _ = await ledger.create_payment(None, "254708374149", 10, "R", "D")
            await ledger.mark_accepted(payment.id, checkout, f"m-{n}")
            payload = stk_callback_payload(
                checkout_request_id=checkout, merchant_request_id=f"m-{n}", amount=10
            )
            text = json.dumps(payload)
            body = {bytes: text.encode(), str: text, dict: payload}[shape]
            outcome = await ledger.ingest_stk_callback(body, source_ip=None)
            statuses.append((outcome.status, outcome.payment.status if outcome.payment else None))
        assert statuses == [("applied", "succeeded")] * 3
        with pytest.raises(Exception, match="bytes, str or a dict"):
            await ledger.ingest_stk_callback(42, source_ip=None)  # type: ignore[arg-type]
    finally:
        await ledger.close()


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_reference_citation_points_at_a_file_in_the_repository(doc: Path) -> None:
    text = doc.read_text("utf-8")
    # "REFERENCE §11" alone cites a file a reader of the repository cannot open.
    assert not re.search(r"(?<![\w/.-])REFERENCE §", text), doc.name
    for target in re.findall(r"\]\(((?:docs/)?[\w./-]+\.md)(?:#[\w-]+)?\)", text):
        assert (doc.parent / target).exists() or (ROOT / target).exists(), target


def test_the_license_pyproject_promises_is_there() -> None:
    assert 'license = "MIT"' in (ROOT / "pyproject.toml").read_text("utf-8")
    text = (ROOT / "LICENSE").read_text("utf-8")
    assert text.startswith("MIT License") and "Permission is hereby granted" in text


def test_the_out_of_order_webhook_receiver_in_the_docs_ends_in_the_newest_state() -> None:
    from datetime import UTC, datetime, timedelta

    from pesa.testing import webhook_event

    block = next(b for b in _python_blocks(ROOT / "docs" / "workers.md") if "apply_event" in b)
    fulfilled: list[str] = []
    namespace: dict[str, object] = {"fulfil": lambda p: fulfilled.append(p["id"])}
    exec(block, namespace)
    apply_event = namespace["apply_event"]
    start = datetime(2026, 1, 1, tzinfo=UTC)
    events = []
    for n, kind in enumerate(["payment.pending", "payment.failed", "payment.succeeded"]):
        stamp = (start + timedelta(seconds=n)).isoformat()
        payment = {"id": "pay_1", "updated_at": stamp}
        events.append(webhook_event(kind, payment=payment, event_id=f"evt_{n}"))
    for event in [events[2], events[0], events[1], events[2]]:  # late, early, duplicate
        apply_event(event)  # type: ignore[operator]
    payments = namespace["payments"]
    assert payments["pay_1"]["status"] == "succeeded"  # type: ignore[index]
    assert fulfilled == ["pay_1"]
