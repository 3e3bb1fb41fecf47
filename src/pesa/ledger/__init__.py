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
    IdempotencyConflictError,
    InvalidTransitionError,
    LedgerConflictError,
    LedgerError,
    PaymentNotFoundError,
    RefundNotAllowedError,
    TransferNotFoundError,
)
from pesa.ledger._payout_states import (
    PAYOUT_COMMANDS,
    TERMINAL_TRANSFER_STATUSES,
    TransferAccepted,
    TransferDecision,
    TransferEvent,
    TransferExpired,
    TransferInput,
    TransferKind,
    TransferNotFound,
    TransferOutcomeUnknown,
    TransferRefused,
    TransferResult,
    TransferState,
    TransferStatus,
    TransferTimedOut,
    decide_transfer,
    status_outcome,
)
from pesa.ledger._requests import PaymentRequest, validate_idempotency_key
from pesa.ledger._results import (
    ParsedResult,
    initiator_code,
    parse_payout_result,
    parse_reversal_result,
    parse_status_result,
)
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
from pesa.ledger._transfer_types import (
    BalanceRead,
    BatchSummary,
    Payout,
    PayoutSpec,
    Refund,
    StatusQuery,
    Transfer,
    TransferOutcome,
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
    from pesa.ledger._balances import BalanceBook
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
    from pesa.ledger._reports import Backlog, LedgerReports, OutcomeCount
    from pesa.ledger._transfers import PayoutBook, RefundBook, StatusBook

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
    **dict.fromkeys(("PayoutBook", "RefundBook", "StatusBook"), "pesa.ledger._transfers"),
    "BalanceBook": "pesa.ledger._balances",
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
    "PAYOUT_COMMANDS",
    "RECONCILABLE_STATUSES",
    "TERMINAL_STATUSES",
    "TERMINAL_TRANSFER_STATUSES",
    "UNVERIFIED_EXPIRY",
    "Accepted",
    "Assessment",
    "AuditAction",
    "AuditEntry",
    "Backlog",
    "BalanceBook",
    "BalanceRead",
    "BatchSummary",
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
    "MismatchPolicy",
    "Operator",
    "OperatorExistsError",
    "OperatorSession",
    "OperatorStore",
    "OutcomeCount",
    "OutcomeUnknown",
    "Page",
    "ParsedResult",
    "ParsedStkCallback",
    "Payment",
    "PaymentNotFoundError",
    "PaymentRecord",
    "PaymentRequest",
    "PaymentState",
    "PaymentStatus",
    "Payout",
    "PayoutBook",
    "PayoutSpec",
    "Refund",
    "RefundBook",
    "RefundNotAllowedError",
    "Rejected",
    "Role",
    "StatusBook",
    "StatusQuery",
    "StillPending",
    "StkCallbackParser",
    "StkQueryOutcome",
    "StkQueryRecord",
    "StkResult",
    "StoredCallback",
    "Transfer",
    "TransferAccepted",
    "TransferDecision",
    "TransferEvent",
    "TransferExpired",
    "TransferInput",
    "TransferKind",
    "TransferNotFound",
    "TransferNotFoundError",
    "TransferOutcome",
    "TransferOutcomeUnknown",
    "TransferRefused",
    "TransferResult",
    "TransferState",
    "TransferStatus",
    "TransferTimedOut",
    "Unverifiable",
    "assess_success",
    "async_url",
    "callback_status",
    "create_engine",
    "current_revision",
    "decide",
    "decide_transfer",
    "evolve",
    "hash_password",
    "head_revision",
    "initiator_code",
    "merchant_request_mismatch",
    "mismatch_reasons",
    "orphan_matches",
    "parse_payout_result",
    "parse_reversal_result",
    "parse_status_result",
    "parse_stk_callback_body",
    "payment_state",
    "phones_match",
    "push_failure",
    "query_input",
    "recheck_delay",
    "reconcile_deadline",
    "refuses_unverified_id",
    "request_hash",
    "row_changes",
    "single_orphan",
    "status_outcome",
    "stk_code",
    "storable_key",
    "storable_text",
    "validate_idempotency_key",
    "verify_password",
]
