"""The durable payments ledger: a pure state machine plus SQLAlchemy storage and an outbox.

``pesa.ledger`` knows nothing of HTTP. The gateway drives it::

    from pesa.ledger import Ledger

    ledger = await Ledger.open("sqlite:///pesa.db")
    await ledger.migrate()
    payment, created = await ledger.create_payment("order-42", "0708374149", 10, "INV42", "Order")

See ``docs/ledger.md`` for the lifecycle, the tables and the guarantees.
"""

from __future__ import annotations

import importlib
import typing as _typing

from pesa.ledger._callbacks import parse_stk_callback_body, stk_code
from pesa.ledger._driving import (
    RECONCILABLE_STATUSES,
    PaymentRecord,
    callback_status,
    merchant_request_mismatch,
    payment_state,
    push_failure,
    query_input,
    recheck_delay,
    reconcile_deadline,
    refuses_unverified_id,
    request_hash,
    row_changes,
    single_orphan,
    storable_key,
    storable_text,
)
from pesa.ledger._errors import (
    DeliveryNotFoundError,
    ExpectedPaymentNotFoundError,
    IdempotencyConflictError,
    InvalidTransitionError,
    LedgerConflictError,
    LedgerError,
    PaymentNotFoundError,
    ReceiptNotFoundError,
)
from pesa.ledger._receipt_types import (
    ExpectedPayment,
    LookupOutcome,
    Receipt,
    ReceiptAccount,
    ReceiptOutcome,
    ReceiptOutcomeStatus,
    ReceiptQuery,
    ReceiptQueryOutcome,
)
from pesa.ledger._receipts import (
    Cancel,
    Confirmation,
    ExpectedDecision,
    ExpectedEvent,
    ExpectedState,
    ExpectedStatus,
    MatchCandidate,
    Pulled,
    ReceiptDecision,
    ReceiptEvent,
    ReceiptInput,
    ReceiptState,
    ReceiptStatus,
    StatusAnswer,
    Tally,
    VerificationAbandoned,
    VerifyPolicy,
    choose_expected,
    counts,
    decide_expected,
    decide_receipt,
    new_receipt,
    reference_key,
    tally_status,
)
from pesa.ledger._requests import PaymentRequest, validate_idempotency_key
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
    FlagResolved,
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
    DeliveryRecord,
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

if _typing.TYPE_CHECKING:
    from pesa.ledger._engine import async_url, create_engine
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
    from pesa.ledger._receipt_book import (
        ReceiptBook,
        parse_confirmation,
        payer_facts,
        phone_hashes,
    )
    from pesa.ledger._reports import Backlog, LedgerReports, OutcomeCount

# The storage (SQLAlchemy, Alembic) is imported on first use: the pure layer above (the state
# machine and the rules every storage shares) imports without the ``server`` extra, so the
# Django app (``pesa[django]``) drives the same rules without SQLAlchemy installed.
_STORAGE = {
    "Clock": "pesa.ledger._ledger",
    "Ledger": "pesa.ledger._ledger",
    "async_url": "pesa.ledger._engine",
    "create_engine": "pesa.ledger._engine",
    "current_revision": "pesa.ledger._migrate",
    "head_revision": "pesa.ledger._migrate",
    **dict.fromkeys(
        (
            "AuditAction",
            "AuditEntry",
            "Operator",
            "OperatorExistsError",
            "OperatorSession",
            "OperatorStore",
            "Role",
            "hash_password",
            "verify_password",
        ),
        "pesa.ledger._operators",
    ),
    **dict.fromkeys(("Backlog", "LedgerReports", "OutcomeCount"), "pesa.ledger._reports"),
    **dict.fromkeys(
        ("ReceiptBook", "parse_confirmation", "payer_facts", "phone_hashes"),
        "pesa.ledger._receipt_book",
    ),
}


def __getattr__(name: str) -> _typing.Any:
    module = _STORAGE.get(name)
    if module is None:
        raise AttributeError(f"module 'pesa.ledger' has no attribute {name!r}")
    try:
        value = getattr(importlib.import_module(module), name)
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError(
            f"pesa.ledger.{name} needs the server extra ({err.name} is missing): "
            "pip install 'pesa[server]'",
            name=err.name,
        ) from err
    globals()[name] = value
    return value


__all__ = [
    "RECONCILABLE_STATUSES",
    "TERMINAL_STATUSES",
    "UNVERIFIED_EXPIRY",
    "Accepted",
    "Assessment",
    "AuditAction",
    "AuditEntry",
    "Backlog",
    "CallbackOutcome",
    "CallbackStatus",
    "Cancel",
    "Clock",
    "CodeInfo",
    "CodeLookup",
    "Confirmation",
    "Decision",
    "DecisionKind",
    "Delivery",
    "DeliveryNotFoundError",
    "DeliveryRecord",
    "DeliveryStatus",
    "Event",
    "EventType",
    "ExpectedDecision",
    "ExpectedEvent",
    "ExpectedPayment",
    "ExpectedPaymentNotFoundError",
    "ExpectedState",
    "ExpectedStatus",
    "Expired",
    "FlagResolved",
    "IdFromCallback",
    "IdUnknownToDaraja",
    "IdempotencyConflictError",
    "InvalidTransitionError",
    "Ledger",
    "LedgerConflictError",
    "LedgerError",
    "LedgerInput",
    "LedgerReports",
    "LedgerStats",
    "LookupOutcome",
    "MatchCandidate",
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
    "PaymentRecord",
    "PaymentRequest",
    "PaymentState",
    "PaymentStatus",
    "Pulled",
    "Receipt",
    "ReceiptAccount",
    "ReceiptBook",
    "ReceiptDecision",
    "ReceiptEvent",
    "ReceiptInput",
    "ReceiptNotFoundError",
    "ReceiptOutcome",
    "ReceiptOutcomeStatus",
    "ReceiptQuery",
    "ReceiptQueryOutcome",
    "ReceiptState",
    "ReceiptStatus",
    "Rejected",
    "Role",
    "StatusAnswer",
    "StillPending",
    "StkCallbackParser",
    "StkQueryOutcome",
    "StkQueryRecord",
    "StkResult",
    "StoredCallback",
    "Tally",
    "Unverifiable",
    "VerificationAbandoned",
    "VerifyPolicy",
    "assess_success",
    "async_url",
    "callback_status",
    "choose_expected",
    "counts",
    "create_engine",
    "current_revision",
    "decide",
    "decide_expected",
    "decide_receipt",
    "evolve",
    "hash_password",
    "head_revision",
    "merchant_request_mismatch",
    "mismatch_reasons",
    "new_receipt",
    "orphan_matches",
    "parse_confirmation",
    "parse_stk_callback_body",
    "payer_facts",
    "payment_state",
    "phone_hashes",
    "phones_match",
    "push_failure",
    "query_input",
    "recheck_delay",
    "reconcile_deadline",
    "reference_key",
    "refuses_unverified_id",
    "request_hash",
    "row_changes",
    "single_orphan",
    "stk_code",
    "storable_key",
    "storable_text",
    "tally_status",
    "validate_idempotency_key",
    "verify_password",
]
