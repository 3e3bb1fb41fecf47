"""M-Pesa's books in the emulator: each shortcode's accounts and the completed transactions.

Every product that moves money writes here (STK and C2B credit, B2C debits, reversals give
back), and the products that read M-Pesa's record (Transaction Status, Account Balance,
Reversal) read only here, so a new product's transactions are found by them unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from pesa.emulator._models import EmulatorConfig

__all__ = ["Books", "Transaction", "balance_field"]


@dataclass
class Transaction:
    """One completed M-Pesa transaction, keyed by its receipt (``TransactionID``)."""

    receipt: str
    kind: str  # the product that made it: "stk", "c2b", "b2c", "reversal", ...
    amount: int
    shortcode: str  # the organisation whose books it touched
    party: str  # the other side: the customer's MSISDN (or a shortcode)
    completed_at: datetime
    originator_conversation_id: str = ""
    conversation_id: str = ""
    reversed_amount: int = 0

    @property
    def reversed(self) -> bool:
        """Reversed in full (a partial reversal leaves it ``Completed``)."""
        return self.reversed_amount >= self.amount

    @property
    def incoming(self) -> bool:
        """Money paid into the shortcode by a customer (C2B, M-Pesa Express)."""
        return self.kind in ("stk", "c2b")


class Books:
    """Accounts per shortcode and a bounded table of transactions."""

    def __init__(self, config: EmulatorConfig) -> None:
        self._config = config
        # Transactions stay queryable this long (in number kept): bounded memory under load.
        self.max_kept = config.max_records * 10
        self.reset()

    def reset(self) -> None:
        self.transactions: dict[str, Transaction] = {}
        self._by_originator: dict[str, str] = {}
        self._balances: dict[str, dict[str, Decimal]] = {}

    def accounts(self, shortcode: str) -> dict[str, Decimal]:
        """The (live, mutable) accounts of ``shortcode``, opened on first use."""
        accounts = self._balances.get(shortcode)
        if accounts is None:
            accounts = self._balances[shortcode] = {
                "Working Account": self._config.initial_working_balance,
                "Float Account": Decimal("0.00"),
                "Utility Account": self._config.initial_utility_balance,
                "Charges Paid Account": Decimal("0.00"),
                "Organization Settlement Account": Decimal("0.00"),
            }
        return accounts

    def record(self, txn: Transaction) -> None:
        """Keep ``txn``, forgetting the oldest transaction beyond the bound.

        A transaction with an OriginatorConversationID is findable by it too.
        """
        if len(self.transactions) > self.max_kept:
            oldest = next(iter(self.transactions))
            gone = self.transactions.pop(oldest)
            if self._by_originator.get(gone.originator_conversation_id) == oldest:
                del self._by_originator[gone.originator_conversation_id]
        self.transactions[txn.receipt] = txn
        if txn.originator_conversation_id:
            self._by_originator[txn.originator_conversation_id] = txn.receipt

    def find(self, receipt: str) -> Transaction | None:
        return self.transactions.get(receipt)

    def find_by_originator(self, originator_id: str) -> Transaction | None:
        receipt = self._by_originator.get(originator_id)
        return None if receipt is None else self.transactions.get(receipt)


def balance_field(name: str, value: Decimal) -> str:
    """One account in Safaricom's balance format, six ``|``-separated fields.

    ``Utility Account|KES|51661.00|51661.00|0.00|0.00``: name, currency, then four amounts
    (available, then uncleared, reserved and the like: beyond "available" their meaning is
    inconsistently documented, REFERENCE 4).
    """
    return f"{name}|KES|{value:.2f}|{value:.2f}|0.00|0.00"
