"""Resolving a flag: a person's input to the state machine, stored like any transition."""

from __future__ import annotations

import json

import pytest

from pesa import ValidationError
from pesa.ledger import (
    DecisionKind,
    EventType,
    FlagResolved,
    InvalidTransitionError,
    Ledger,
    Payment,
    PaymentNotFoundError,
    PaymentState,
    PaymentStatus,
    StkResult,
    decide,
)

from .conftest import stk_callback

PHONE = "254708374149"


@pytest.mark.parametrize("status", list(PaymentStatus))
def test_resolving_clears_the_flag_in_any_status_and_keeps_the_status(
    status: PaymentStatus,
) -> None:
    state = PaymentState(status, 10, PHONE, flagged=True, flag_reason="amount 20 differs")
    decision = decide(state, FlagResolved("statement shows KES 20, customer refunded", "amina"))
    assert decision.kind is DecisionKind.APPLIED
    assert decision.status is status
    assert decision.events == (EventType.FLAG_RESOLVED,)
    assert decision.changes == {"flagged": False, "flag_reason": None}
    assert "amina" in decision.detail
    assert "customer refunded" in decision.detail
    assert "amount 20 differs" in decision.detail


def test_resolving_an_unflagged_payment_is_ignored() -> None:
    state = PaymentState(PaymentStatus.SUCCEEDED, 10, PHONE)
    decision = decide(state, FlagResolved("nothing to see", "amina"))
    assert decision.kind is DecisionKind.IGNORED
    assert decision.changes == {}


async def _flagged_payment(ledger: Ledger) -> Payment:
    """A callback says KES 20 were paid for KES 10 asked; Daraja's query confirms a payment:
    succeeded, and flagged because the evidence disagrees."""
    payment, _ = await ledger.create_payment(None, PHONE, 10, "INV42", "Order 42")
    await ledger.mark_accepted(payment.id, "ws_CO_flag", "29115-1")
    await ledger.ingest_stk_callback(
        stk_callback("ws_CO_flag", merchant_request_id="29115-1", amount=20),
        source_ip="127.0.0.1",
        on_mismatch="flag",
    )
    outcome = await ledger.apply_stk_result("ws_CO_flag", StkResult("0", "ok"), source="query")
    assert outcome.payment is not None and outcome.payment.flagged, outcome
    return outcome.payment


async def test_resolve_flag_writes_the_event_with_who_and_why(ledger: Ledger) -> None:
    flagged = await _flagged_payment(ledger)
    resolved = await ledger.resolve_flag(flagged.id, "  refunded KES 10 by hand  ", by="amina")
    assert resolved.flagged is False
    assert resolved.flag_reason is None
    assert resolved.status is PaymentStatus.SUCCEEDED
    stored = await ledger.get_payment(flagged.id)
    assert stored == resolved
    events = (await ledger.list_events(payment_id=flagged.id)).items
    assert [e.type for e in events][-1] == "payment.flag_resolved"
    body = json.loads(events[-1].payload)
    assert body["data"]["payment"]["flagged"] is False
    assert "amina" in body["data"]["detail"]
    assert "refunded KES 10 by hand" in body["data"]["detail"]


async def test_resolving_twice_is_refused_and_changes_nothing(ledger: Ledger) -> None:
    flagged = await _flagged_payment(ledger)
    await ledger.resolve_flag(flagged.id, "checked", by="amina")
    with pytest.raises(InvalidTransitionError, match="not flagged"):
        await ledger.resolve_flag(flagged.id, "checked again", by="amina")
    events = (await ledger.list_events(payment_id=flagged.id)).items
    assert [e.type for e in events].count("payment.flag_resolved") == 1


@pytest.mark.parametrize(
    ("note", "by", "field"),
    [("", "amina", "note"), ("   ", "amina", "note"), ("ok", "", "by"), ("x" * 1001, "a", "note")],
)
async def test_a_note_and_a_name_are_required(
    ledger: Ledger, note: str, by: str, field: str
) -> None:
    flagged = await _flagged_payment(ledger)
    with pytest.raises(ValidationError) as caught:
        await ledger.resolve_flag(flagged.id, note, by=by)
    assert caught.value.field == field
    assert (await ledger.get_payment(flagged.id)) == flagged


async def test_resolving_an_unknown_payment_raises_not_found(ledger: Ledger) -> None:
    with pytest.raises(PaymentNotFoundError):
        await ledger.resolve_flag("pay_nope", "checked", by="amina")
