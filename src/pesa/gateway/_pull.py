"""Recovering C2B payments whose confirmation never came, by Daraja's Pull Transactions.

A confirmation Daraja never delivered is money the merchant received and the gateway never
heard of. Pull Transactions is M-Pesa's own list of a shortcode's C2B payments for the last
48 hours (REFERENCE §8.9): :class:`PullRecovery` reads it for every account's shortcode and
hands each transaction to the ledger (``ledger.receipts.ingest_pulled``), which records a
``TransID`` it never heard of once, as a ``confirmed`` receipt with source ``pull``
(recovered), and leaves known ones alone (or confirms those still waiting for Transaction
Status). It runs every ``PESA_C2B_PULL_INTERVAL`` seconds (off by default: the shortcode must
be registered for Pull Transactions first) and on demand as ``pesa c2b pull --since ...``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import anyio

from pesa._clock import Clock, require_clock
from pesa._exceptions import PesaError, ValidationError
from pesa._logging import get_logger
from pesa.client import Account
from pesa.daraja import PulledTransaction
from pesa.ledger import Pulled, ReceiptAccount, VerifyPolicy

if TYPE_CHECKING:
    from pesa.gateway._accounts import AccountClients
    from pesa.ledger import Ledger

__all__ = ["PullRecovery", "PullReport", "pulled"]

log = get_logger("pesa.gateway.pull")

MAX_WINDOW = timedelta(hours=48)
# Daraja and this host may disagree on the time by a little: never ask for more than it keeps.
_MARGIN = timedelta(minutes=1)


def pulled(txn: PulledTransaction, shortcode: str) -> Pulled:
    """The ledger's input for one Pull Transactions row of ``shortcode``."""
    return Pulled(
        trans_id=txn.transaction_id,
        amount=txn.amount,
        shortcode=shortcode,
        account_reference=txn.bill_reference or None,
        msisdn=txn.msisdn or None,
        trans_time=txn.trx_date,
        payer_name=txn.sender or None,
        transaction_type=(txn.transaction_type or None) and txn.transaction_type[:32],
    )


@dataclass
class PullReport:
    """What one Pull Transactions round found, per outcome.

    Attributes:
        accounts: the accounts read.
        listed: transactions Daraja listed.
        recovered: receipts the gateway never heard of, now recorded.
        confirmed: receipts waiting for Transaction Status that Daraja's list confirmed.
        known: receipts already recorded (duplicates).
        flagged: receipts Daraja's list disagrees with.
        errors: accounts whose query failed (logged).
        details: one line per recovered or flagged receipt, and per error.
    """

    accounts: int = 0
    listed: int = 0
    recovered: int = 0
    confirmed: int = 0
    known: int = 0
    flagged: int = 0
    errors: int = 0
    details: list[str] = field(default_factory=list)


class PullRecovery:
    """Reads Pull Transactions for every account's shortcode and records what was missed.

    Args:
        ledger: the open ledger.
        clients: one Daraja client per account.
        window: how far back a round reads (at most 48 hours).
        interval: seconds between rounds of :meth:`run`.
        policy: the ledger's ``c2b_verify`` policy (what an unknown shortcode counts as).
        clock: where the time is read (:class:`pesa.daraja.Clock`); defaults to the
            ledger's clock, so the two agree.
    """

    def __init__(
        self,
        ledger: Ledger,
        clients: AccountClients,
        *,
        window: timedelta = timedelta(hours=6),
        interval: float = 0.0,
        policy: VerifyPolicy = "auto",
        clock: Clock | None = None,
    ) -> None:
        if not timedelta(0) < window <= MAX_WINDOW:
            raise ValidationError("window", "must be more than 0 and at most 48 hours", window)
        self.ledger = ledger
        self.clients = clients
        self.window = window
        self.interval = interval
        self.policy = policy
        self._clock: Clock = require_clock(clock, ledger.clock)

    def accounts(self, names: list[str] | None = None) -> list[Account]:
        """The accounts a round reads: each shortcode once (``names``: only these)."""
        chosen: list[Account] = []
        seen: set[str] = set()
        wanted = [self.clients.accounts.resolve(n) for n in names] if names else None
        for account in wanted or list(self.clients.accounts.values()):
            if account.shortcode is None or account.shortcode in seen:
                continue
            seen.add(account.shortcode)
            chosen.append(account)
        return chosen

    async def run_once(
        self, since: datetime | None = None, *, accounts: list[str] | None = None
    ) -> PullReport:
        """Read ``[since, now]`` (default: the last ``window``) for each account, record
        what the ledger never heard of, and report."""
        now = self._clock.now()
        oldest = now - MAX_WINDOW + _MARGIN
        start = max(since if since is not None else now - self.window, oldest)
        report = PullReport()
        for account in self.accounts(accounts):
            report.accounts += 1
            assert account.shortcode is not None  # accounts() keeps those with one
            client = self.clients.for_account(account.name)
            try:
                found = await client.pull_transactions(start, now, shortcode=account.shortcode)
            except PesaError as err:
                report.errors += 1
                report.details.append(f"{account.name}: {type(err).__name__}: {err}")
                log.warning("Pull Transactions for account %s failed: %s", account.name, err)
                continue
            target = ReceiptAccount(
                account.name, verifiable=account.has_initiator and self.policy != "never"
            )
            for txn in found:
                report.listed += 1
                outcome = await self.ledger.receipts.ingest_pulled(
                    pulled(txn, account.shortcode), account=target
                )
                receipt = outcome.receipt
                if outcome.status == "duplicate":
                    report.known += 1
                elif outcome.status == "flagged":
                    report.flagged += 1
                    report.details.append(f"{txn.transaction_id}: flagged: {outcome.detail}")
                elif receipt is not None and receipt.source == "pull":
                    report.recovered += 1
                    report.details.append(
                        f"{txn.transaction_id}: recovered ({receipt.amount} KES, "
                        f"account {account.name})"
                    )
                elif outcome.status == "applied":
                    report.confirmed += 1
                else:
                    report.known += 1
        if report.recovered or report.flagged:
            log.warning(
                "Pull Transactions: %d receipts recovered, %d flagged (%d listed)",
                report.recovered,
                report.flagged,
                report.listed,
            )
        return report

    async def run(self, stop: anyio.Event) -> None:
        """A round every ``interval`` seconds until ``stop`` is set (errors are logged)."""
        while not stop.is_set():
            try:
                await self.run_once()
            except Exception:
                log.exception("Pull Transactions round failed")
            with anyio.move_on_after(self.interval):
                await stop.wait()
