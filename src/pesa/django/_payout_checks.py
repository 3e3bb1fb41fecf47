"""Transaction Status checks of payouts: how ``pesa_reconcile`` settles lost B2C Results.

Each round turns payouts stuck in ``created`` (the process died around the send) into
``unknown``, claims the payouts due for a check (``pending`` or ``unknown`` for
``PESA_PAYOUT_STATUS_AFTER`` seconds, or holding a Result that awaits verification;
``FOR UPDATE SKIP LOCKED`` on PostgreSQL plus a lease, so several processes never claim one
payout) and sends one Transaction Status query each, by the payout's
OriginatorConversationID. The answer comes back by callback to the ``status-result`` view
and is applied there (:meth:`pesa.django._payouts.PayoutStore.ingest_status_result`). A
payout with no final answer by ``PESA_PAYOUT_DEADLINE`` is flagged for a person and no
longer checked; it is never failed on a guess, nor sent again.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from pesa._clock import SYSTEM_CLOCK, Clock, require_clock
from pesa._exceptions import DarajaError, PesaError, RateLimitError
from pesa._logging import get_logger
from pesa.client import Daraja
from pesa.config import Settings
from pesa.django import conf
from pesa.django._payouts import PayoutStore
from pesa.django.models import Payout
from pesa.ledger import (
    InvalidTransitionError,
    flag_late_transfer,
    next_transfer_check,
    recheck_delay,
    transfer_deadline,
    transfer_grace,
)

__all__ = ["PayoutChecker", "PayoutReport"]

log = get_logger("pesa.django.payouts")


@dataclass(slots=True)
class PayoutReport:
    """What one round of payout checks did."""

    recovered: int = 0
    claimed: int = 0
    queried: int = 0
    expired: int = 0
    errors: int = 0
    rate_limited: int = 0


class PayoutChecker:
    """Asks Transaction Status about payouts whose Result is late, lost or unverifiable.

    Args:
        store: the app's :class:`~pesa.django._payouts.PayoutStore`.
        client: the sync :class:`pesa.Daraja` client (``transaction_status`` only).
        settings: ``PESA_PAYOUT_STATUS_AFTER``, ``PESA_PAYOUT_DEADLINE`` and the
            reconciler's pacing (``PESA_RECONCILE_*``).
        clock: where the time is read (:class:`pesa.daraja.Clock`): wall time for the
            records, monotonic time for the pacing and the lease.
        sleep: how to wait (tests pass a fake).
    """

    def __init__(
        self,
        store: PayoutStore,
        client: Daraja,
        settings: Settings,
        *,
        clock: Clock = SYSTEM_CLOCK,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.store = store
        self.client = client
        self.settings = settings
        self._clock = require_clock(clock)
        self._sleep = sleep
        self._next_query = 0.0
        # How long the last question, asked at the deadline, may take to be answered.
        self.grace = transfer_grace(settings.payout_status_after)
        self.worker = f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"

    def run_once(self) -> PayoutReport:
        """One round: recover stale intents, claim due payouts, ask Transaction Status."""
        s = self.settings
        report = PayoutReport()
        recovered = self.store.recover_stale_created(
            timedelta(seconds=s.reconcile_stale_created_after)
        )
        report.recovered = len(recovered)
        started = self._clock.monotonic()
        batch = self.store.claim_for_checks(
            limit=s.reconcile_batch_size,
            min_age=timedelta(seconds=s.payout_status_after),
            lease=timedelta(seconds=s.reconcile_lease),
        )
        report.claimed = len(batch)
        for index, payout in enumerate(batch):
            # A query starts only well inside the claim's lease (never two at once).
            if self._clock.monotonic() - started > s.reconcile_lease / 2:
                for rest in batch[index:]:
                    self.store.record_check(rest.id, self._clock.now())
                break
            if not self._check(payout, report):
                for rest in batch[index + 1 :]:
                    self.store.record_check(rest.id, self._clock.now())
                break
        if report.claimed:
            log.info(
                "checked %d payout(s): %d queried, %d expired, %d errors",
                report.claimed,
                report.queried,
                report.expired,
                report.errors,
            )
        return report

    def _deadline(self, payout: Payout) -> datetime:
        return transfer_deadline(
            created_at=payout.created_at,
            first_sent_at=payout.first_sent_at,
            verify_since=payout.verify_since,
            settled=payout.is_final,
            seconds=self.settings.payout_deadline,
        )

    def _check(self, payout: Payout, report: PayoutReport) -> bool:
        """Check one claimed payout; ``False`` when the round must stop (rate limited)."""
        now = self._clock.now()
        deadline = self._deadline(payout)
        if now >= deadline:
            # Flag only after asking once more at the deadline and giving the answer time to
            # come: a checker behind on its work must not flag what Daraja would confirm.
            asked = self.store.latest_query(payout.id)
            if flag_late_transfer(
                now,
                deadline,
                grace=self.grace,
                asked_at=None if asked is None else asked.asked_at,
                asked_outcome=None if asked is None else asked.outcome,
            ):
                try:
                    self.store.expire(payout.id)
                except InvalidTransitionError as err:
                    log.info("payout %s settled before it could expire: %s", payout.id, err)
                    self.store.record_check(payout.id, now + timedelta(seconds=self.grace))
                    return True
                report.expired += 1
                log.warning("payout %s: no final answer before the deadline; flagged", payout.id)
                return True
        report.queried += 1
        outcome = self._query(payout)
        if outcome == "rate_limited":
            report.rate_limited += 1
            self.store.record_check(
                payout.id, now + timedelta(seconds=self.settings.reconcile_backoff_base)
            )
            return False
        if outcome == "error":
            report.errors += 1
        s = self.settings
        wait = recheck_delay(
            payout.check_count, s.reconcile_recheck_interval, s.reconcile_recheck_cap
        )
        self.store.record_check(
            payout.id, next_transfer_check(now, deadline, wait=wait, grace=self.grace)
        )
        return True

    def _pace(self) -> None:
        # At most PESA_RECONCILE_QUERY_RATE queries per second from this process.
        now = self._clock.monotonic()
        wait = self._next_query - now
        if wait > 0:
            self._sleep(wait)
            now += wait
        self._next_query = now + 1.0 / self.settings.reconcile_query_rate

    def _query(self, payout: Payout) -> str:
        """Send one Transaction Status query and log it: ``sent``, ``error`` or
        ``rate_limited``."""
        self._pace()
        asked = self._clock.now()
        try:
            response = self.client.transaction_status(
                original_conversation_id=payout.originator_conversation_id,
                shortcode=payout.shortcode,
                remarks="Status check",
                result_url=conf.site_url("status-result"),
                timeout_url=conf.site_url("status-timeout"),
                timeout=self.settings.timeout,
            )
        except RateLimitError as err:
            self.store.record_query(
                payout,
                "rate_limited",
                asked_at=asked,
                worker=self.worker,
                result_code=err.error_code,
            )
            log.warning("Transaction Status refused by rate limiting; round stopped")
            return "rate_limited"
        except PesaError as err:
            code = err.error_code if isinstance(err, DarajaError) else None
            self.store.record_query(
                payout,
                "error",
                asked_at=asked,
                worker=self.worker,
                result_code=code,
                detail=str(err) or type(err).__name__,
            )
            log.warning("Transaction Status for payout %s got no usable answer: %s", payout.id, err)
            return "error"
        self.store.record_query(
            payout,
            "sent",
            asked_at=asked,
            worker=self.worker,
            conversation_id=response.conversation_id,
            originator_conversation_id=response.originator_conversation_id,
        )
        return "sent"

    def ask(self, payout: Payout) -> Payout:
        """Send a Transaction Status query about ``payout`` now (the admin's action).

        Raises:
            PesaError: Daraja did not take the query.
        """
        outcome = self._query(payout)
        if outcome != "sent":
            latest = self.store.latest_query(payout.id)
            detail = latest.detail if latest is not None and latest.detail else outcome
            raise PesaError(f"Transaction Status query not taken: {detail}")
        return self.store.get(payout.id) or payout
