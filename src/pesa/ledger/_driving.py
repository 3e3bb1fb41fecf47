"""What every storage that drives the state machine does the same way (pure, no I/O).

:func:`pesa.ledger.decide` says what an input does to a payment. A storage (the SQLAlchemy
:class:`~pesa.ledger.Ledger`, the Django app ``pesa.django``) also has to turn Daraja's answers
into inputs, the decision into column values, and a callback's decision into the outcome it
stores. Those steps are rules too, so they live here, once, and every storage calls them:

- :func:`payment_state`: the state machine's view of a stored payment row;
- :func:`row_changes`: a :class:`~pesa.ledger.Decision` as the columns to write;
- :func:`callback_status`: the outcome label stored with a callback;
- :func:`merchant_request_mismatch`: the MerchantRequestID cross-check of a callback;
- :func:`single_orphan`: which stored success callback may give an id to a payment;
- :func:`request_hash`: what "the same request" means for an idempotency key;
- :func:`push_failure`: what an STK push error does (rejected, or unknown);
- :func:`query_input` and :func:`refuses_unverified_id`: what an STK query answer does;
- :func:`reconcile_deadline` and :func:`recheck_delay`: when to stop asking, and when to
  ask again;
- :func:`storable_key` and :func:`storable_text`: what a hostile body may put in a column;
- :func:`classify_send_error`: what an error answer to a B2C or reversal request proves.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from pesa._exceptions import (
    ConfigurationError,
    DarajaError,
    OutcomeUnknownError,
    RateLimitError,
    TransportError,
    ValidationError,
)
from pesa.daraja import proves_not_processed
from pesa.ledger._errors import LedgerConflictError
from pesa.ledger._states import (
    Decision,
    DecisionKind,
    OutcomeUnknown,
    PaymentState,
    PaymentStatus,
    Rejected,
    StillPending,
    StkResult,
    orphan_matches,
)
from pesa.ledger._types import CallbackStatus

if TYPE_CHECKING:
    from pesa.daraja import StkQueryResponse

__all__ = [
    "RECONCILABLE_STATUSES",
    "PaymentRecord",
    "callback_status",
    "classify_send_error",
    "merchant_request_mismatch",
    "payment_state",
    "push_failure",
    "query_input",
    "recheck_delay",
    "reconcile_deadline",
    "refuses_unverified_id",
    "request_hash",
    "row_changes",
    "single_orphan",
    "storable_key",
    "storable_text",
]

RECONCILABLE_STATUSES: frozenset[PaymentStatus] = frozenset(
    {PaymentStatus.PENDING, PaymentStatus.UNKNOWN}
)
"""The statuses an STK query may still settle on the reconciler's own schedule."""

_MAX_TEXT = 1000
_REFUSED_500_MESSAGES = (
    "merchant does not exist",
    "wrong credentials",
    "unable to lock subscriber",
)


class PaymentRecord(Protocol):
    """The columns of a stored payment that :func:`payment_state` reads.

    :class:`pesa.ledger.Payment` and the Django model ``pesa.django.models.Payment`` fit.
    """

    @property
    def status(self) -> str: ...
    @property
    def amount(self) -> int: ...
    @property
    def phone(self) -> str: ...
    @property
    def checkout_request_id(self) -> str | None: ...
    @property
    def result_code(self) -> str | None: ...
    @property
    def receipt(self) -> str | None: ...
    @property
    def flagged(self) -> bool: ...
    @property
    def flag_reason(self) -> str | None: ...
    @property
    def checkout_request_id_verified(self) -> bool: ...
    @property
    def evidence_callback_id(self) -> str | None: ...
    @property
    def verify_at(self) -> datetime | None: ...


def payment_state(
    record: PaymentRecord, evidence: StkResult | None = None, *, evidence_refused: bool = False
) -> PaymentState:
    """The state machine's view of a stored payment.

    Args:
        record: the stored row.
        evidence: the parsed result of the stored callback named by
            ``record.evidence_callback_id`` (the storage reads and parses it).
        evidence_refused: that callback was stored as ``invalid`` (refused as a mismatch).
    """
    return PaymentState(
        status=PaymentStatus(record.status),
        amount=int(record.amount),
        phone=record.phone,
        checkout_request_id=record.checkout_request_id,
        result_code=record.result_code,
        receipt=record.receipt,
        flagged=bool(record.flagged),
        flag_reason=record.flag_reason,
        checkout_request_id_verified=bool(record.checkout_request_id_verified),
        evidence=evidence,
        evidence_id=record.evidence_callback_id if evidence is not None else None,
        evidence_refused=evidence_refused,
        verifying=record.verify_at is not None,
    )


def row_changes(
    decision: Decision,
    *,
    now: datetime,
    verify_since: datetime | None,
    callback_id: str | None = None,
) -> dict[str, Any]:
    """The column values to write for ``decision`` (the storage adds its own version stamp).

    - a status change ends any reconciliation claim and schedule (``claimed_until`` and
      ``next_check_at`` cleared); ``status`` is written as its text value;
    - ``verify`` asks for a query now: ``verify_at`` = ``now``, ``verify_since`` kept, or
      ``now`` when no verification was open;
    - ``keep_evidence`` names the stored callback (``callback_id``) as the evidence;
    - ``transaction_date`` (Daraja's Nairobi time) is stored in UTC.

    Args:
        decision: what :func:`pesa.ledger.decide` answered.
        now: the storage's current time (aware).
        verify_since: the payment's current ``verify_since``.
        callback_id: the stored callback the input came from, if any.

    Raises:
        LedgerConflictError: the decision keeps evidence but no callback was stored for it.
    """
    changes = dict(decision.changes)
    if "status" in changes:
        changes["status"] = PaymentStatus(changes["status"]).value
        changes["claimed_until"] = None
        changes["next_check_at"] = None
    if decision.verify:
        changes["verify_at"] = now
        changes["verify_since"] = verify_since or now
    if decision.keep_evidence:
        if callback_id is None:
            raise LedgerConflictError("a decision keeps evidence but no stored callback is named")
        changes["evidence_callback_id"] = callback_id
    date = changes.get("transaction_date")
    if isinstance(date, datetime):
        changes["transaction_date"] = date.astimezone(UTC)
    return changes


def callback_status(decision: Decision) -> CallbackStatus:
    """The outcome stored with a callback (and answered for it) after ``decision``."""
    kind = decision.kind
    if kind is DecisionKind.APPLIED:
        return "applied"
    if kind is DecisionKind.UNVERIFIED:
        return "unverified"
    if kind is DecisionKind.REFUSED:
        return "invalid"
    if kind is DecisionKind.DUPLICATE:
        return "duplicate"
    # NOOP (a result code that is not final) and IGNORED: stored, nothing changed.
    return "ignored"


def merchant_request_mismatch(reported: str | None, recorded: str | None) -> str | None:
    """Why a callback's MerchantRequestID disqualifies it, or ``None`` when it may apply.

    Only a contradiction counts: a callback without one, or a payment whose push answer
    gave none, is judged on the rest.
    """
    if reported is not None and recorded is not None and reported != recorded:
        return "MerchantRequestID does not match the one Daraja gave for this payment"
    return None


def single_orphan(
    state: PaymentState,
    candidates: Iterable[tuple[str, str, StkResult]],
    taken: Iterable[str] = (),
) -> tuple[str, str] | None:
    """The one stored success callback whose id an ``unknown`` payment without one may adopt.

    Args:
        state: the payment (``unknown``, no CheckoutRequestID).
        candidates: stored orphan callbacks, oldest first: ``(callback_id,
            checkout_request_id, result)``.
        taken: CheckoutRequestIDs another payment already holds.

    Returns:
        ``(callback_id, checkout_request_id)`` of the first callback naming the one distinct
        id that fits (:func:`pesa.ledger.orphan_matches`), or ``None`` when no id or more
        than one distinct id fits: an ambiguous id is never adopted.
    """
    found: dict[str, str] = {}
    for callback_id, cid, result in candidates:
        if orphan_matches(state, result):
            found.setdefault(cid, callback_id)
    for cid in taken:
        found.pop(cid, None)
    if len(found) != 1:
        return None
    ((cid, callback_id),) = found.items()
    return callback_id, cid


def request_hash(
    phone: str,
    amount: int,
    reference: str,
    description: str,
    metadata: Any,
    account: str | None = None,
) -> str:
    """The fingerprint of a payment request: an idempotency key repeated with the same
    fingerprint returns the same payment, with another one it is a conflict.

    ``account`` (the gateway's named Daraja account) is part of it when given; without one
    the fingerprint is what it was before accounts existed, so that a key stored then still
    recognises its retry.
    """
    fields: list[Any] = [phone, amount, reference, description, metadata]
    if account is not None:
        fields.append(account)
    canonical = json.dumps(
        fields,
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def push_failure(err: BaseException) -> Rejected | OutcomeUnknown:
    """What an error around the STK push does to the payment.

    ``Rejected`` only when it proves that nothing was processed: a client-side check failed
    before sending (validation, configuration), the request never left (the client raises
    :class:`~pesa.TransportError` for a money-moving call only then), spike arrest or quota,
    any 4xx, or the 5xx answers Daraja gives to pushes it refused outright. Anything else
    (no answer, another 5xx, an unreadable answer, a bug) may have been processed:
    ``OutcomeUnknown``, settled by query.
    """
    if isinstance(err, ValidationError):
        return Rejected("validation_error", str(err))
    if isinstance(err, ConfigurationError):
        return Rejected("configuration_error", str(err))
    if isinstance(err, OutcomeUnknownError):
        return OutcomeUnknown(str(err))
    if isinstance(err, TransportError):
        return Rejected("connection_error", f"Daraja could not be reached: {err}")
    if isinstance(err, DarajaError):
        if proves_not_processed(err):
            # Which Daraja answers prove a refusal is wire knowledge: pesa.daraja decides.
            return Rejected(err.error_code or f"HTTP {err.status_code}", err.error_message)
        return OutcomeUnknown(str(err))
    return OutcomeUnknown(f"{type(err).__name__}: {err}")


def query_input(response: StkQueryResponse) -> StkResult | StillPending:
    """What an STK query answer does: a final result, or "ask again later".

    Pending (the prompt is open) and a non-zero code the catalogue does not know to be
    final are both :class:`~pesa.ledger.StillPending`: never a failure on a guess.
    """
    code = (response.result_code or "").strip()
    if response.pending:
        return StillPending()
    if code != "0":
        info = response.code
        if info is None or not info.final:
            return StillPending()
    return StkResult(result_code=code, result_desc=response.result_desc, source="query")


def refuses_unverified_id(checkout_request_id_verified: bool, err: DarajaError) -> bool:
    """Daraja refused a query by an id a callback gave us: it does not know that id.

    Only for unverified ids (a verified one came from Daraja itself), and only a request
    error (4xx) that is not about tokens or rate limits. The emulator answers an id it never
    issued with ``400.002.02 Bad Request - Invalid CheckoutRequestID``; REFERENCE.md has no
    capture of Daraja's own answer, so any such request error counts. Dropping is safe: the
    callback stays stored, and a wrong drop only delays settlement to the deadline's flag.
    """
    return (
        not checkout_request_id_verified
        and 400 <= err.status_code < 500
        and err.status_code not in (401, 429)
        and not isinstance(err, RateLimitError)
        and not (err.error_code or "").startswith(("401", "404.001.03"))
    )


def reconcile_deadline(
    status: str, created_at: datetime, verify_since: datetime | None, deadline: float
) -> datetime:
    """When to stop asking Daraja about a payment: ``deadline`` seconds after its creation
    (pending, unknown), or after its verification was asked for (a settled payment whose
    evidence waits for a query)."""
    if PaymentStatus(status) in RECONCILABLE_STATUSES or verify_since is None:
        start = created_at
    else:
        start = verify_since
    return start + timedelta(seconds=deadline)


def recheck_delay(check_count: int, interval: float, cap: float) -> float:
    """Seconds before querying a still-pending payment again: ``interval`` after its first
    check, half as long again after each further check, never more than ``cap``."""
    delay = interval
    for _ in range(max(check_count, 1) - 1):
        delay *= 1.5
        if delay >= cap:
            return cap
    return min(delay, cap)


def storable_key(value: Any, max_length: int) -> bool:
    """Whether ``value`` can name a row: printable ASCII that fits its column.

    Anything else (NUL, a lone surrogate, a 10,000-character string) names no row, and
    PostgreSQL would refuse to even compare it; the caller answers "not found" or refuses
    the filter instead of sending it to the database.
    """
    return (
        isinstance(value, str)
        and 0 < len(value) <= max_length
        and value.isascii()
        and value.isprintable()
    )


def storable_text(text: str, limit: int = _MAX_TEXT) -> str:
    """``text`` bounded and without what PostgreSQL's text type refuses (NUL, lone
    surrogates); the escapes keep it readable."""
    text = text[:limit].replace("\x00", "\\x00")
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


_DUPLICATE_CODE = "500.002.1001"


def classify_send_error(err: Exception) -> tuple[str, str | None, str]:
    """What an error answer to a B2C or reversal request proves.

    Returns:
        ``(verdict, code, message)``; ``verdict`` is ``"never_left"`` (nothing reached
        Daraja's processing: spike arrest, no connection), ``"refused"`` (Daraja refused
        this request), ``"duplicate"`` (Daraja already holds a request with this
        OriginatorConversationID: an earlier send arrived) or ``"unknown"`` (it may have
        been processed).
    """
    if isinstance(err, OutcomeUnknownError):
        return "unknown", None, str(err)
    if isinstance(err, RateLimitError):
        # Spike arrest and quota are refused at Daraja's gateway, before processing.
        return "never_left", err.error_code, err.error_message
    if isinstance(err, TransportError):
        # The client raises this for a money-moving call only when the request provably
        # never left (connection refused, pool timeout).
        return "never_left", "connection_error", str(err)
    if isinstance(err, ValidationError | ConfigurationError):
        return "refused", "validation_error", str(err)
    if isinstance(err, DarajaError):
        code = err.error_code or f"HTTP {err.status_code}"
        if err.error_code == _DUPLICATE_CODE and "duplicate" in err.error_message.lower():
            return "duplicate", code, err.error_message
        if err.status_code < 500:
            return "refused", code, err.error_message
        return "unknown", code, err.error_message
    return "unknown", None, f"{type(err).__name__}: {err}"
