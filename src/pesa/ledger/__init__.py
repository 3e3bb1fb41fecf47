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
    LedgerConflictError,
    LedgerError,
    PaymentNotFoundError,
)
from pesa.ledger._ledger import Clock, Ledger
from pesa.ledger._migrate import current_revision, head_revision
from pesa.ledger._states import (
    TERMINAL_STATUSES,
    UNVERIFIED_EXPIRY,
    Accepted,
    Assessment,
    CodeInfo,
    CodeLookup,
    Decision,
    DecisionKind,
    EventType,
    Expired,
    IdFromCallback,
    IdUnknownToDaraja,
    LedgerInput,
    MismatchPolicy,
    OutcomeUnknown,
    PaymentState,
    PaymentStatus,
    Rejected,
    StillPending,
    StkResult,
    Unverifiable,
    assess_success,
    decide,
    evolve,
    mismatch_reasons,
    orphan_matches,
    phones_match,
)
from pesa.ledger._types import (
    CallbackOutcome,
    CallbackStatus,
    Delivery,
    DeliveryStatus,
    Event,
    LedgerStats,
    Page,
    ParsedStkCallback,
    Payment,
    StkCallbackParser,
    StkQueryOutcome,
    StkQueryRecord,
    StoredCallback,
)

__all__ = [
    "TERMINAL_STATUSES",
    "UNVERIFIED_EXPIRY",
    "Accepted",
    "Assessment",
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
    "IdFromCallback",
    "IdUnknownToDaraja",
    "IdempotencyConflictError",
    "InvalidTransitionError",
    "Ledger",
    "LedgerConflictError",
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
    "StkQueryOutcome",
    "StkQueryRecord",
    "StkResult",
    "StoredCallback",
    "Unverifiable",
    "assess_success",
    "async_url",
    "create_engine",
    "current_revision",
    "decide",
    "evolve",
    "head_revision",
    "mismatch_reasons",
    "orphan_matches",
    "parse_stk_callback_body",
    "phones_match",
    "stk_code",
]
