"""The durable payments ledger: a pure state machine plus SQLAlchemy storage and an outbox.

``pesa.ledger`` knows nothing of HTTP. The gateway drives it::

    from pesa.ledger import Ledger

    ledger = await Ledger.open("sqlite:///pesa.db")
    await ledger.migrate()
    payment, created = await ledger.create_payment("order-42", "0708374149", 10, "INV42", "Order")

See ``docs/ledger.md`` for the lifecycle, the tables and the guarantees.
"""

from pesa.ledger._callbacks import parse_stk_callback_body, stk_code
from pesa.ledger._engine import async_url, create_engine
from pesa.ledger._errors import (
    IdempotencyConflictError,
    InvalidTransitionError,
    LedgerError,
    PaymentNotFoundError,
)
from pesa.ledger._ledger import Clock, Ledger
from pesa.ledger._migrate import current_revision, head_revision
from pesa.ledger._states import (
    TERMINAL_STATUSES,
    Accepted,
    CodeInfo,
    CodeLookup,
    Decision,
    DecisionKind,
    EventType,
    Expired,
    LedgerInput,
    OutcomeUnknown,
    PaymentState,
    PaymentStatus,
    Rejected,
    StillPending,
    StkResult,
    decide,
    mismatch_reasons,
    phones_match,
)
from pesa.ledger._types import (
    CallbackOutcome,
    CallbackStatus,
    Delivery,
    DeliveryStatus,
    Event,
    LedgerStats,
    MismatchPolicy,
    Page,
    ParsedStkCallback,
    Payment,
    StkCallbackParser,
)

__all__ = [
    "TERMINAL_STATUSES",
    "Accepted",
    "CallbackOutcome",
    "CallbackStatus",
    "Clock",
    "CodeInfo",
    "CodeLookup",
    "Decision",
    "DecisionKind",
    "Delivery",
    "DeliveryStatus",
    "Event",
    "EventType",
    "Expired",
    "IdempotencyConflictError",
    "InvalidTransitionError",
    "Ledger",
    "LedgerError",
    "LedgerInput",
    "LedgerStats",
    "MismatchPolicy",
    "OutcomeUnknown",
    "Page",
    "ParsedStkCallback",
    "Payment",
    "PaymentNotFoundError",
    "PaymentState",
    "PaymentStatus",
    "Rejected",
    "StillPending",
    "StkCallbackParser",
    "StkResult",
    "async_url",
    "create_engine",
    "current_revision",
    "decide",
    "head_revision",
    "mismatch_reasons",
    "parse_stk_callback_body",
    "phones_match",
    "stk_code",
]
