"""``pesa_reconcile``: settles payments whose callback is late or lost, by STK query.

The Django twin of the gateway's reconciler, on the same rules (:mod:`pesa.ledger`): each
round turns intents stuck in ``created`` into ``unknown``, claims due payments (``FOR UPDATE
SKIP LOCKED`` on PostgreSQL plus a lease, so several processes never claim one payment),
asks Daraja about each within ``PESA_RECONCILE_QUERY_RATE``, and applies what it says: a
final answer settles the payment, "still being processed" schedules another check, and a
payment with no final answer by ``PESA_RECONCILE_DEADLINE`` fails as ``expired`` (flagged
when the customer may have paid). A query is started only while the claim's lease still
covers it, so a payment is never queried by two processes at once.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from pesa._clock import Clock, require_clock
from pesa._exceptions import DarajaError, PesaError, RateLimitError
from pesa._logging import get_logger
from pesa.client import Daraja
from pesa.config import Settings
from pesa.django._store import Store
from pesa.django.models import Payment
from pesa.ledger import (
    RECONCILABLE_STATUSES,
    InvalidTransitionError,
    PaymentStatus,
    StillPending,
    query_input,
    recheck_delay,
    reconcile_deadline,
    refuses_unverified_id,
)

if TYPE_CHECKING:
    from pesa.django._payout_checks import PayoutChecker

__all__ = ["ReconcileReport", "Reconciler"]

log = get_logger("pesa.django.reconcile")


@dataclass(slots=True)
class ReconcileReport:
    """What one round did (the counts of :class:`pesa.gateway.ReconcileReport`)."""

    recovered: int = 0
    claimed: int = 0
    queried: int = 0
    succeeded: int = 0
    failed: int = 0
    still_pending: int = 0
    expired: int = 0
    unqueryable: int = 0
    errors: int = 0
    rate_limited: int = 0
    released: int = 0
    adopted: int = 0
    dropped: int = 0
    abandoned: int = 0
    payouts_recovered: int = 0
    payouts_claimed: int = 0
    payouts_queried: int = 0
    payouts_expired: int = 0


class _RoundAborted(Exception):
    """Spike arrest: hand the rest of the round back."""


class _LeaseRunningOut(Exception):
    """Too little of the claim's lease is left to start another query."""


def _worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"


class Reconciler:
    """Settles pending and unknown payments by STK query, within a rate bound.

    Args:
        store: the app's :class:`~pesa.django._store.Store`.
        client: the sync :class:`pesa.Daraja` client (``stk_query`` only).
        settings: ``PESA_RECONCILE_*`` pacing and ``PESA_TIMEOUT`` (one query).
        clock: where the time is read (its ``monotonic()`` paces queries and leases);
            defaults to the store's.
        sleep: how to wait (tests pass a fake).
        payouts: the payouts' Transaction Status checker, run after the payments each round.
    """

    def __init__(
        self,
        store: Store,
        client: Daraja,
        settings: Settings,
        *,
        clock: Clock | None = None,
        sleep: Callable[[float], None] = time.sleep,
        payouts: PayoutChecker | None = None,
    ) -> None:
        self.store = store
        self.payouts = payouts
        self.client = client
        self.settings = settings
        self._clock: Clock = require_clock(clock, store.clock)
        self._sleep = sleep
        self._next_query = 0.0
        self._lease_end = float("inf")
        self._rate_limited_in_a_row = 0
        self.worker = _worker_name()

    # -- rounds ---------------------------------------------------------------------------

    def run_once(self) -> ReconcileReport:
        """One round: recover stale intents, claim due payments, query, settle."""
        s = self.settings
        report = ReconcileReport()
        recovered = self.store.recover_stale_created(
            timedelta(seconds=s.reconcile_stale_created_after)
        )
        report.recovered = len(recovered)
        if recovered:
            log.warning(
                "%d payment(s) stuck in created marked unknown: %s",
                len(recovered),
                ", ".join(p.id for p in recovered),
            )
        claimed_at = self._clock.monotonic()
        batch = self.store.claim_for_reconciliation(
            limit=s.reconcile_batch_size,
            min_age=timedelta(seconds=s.reconcile_min_age),
            lease=timedelta(seconds=s.reconcile_lease),
        )
        report.claimed = len(batch)
        # A query starts only while it can finish inside the claim's lease: after that another
        # process may claim the payment, and it must never be queried twice at once.
        self._lease_end = claimed_at + s.reconcile_lease - s.timeout - 1.0
        for index, payment in enumerate(batch):
            try:
                self._check(payment, report)
            except _LeaseRunningOut:
                self._release(batch[index:], 0.0, report)
                break
            except _RoundAborted as pause:
                self._release(batch[index + 1 :], float(str(pause) or 0), report)
                break
        if self.payouts is not None:
            checked = self.payouts.run_once()
            report.payouts_recovered = checked.recovered
            report.payouts_claimed = checked.claimed
            report.payouts_queried = checked.queried
            report.payouts_expired = checked.expired
            report.errors += checked.errors
            report.rate_limited += checked.rate_limited
        if report.claimed:
            log.info(
                "reconciled %d payment(s): %d queried, %d succeeded, %d failed, %d pending, "
                "%d expired, %d errors",
                report.claimed,
                report.queried,
                report.succeeded,
                report.failed,
                report.still_pending,
                report.expired,
                report.errors,
            )
        return report

    def run(self, stop: threading.Event) -> None:
        """Reconcile until ``stop`` is set: back to back while a backlog remains, otherwise
        every ``PESA_RECONCILE_INTERVAL`` seconds. A failed round is logged, never raised."""
        failures = 0
        while not stop.is_set():
            try:
                report = self.run_once()
            except Exception:  # the loop must survive a database hiccup
                failures += 1
                pause = min(300.0, self.settings.reconcile_interval * 2 ** min(failures, 10))
                log.exception("reconciliation round failed; retrying in %.1f s", pause)
                stop.wait(pause)
                continue
            failures = 0
            size = self.settings.reconcile_batch_size
            backlog = (
                report.claimed >= size or report.payouts_claimed >= size
            ) and not report.released
            if not backlog:
                stop.wait(self.settings.reconcile_interval)

    def settle(self, payment: Payment) -> Payment:
        """Ask Daraja about ``payment`` now and apply a final answer (the admin's action).

        A payment that is neither pending, unknown nor awaiting verification, or has no
        CheckoutRequestID, is returned as stored; so is a "still being processed" answer.

        Raises:
            PesaError: no usable answer from Daraja (the payment is unchanged).
        """
        current = self.store.get(payment.id) or payment
        cid = current.checkout_request_id
        reconcilable = PaymentStatus(current.status) in RECONCILABLE_STATUSES
        if cid is None or not (reconcilable or current.verify_at is not None):
            return current
        self._pace()
        asked = self.store.now()
        try:
            response = self.client.stk_query(cid, timeout=self.settings.timeout)
        except DarajaError as err:
            if refuses_unverified_id(current.checkout_request_id_verified, err):
                self._log(current, "refused", asked, code=err.error_code, detail=str(err))
                return self._drop_id(current, err, None)
            outcome = "rate_limited" if isinstance(err, RateLimitError) else "error"
            self._log(current, outcome, asked, code=err.error_code, detail=str(err))
            raise
        except PesaError as err:
            self._log(current, "error", asked, detail=str(err))
            raise
        result = query_input(response)
        if isinstance(result, StillPending):
            self._log(current, "pending", asked, code=response.result_code)
            return current
        applied = self.store.apply_query_result(cid, result)
        self._log(
            current,
            "succeeded" if result.is_success else "failed",
            asked,
            code=result.result_code,
            desc=result.result_desc,
            detail=applied.detail,
        )
        return applied.payment or current

    # -- one payment ----------------------------------------------------------------------

    def _pace(self) -> None:
        # At most PESA_RECONCILE_QUERY_RATE queries per second from this process.
        now = self._clock.monotonic()
        wait = self._next_query - now
        if wait > 0:
            self._sleep(wait)
            now += wait
        self._next_query = now + 1.0 / self.settings.reconcile_query_rate

    def _log(
        self,
        payment: Payment,
        outcome: str,
        asked: datetime,
        *,
        code: str | None = None,
        desc: str | None = None,
        detail: str | None = None,
    ) -> None:
        self.store.record_stk_query(
            payment,
            outcome,
            asked_at=asked,
            worker=self.worker,
            result_code=code,
            result_desc=desc,
            detail=detail,
        )

    def _deadline_passed(self, payment: Payment) -> bool:
        deadline = reconcile_deadline(
            payment.status,
            payment.created_at,
            payment.verify_since,
            self.settings.reconcile_deadline,
        )
        return self.store.now() >= deadline

    def _check(self, payment: Payment, report: ReconcileReport) -> None:
        cid = payment.checkout_request_id
        if cid is None:
            adopted = self.store.adopt_orphan_callbacks(payment.id)
            if adopted.checkout_request_id is None:
                self._unqueryable(adopted, report)
                return
            report.adopted += 1
            payment, cid = adopted, adopted.checkout_request_id
        self._pace()
        if self._clock.monotonic() >= self._lease_end:
            raise _LeaseRunningOut
        report.queried += 1
        asked = self.store.now()
        try:
            response = self.client.stk_query(cid, timeout=self.settings.timeout)
        except RateLimitError as err:
            report.rate_limited += 1
            self._rate_limited_in_a_row += 1
            s = self.settings
            pause = min(
                s.reconcile_backoff_cap,
                s.reconcile_backoff_base * 2 ** min(self._rate_limited_in_a_row - 1, 16),
            )
            self._log(payment, "rate_limited", asked, code=err.error_code)
            log.warning("STK query refused by rate limiting; pausing queries for %.1f s", pause)
            self._next_query = self._clock.monotonic() + pause
            self._release([payment], pause, report)
            raise _RoundAborted(str(pause)) from err
        except DarajaError as err:
            if refuses_unverified_id(payment.checkout_request_id_verified, err):
                self._log(payment, "refused", asked, code=err.error_code, detail=str(err))
                self._drop_id(payment, err, report)
                return
            report.errors += 1
            self._log(payment, "error", asked, code=err.error_code, detail=str(err))
            log.warning("STK query for payment %s got no usable answer: %s", payment.id, err)
            self._no_answer(payment, report)
            return
        except PesaError as err:
            report.errors += 1
            self._log(payment, "error", asked, detail=str(err) or type(err).__name__)
            log.warning("STK query for payment %s got no usable answer: %s", payment.id, err)
            self._no_answer(payment, report)
            return
        self._rate_limited_in_a_row = 0
        result = query_input(response)
        if isinstance(result, StillPending):
            self._log(payment, "pending", asked, code=response.result_code)
            self._no_answer(payment, report, pending=True)
            return
        applied = self.store.apply_query_result(cid, result)
        self._log(
            payment,
            "succeeded" if result.is_success else "failed",
            asked,
            code=result.result_code,
            desc=result.result_desc,
            detail=applied.detail,
        )
        settled = applied.payment
        if applied.status == "applied" and settled is not None:
            if settled.status == PaymentStatus.SUCCEEDED:
                report.succeeded += 1
            elif settled.status == PaymentStatus.FAILED:
                report.failed += 1

    def _drop_id(
        self, payment: Payment, err: DarajaError, report: ReconcileReport | None
    ) -> Payment:
        try:
            dropped = self.store.drop_unverified_id(payment.id, err.error_message)
        except InvalidTransitionError as refused:  # settled meanwhile: the answer won
            log.info("payment %s kept its id: %s", payment.id, refused.detail)
            return self.store.get(payment.id) or payment
        log.warning(
            "payment %s: Daraja does not know the CheckoutRequestID a callback gave it; dropped",
            payment.id,
        )
        if report is not None:
            report.dropped += 1
            if dropped.checkout_request_id is not None:
                report.adopted += 1
                self._check(dropped, report)
            elif self._deadline_passed(dropped):
                self._expire(dropped, report)
            else:
                self._unqueryable(dropped, report)
        return dropped

    def _no_answer(
        self, payment: Payment, report: ReconcileReport, *, pending: bool = False
    ) -> None:
        if self._deadline_passed(payment):
            self._expire(payment, report)
            return
        if pending:
            report.still_pending += 1
        s = self.settings
        deadline = reconcile_deadline(
            payment.status, payment.created_at, payment.verify_since, s.reconcile_deadline
        )
        wait = recheck_delay(
            payment.check_count, s.reconcile_recheck_interval, s.reconcile_recheck_cap
        )
        next_check = min(self.store.now() + timedelta(seconds=wait), deadline)
        self.store.record_still_pending(payment.id, next_check)

    def _unqueryable(self, payment: Payment, report: ReconcileReport) -> None:
        if self._deadline_passed(payment):
            self._expire(payment, report)
            return
        report.unqueryable += 1
        # Nothing can be asked; look again only at the deadline (a callback or a late
        # "accepted" may settle it before then).
        deadline = payment.created_at + timedelta(seconds=self.settings.reconcile_deadline)
        self.store.record_still_pending(payment.id, deadline)

    def _expire(self, payment: Payment, report: ReconcileReport) -> None:
        if PaymentStatus(payment.status) not in RECONCILABLE_STATUSES:
            # A settled payment whose evidence Daraja never confirmed: flag, don't expire.
            try:
                self.store.abandon_verification(payment.id)
            except InvalidTransitionError as err:
                log.info("payment %s: verification already closed: %s", payment.id, err.detail)
                return
            report.abandoned += 1
            return
        try:
            expired = self.store.expire(payment.id)
        except InvalidTransitionError as err:
            log.info("payment %s settled before it could expire: %s", payment.id, err.detail)
            return
        if expired.status == PaymentStatus.FAILED and expired.failure_reason == "expired":
            report.expired += 1
            log.warning("payment %s expired: no final answer in time", payment.id)

    def _release(self, payments: list[Payment], pause: float, report: ReconcileReport) -> None:
        resume = self.store.now() + timedelta(seconds=pause)
        for payment in payments:
            self.store.record_still_pending(payment.id, resume)
            report.released += 1
