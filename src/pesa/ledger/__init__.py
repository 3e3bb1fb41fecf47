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
    DeliveryNotFoundError,
    IdempotencyConflictError,
    InvalidTransitionError,
    LedgerError,
    PaymentNotFoundError,
)
from pesa.ledger._ledger import Clock, Ledger
from pesa.ledger._migrate import current_revision, head_revision
from pesa.ledger._operators import (
    AuditAction,
    AuditEntry,
    Operator,
    OperatorExistsError,
    OperatorSession,
    OperatorStore,
    Role,
    hash_password,
    verify_password,
)
from pesa.ledger._reports import Backlog, LedgerReports, OutcomeCount
from pesa.ledger._states import (
    TERMINAL_STATUSES,
    Accepted,
    CodeInfo,
    CodeLookup,
    Decision,
    DecisionKind,
    EventType,
    Expired,
    FlagResolved,
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
    DeliveryRecord,
    DeliveryStatus,
    Event,
    LedgerStats,
    MismatchPolicy,
    Page,
    ParsedStkCallback,
    Payment,
    StkCallbackParser,
    StoredCallback,
)

__all__ = [
    "TERMINAL_STATUSES",
    "Accepted",
    "AuditAction",
    "AuditEntry",
    "Backlog",
    "CallbackOutcome",
    "CallbackStatus",
    "Clock",
    "CodeInfo",
    "CodeLookup",
    "Decision",
    "DecisionKind",
    "Delivery",
    "DeliveryNotFoundError",
    "DeliveryRecord",
    "DeliveryStatus",
    "Event",
    "EventType",
    "Expired",
    "FlagResolved",
    "IdempotencyConflictError",
    "InvalidTransitionError",
    "Ledger",
    "LedgerError",
    "LedgerInput",
    "LedgerReports",
    "LedgerStats",
    "MismatchPolicy",
    "Operator",
    "OperatorExistsError",
    "OperatorSession",
    "OperatorStore",
    "OutcomeCount",
    "OutcomeUnknown",
    "Page",
    "ParsedStkCallback",
    "Payment",
    "PaymentNotFoundError",
    "PaymentState",
    "PaymentStatus",
    "Rejected",
    "Role",
    "StillPending",
    "StkCallbackParser",
    "StkResult",
    "StoredCallback",
    "async_url",
    "create_engine",
    "current_revision",
    "decide",
    "hash_password",
    "head_revision",
    "mismatch_reasons",
    "parse_stk_callback_body",
    "phones_match",
    "stk_code",
    "verify_password",
]
