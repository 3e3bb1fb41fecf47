"""The ledger's tables, as SQLAlchemy Core metadata (the migrations create the same shape).

Core rather than the ORM: every transition is a handful of explicit statements, which keeps
the callback hot path to few round trips and makes the guards visible.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Double,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
    TypeDecorator,
    text,
    true,
)

from pesa._exceptions import ValidationError

__all__ = [
    "UTCDateTime",
    "audit_log",
    "balance_queries",
    "callbacks",
    "expected_payments",
    "metadata",
    "operator_sessions",
    "operators",
    "payment_events",
    "payments",
    "payouts",
    "rate_budgets",
    "receipt_queries",
    "receipts",
    "refunds",
    "shared_tokens",
    "status_queries",
    "stk_queries",
    "webhook_deliveries",
]

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC and always read back timezone-aware.

    SQLite has no time zones: values are stored as naive UTC there and re-tagged on read.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValidationError("datetime", "must be timezone-aware (the ledger stores UTC)")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:  # noqa: ARG002 - TypeDecorator signature
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# Integer autoincrement that SQLite also honours (BIGINT is not an alias of ROWID there).
_Seq = BigInteger().with_variant(Integer(), "sqlite")

payments = Table(
    "payments",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("idempotency_key", String(255), nullable=True, unique=True),
    Column("request_hash", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("phone", String(16), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("account_reference", String(64), nullable=False),
    Column("description", String(255), nullable=False),
    Column("metadata", JSON, nullable=True),
    Column("checkout_request_id", String(128), nullable=True, unique=True),
    Column("merchant_request_id", String(128), nullable=True),
    Column("result_code", String(32), nullable=True),
    Column("result_desc", Text, nullable=True),
    Column("receipt", String(64), nullable=True, index=True),
    Column("paid_amount", Numeric(14, 2), nullable=True),
    Column("paid_phone", String(32), nullable=True),
    Column("transaction_date", UTCDateTime, nullable=True),
    Column("failure_reason", Text, nullable=True),
    Column("flagged", Boolean, nullable=False, default=False),
    Column("flag_reason", Text, nullable=True),
    Column("version", Integer, nullable=False, default=1),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    # Reconciler bookkeeping: when to query next, who holds the claim until when.
    Column("next_check_at", UTCDateTime, nullable=True),
    Column("claimed_until", UTCDateTime, nullable=True),
    Column("check_count", Integer, nullable=False, default=0),
    # Settlement (migration 0003): an id learnt from a callback is unverified until a query
    # by that id confirms it; unverified success evidence waits for a query at verify_at.
    Column(
        "checkout_request_id_verified",
        Boolean,
        nullable=False,
        default=True,
        server_default=true(),
    ),
    Column("evidence_callback_id", String(40), nullable=True),
    Column("verify_at", UTCDateTime, nullable=True),
    Column("verify_since", UTCDateTime, nullable=True),
    # Accounts (migration 0005): the named Daraja account the payment was asked on; NULL
    # for payments made before accounts existed (the default account then).
    Column("account", String(32), nullable=True),
    Index("ix_payments_status_next_check_at", "status", "next_check_at"),
    Index("ix_payments_verify_at", "verify_at"),
    Index("ix_payments_created_at", "created_at"),
    # A customer's payments, newest first, read in order (migration 0007).
    Index("ix_payments_phone_id", "phone", "id"),
    # The dashboard's search and its "needs attention" list (migration 0004).
    Index("ix_payments_account_reference", "account_reference"),
    Index("ix_payments_flagged", "flagged"),
    Index("ix_payments_account", "account"),
)

payment_events = Table(
    "payment_events",
    metadata,
    Column("seq", _Seq, primary_key=True, autoincrement=True),
    Column("id", String(40), nullable=False, unique=True),
    # The outbox serves every kind (migration 0005): payment_id is set for payment events,
    # subject_id is the id of what any event is about (pay_..., rcp_..., ...).
    Column("payment_id", String(40), ForeignKey("payments.id"), nullable=True, index=True),
    Column("subject_id", String(40), nullable=True, index=True),
    Column("type", String(32), nullable=False),
    Column("payload", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    # The writing transaction (PostgreSQL's pg_current_xact_id(), filled by the database;
    # 0 on SQLite): the event feed orders by (txid, seq). See migration 0002.
    Column("txid", BigInteger, nullable=False, server_default=text("0")),
    Index("ix_payment_events_txid_seq", "txid", "seq"),
)

callbacks = Table(
    "callbacks",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("body", LargeBinary, nullable=False),
    Column("source_ip", String(64), nullable=True),
    Column("received_at", UTCDateTime, nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("detail", Text, nullable=True),
    Column("checkout_request_id", String(128), nullable=True, index=True),
    Column("payment_id", String(40), nullable=True),
    # What a callback of another kind is about (a receipt: migration 0005).
    Column("subject_id", String(40), nullable=True),
    Index("ix_callbacks_outcome", "outcome"),
    Index("ix_callbacks_payment_id", "payment_id"),
    Index("ix_callbacks_subject_id", "subject_id"),
)

stk_queries = Table(
    "stk_queries",
    metadata,
    # seq orders the log (ids made in the same millisecond do not sort by time).
    Column("seq", _Seq, primary_key=True, autoincrement=True),
    Column("id", String(40), nullable=False, unique=True),
    Column("payment_id", String(40), ForeignKey("payments.id"), nullable=False, index=True),
    Column("checkout_request_id", String(128), nullable=False),
    Column("asked_at", UTCDateTime, nullable=False),
    # succeeded, failed, pending, error, rate_limited or refused (Daraja does not know the id)
    Column("outcome", String(16), nullable=False),
    Column("result_code", String(32), nullable=True),
    Column("result_desc", Text, nullable=True),
    Column("detail", Text, nullable=True),
)

receipts = Table(
    "receipts",
    metadata,
    # A C2B payment (money in from the phone menu), keyed by its M-Pesa receipt (TransID).
    Column("id", String(40), primary_key=True),
    Column("trans_id", String(32), nullable=False, unique=True),
    # received, confirmed, unverified or refuted (pesa.ledger._receipts.ReceiptStatus)
    Column("status", String(16), nullable=False),
    # confirmation (from Daraja's C2B confirmation), lookup (found by Transaction Status) or
    # pull (recovered by Pull Transactions)
    Column("source", String(16), nullable=False),
    Column("account", String(32), nullable=True),
    Column("shortcode", String(16), nullable=False),
    Column("amount", Numeric(14, 2), nullable=False),
    Column("account_reference", String(64), nullable=True),
    Column("reference_key", String(64), nullable=True),
    Column("transaction_type", String(32), nullable=True),
    Column("invoice_number", String(64), nullable=True),
    Column("third_party_trans_id", String(64), nullable=True),
    # The payer: MSISDN as Daraja sent it (masked, v2, or a SHA-256 hash, v1), the full
    # number when a lookup learnt it, and what phone filters match on.
    Column("msisdn", String(80), nullable=True),
    Column("phone", String(16), nullable=True),
    Column("phone_hash", String(64), nullable=True),
    Column("msisdn_prefix", String(16), nullable=True),
    Column("msisdn_suffix", String(16), nullable=True),
    Column("payer_name", String(255), nullable=True),
    Column("trans_time", UTCDateTime, nullable=True),
    Column("org_account_balance", Numeric(16, 2), nullable=True),
    Column("expected_payment_id", String(40), nullable=True),
    Column("flagged", Boolean, nullable=False, default=False),
    Column("flag_reason", Text, nullable=True),
    # Verification by Transaction Status: when to ask next, since when, who holds the claim.
    Column("verify_at", UTCDateTime, nullable=True),
    Column("verify_since", UTCDateTime, nullable=True),
    Column("claimed_until", UTCDateTime, nullable=True),
    Column("check_count", Integer, nullable=False, default=0),
    Column("version", Integer, nullable=False, default=1),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Index("ix_receipts_account_reference_key", "account", "reference_key"),
    Index("ix_receipts_status", "status"),
    Index("ix_receipts_verify_at", "verify_at"),
    Index("ix_receipts_phone_hash", "phone_hash"),
    Index("ix_receipts_phone", "phone"),
    Index("ix_receipts_trans_time", "trans_time"),
    Index("ix_receipts_expected_payment_id", "expected_payment_id"),
)

expected_payments = Table(
    "expected_payments",
    metadata,
    # "I expect KES <amount> for account reference <R>" (an invoice, an order), settled by
    # the C2B receipts whose account number matches.
    Column("id", String(40), primary_key=True),
    Column("idempotency_key", String(255), nullable=True, unique=True),
    Column("request_hash", String(64), nullable=False),
    Column("account", String(32), nullable=False),
    Column("account_reference", String(64), nullable=False),
    Column("reference_key", String(64), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("description", String(255), nullable=True),
    Column("metadata", JSON, nullable=True),
    # open, partially_paid, paid, overpaid or cancelled
    Column("status", String(16), nullable=False),
    Column("paid_amount", Numeric(14, 2), nullable=False),
    Column("pending_amount", Numeric(14, 2), nullable=False),
    Column("flagged", Boolean, nullable=False, default=False),
    Column("flag_reason", Text, nullable=True),
    Column("version", Integer, nullable=False, default=1),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Index("ix_expected_payments_account_reference_key", "account", "reference_key"),
    Index("ix_expected_payments_status", "status"),
)

receipt_queries = Table(
    "receipt_queries",
    metadata,
    # Every Transaction Status query about a receipt (verification or lookup), and its answer.
    Column("seq", _Seq, primary_key=True, autoincrement=True),
    Column("id", String(40), nullable=False, unique=True),
    # SHA-256 of the secret path segment of this query's ResultURL (one per query).
    Column("nonce_hash", String(64), nullable=False, unique=True),
    Column("purpose", String(16), nullable=False),  # verify or lookup
    Column("trans_id", String(32), nullable=False),
    Column("account", String(32), nullable=False),
    Column("shortcode", String(16), nullable=False),  # PartyA: the shortcode asked about
    Column("receipt_id", String(40), nullable=True),
    Column("account_reference", String(64), nullable=True),
    # sent, error, rate_limited, confirmed, refuted, not_found, failed or timeout
    Column("outcome", String(16), nullable=False),
    Column("conversation_id", String(128), nullable=True),
    Column("originator_conversation_id", String(128), nullable=True),
    Column("result_code", String(32), nullable=True),
    Column("result_desc", Text, nullable=True),
    Column("detail", Text, nullable=True),
    Column("asked_at", UTCDateTime, nullable=False),
    Column("answered_at", UTCDateTime, nullable=True),
    Index("ix_receipt_queries_trans_id", "trans_id"),
    Index("ix_receipt_queries_receipt_id", "receipt_id"),
)

webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("event_id", String(40), ForeignKey("payment_events.id"), nullable=False, index=True),
    Column("endpoint", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", UTCDateTime, nullable=True),
    Column("last_error", Text, nullable=True),
    Column("last_status_code", Integer, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Index("ix_webhook_deliveries_status_next_attempt_at", "status", "next_attempt_at"),
)


def _transfer_columns() -> list[Column[Any]]:
    """The columns a payout and a refund share: money the business sends by an initiator API.

    Both are committed before their request leaves, settled by a ``Result`` callback or by
    Transaction Status, and reconciled by the same worker (see ``pesa.ledger._transfers``).
    """
    return [
        Column("id", String(40), primary_key=True),
        Column("idempotency_key", String(255), nullable=True, unique=True),
        Column("request_hash", String(64), nullable=False),
        Column("status", String(16), nullable=False),
        Column("amount", BigInteger, nullable=False),
        Column("metadata", JSON, nullable=True),
        # Daraja's ids: OriginatorConversationID (ours for B2C v3, Daraja's for reversals)
        # and ConversationID; ids_verified is false while they were learnt from a callback.
        Column("originator_conversation_id", String(128), nullable=True, unique=True),
        Column("conversation_id", String(128), nullable=True, unique=True),
        Column("ids_verified", Boolean, nullable=False, default=True, server_default=true()),
        Column("result_code", String(32), nullable=True),
        Column("result_desc", Text, nullable=True),
        Column("receipt", String(64), nullable=True, index=True),
        Column("paid_amount", Numeric(14, 2), nullable=True),
        Column("counterparty", String(255), nullable=True),
        Column("completed_at", UTCDateTime, nullable=True),
        Column("failure_reason", Text, nullable=True),
        Column("flagged", Boolean, nullable=False, default=False),
        Column("flag_reason", Text, nullable=True),
        # Requests sent (committed before each send): a refusal proves nothing about an
        # earlier send, so only the first one's refusal rejects.
        Column("attempts", Integer, nullable=False, default=0),
        # When the first attempt was counted (attempts 0 -> 1), in that transaction; later
        # attempts never move it. The deadline counts from here, not from created_at: a
        # batch row may wait long behind the payout pace before it is sent.
        Column("first_sent_at", UTCDateTime, nullable=True),
        Column("version", Integer, nullable=False, default=1),
        Column("created_at", UTCDateTime, nullable=False),
        Column("updated_at", UTCDateTime, nullable=False),
        # Worker bookkeeping: a send due (send_at), a status check due (next_check_at), who
        # holds the claim until when, evidence awaiting Transaction Status, the deadline.
        Column("send_at", UTCDateTime, nullable=True),
        Column("next_check_at", UTCDateTime, nullable=True),
        Column("claimed_until", UTCDateTime, nullable=True),
        Column("check_count", Integer, nullable=False, default=0),
        Column("evidence_callback_id", String(40), nullable=True),
        Column("verify_at", UTCDateTime, nullable=True),
        Column("verify_since", UTCDateTime, nullable=True),
        Column("expired_at", UTCDateTime, nullable=True),
    ]


payouts = Table(
    "payouts",
    metadata,
    *_transfer_columns(),
    Column("phone", String(16), nullable=False),
    Column("command_id", String(32), nullable=False),
    Column("remarks", String(100), nullable=False),
    Column("occasion", String(100), nullable=True),
    Column("account", String(64), nullable=False),
    Column("shortcode", String(16), nullable=False),
    Column("batch_id", String(128), nullable=True),
    Column("batch_row", Integer, nullable=True),
    Index("ix_payouts_status_next_check_at", "status", "next_check_at"),
    Index("ix_payouts_send_at", "send_at"),
    Index("ix_payouts_verify_at", "verify_at"),
    Index("ix_payouts_batch_id_batch_row", "batch_id", "batch_row"),
    Index("ix_payouts_phone_id", "phone", "id"),
)

refunds = Table(
    "refunds",
    metadata,
    *_transfer_columns(),
    # What is refunded: a payment (pay_...) or a C2B receipt; its M-Pesa receipt and the
    # shortcode it was paid to (the reversal's TransactionID and ReceiverParty).
    Column("source_id", String(40), nullable=False),
    Column("original_receipt", String(64), nullable=False),
    Column("receiver_party", String(16), nullable=False),
    Column("phone", String(16), nullable=True),
    Column("remarks", String(100), nullable=False),
    Index("ix_refunds_source_id", "source_id"),
    Index("ix_refunds_status_next_check_at", "status", "next_check_at"),
    Index("ix_refunds_verify_at", "verify_at"),
    Index("ix_refunds_original_receipt", "original_receipt"),
)

status_queries = Table(
    "status_queries",
    metadata,
    Column("seq", _Seq, primary_key=True, autoincrement=True),
    Column("id", String(40), nullable=False, unique=True),
    # The payout (po_...) or refund (rf_...) asked about, and by which id.
    Column("subject_id", String(40), nullable=False, index=True),
    Column("by_originator_id", String(128), nullable=True),
    Column("by_receipt", String(64), nullable=True),
    # Daraja's ids for the query itself, from its answer: its Result is matched by them.
    Column("conversation_id", String(128), nullable=True, unique=True),
    Column("originator_conversation_id", String(128), nullable=True),
    Column("asked_at", UTCDateTime, nullable=False),
    # sent (answer pending), answered, timed_out, error or rate_limited
    Column("outcome", String(16), nullable=False),
    Column("result_code", String(32), nullable=True),
    Column("result_desc", Text, nullable=True),
    Column("detail", Text, nullable=True),
    Column("answered_at", UTCDateTime, nullable=True),
)

balance_queries = Table(
    "balance_queries",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("account", String(64), nullable=False),
    Column("shortcode", String(16), nullable=False),
    Column("conversation_id", String(128), nullable=True, unique=True),
    Column("originator_conversation_id", String(128), nullable=True),
    Column("asked_at", UTCDateTime, nullable=False),
    # sent, succeeded, failed
    Column("status", String(16), nullable=False),
    Column("result_code", String(32), nullable=True),
    Column("result_desc", Text, nullable=True),
    Column("accounts", JSON, nullable=True),
    Column("read_at", UTCDateTime, nullable=True),
    Column("answered_at", UTCDateTime, nullable=True),
    Index("ix_balance_queries_account_asked_at", "account", "asked_at"),
)

# -- the operator dashboard (migration 0004) ---------------------------------------------

operators = Table(
    "operators",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("role", String(16), nullable=False),
    # scrypt, self-describing: "scrypt$<n>$<r>$<p>$<salt b64>$<hash b64>".
    Column("password_hash", Text, nullable=False),
    Column("disabled", Boolean, nullable=False, default=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

operator_sessions = Table(
    "operator_sessions",
    metadata,
    # SHA-256 of the cookie's token: a copy of this table opens no session.
    Column("id", String(64), primary_key=True),
    Column(
        "operator_id",
        String(40),
        ForeignKey("operators.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    Column("csrf_token", String(64), nullable=False),
    Column("source_ip", String(64), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("last_seen_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False, index=True),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("seq", _Seq, primary_key=True, autoincrement=True),
    Column("at", UTCDateTime, nullable=False),
    # No foreign key: the trail outlives a removed operator; the name is kept as it was.
    Column("operator_id", String(40), nullable=True),
    Column("operator_name", String(64), nullable=False),
    Column("action", String(32), nullable=False),
    Column("target", String(64), nullable=True, index=True),
    Column("note", Text, nullable=True),
    Column("outcome", String(16), nullable=False),
    Column("detail", Text, nullable=True),
    Column("source_ip", String(64), nullable=True),
    Index("ix_audit_log_action_at", "action", "at"),
)

# -- State shared by the processes of one deployment (migration 0008) -------------------

# The Daraja access token of each credential, so that N processes fetch one per lifetime.
# ``sealed`` is the token encrypted with a key derived from the credential's consumer
# secret (a reader of this table alone cannot use it); ``fingerprint`` names it without
# revealing it. ``fetching_until`` is the lease of the one process fetching a new token.
shared_tokens = Table(
    "shared_tokens",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("sealed", Text, nullable=True),
    Column("fingerprint", String(64), nullable=True),
    Column("expires_at", UTCDateTime, nullable=True),
    Column("fetching_until", UTCDateTime, nullable=True),
    Column("updated_at", UTCDateTime, nullable=False),
)

# One row per global rate budget (pesa._bucket.gcra): epoch seconds on the database's clock.
rate_budgets = Table(
    "rate_budgets",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("tat", Double, nullable=False),
    Column("paused_until", Double, nullable=False),
)
