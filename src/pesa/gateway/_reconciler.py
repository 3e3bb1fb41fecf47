"""The reconciler: settles payments whose callback is late or lost, by STK query.

Daraja's callbacks go missing (REFERENCE §11-12), so nothing waits for them forever. Each
round the reconciler:

1. turns intents stuck in ``created`` (the process died around the STK push) into
   ``unknown``: the push may have left, so it is never re-sent;
2. claims pending and unknown payments that have waited at least ``min_age`` and are due
   (through the ledger: ``FOR UPDATE SKIP LOCKED`` on PostgreSQL plus a lease, so several
   processes can reconcile at once and never query the same payment in one round);
3. asks Daraja about each (``POST /mpesa/stkpushquery/v1/query``), at most ``query_rate``
   queries per second (a token bucket shared by the whole process), and
   - applies a final answer (``ResultCode`` ``"0"`` succeeded, another final code failed);
   - keeps a "being processed" answer (``500.001.1001``) or a code the catalogue does not
     know to be final as pending, and checks again after ``recheck_interval``, growing
     by half on each check of the same payment up to ``recheck_cap`` (a prompt left open
     for minutes should not take the query budget from fresh ones);
   - on spike arrest or quota (:class:`pesa.RateLimitError`) pauses every query for a
     backoff that doubles while it repeats, and hands the rest of the round back;
   - on a transport error or any other Daraja error leaves the payment for a later round;
4. fails with reason ``expired`` a payment that still has no final answer once
   ``deadline`` seconds have passed since it was created (after one last query); it is
   flagged when the customer may have paid (an unconfirmed push, or a success callback that
   waited for Daraja's confirmation).

It also answers the ledger's *verification* requests: a success callback the ledger could
not cross-check (no amount, a masked phone, an id learnt from a callback, a payment already
failed) sets ``verify_at``, and such a payment is queried at once whatever its status.
Daraja's answer decides; if no answer comes within ``deadline`` seconds of the request, the
payment is flagged for a human (never silently failed, never marked paid).

An ``unknown`` payment without a CheckoutRequestID (the push timed out before Daraja gave
one) cannot be STK-queried. Each round looks for a stored success callback that fits it (the
amount asked, a phone that agrees) and, if exactly one id does, adopts that id, unverified,
and queries it. An adopted id Daraja refuses is dropped (and another stored callback may
then be adopted). Otherwise the payment stays ``unknown`` until the deadline and fails as
``expired``, flagged: the customer may have paid.

Every query and Daraja's answer are logged in the ledger (``Ledger.list_stk_queries``).
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import anyio

from pesa._bucket import SharedBucketState
from pesa._clock import Clock, require_clock
from pesa._constants import DEFAULT_TIMEOUT
from pesa._exceptions import (
    DarajaError,
    PesaError,
    RateLimitError,
    TransportError,
    ValidationError,
)
from pesa._logging import get_logger
from pesa.config._settings import default_of
from pesa.gateway._backoff import Backoff, RandomSource
from pesa.gateway._metrics import Metrics
from pesa.gateway._rounds import failure_backoff, run_rounds
from pesa.gateway._throttle import TokenBucket
from pesa.ledger import (
    RECONCILABLE_STATUSES,
    InvalidTransitionError,
    PaymentStatus,
    StillPending,
    StkQueryOutcome,
    query_input,
    recheck_delay,
    reconcile_deadline,
    refuses_unverified_id,
)

if TYPE_CHECKING:
    from pesa.config import Settings
    from pesa.daraja import StkQueryResponse
    from pesa.ledger import Ledger, Payment

__all__ = ["ReconcileReport", "Reconciler", "ReconcilerOptions", "StkQueryClient"]

log = get_logger("pesa.gateway.reconciler")

_RECONCILABLE = RECONCILABLE_STATUSES


class StkQueryClient(Protocol):
    """What the reconciler needs from a Daraja client (:class:`pesa.AsyncDaraja` fits)."""

    async def stk_query(self, checkout_request_id: str) -> StkQueryResponse:
        """``POST /mpesa/stkpushquery/v1/query`` for one CheckoutRequestID."""
        ...


@runtime_checkable
class StkQueryClients(Protocol):
    """One client per named account (:class:`pesa.gateway.AccountClients` fits)."""

    def for_account(self, name: str | None) -> StkQueryClient:
        """The client of account ``name`` (the default account for ``None``)."""
        ...


@dataclass(frozen=True, slots=True)
class ReconcilerOptions:
    """How the reconciler paces itself (defaults are :class:`pesa.Settings`' own).

    Attributes:
        interval: seconds between rounds when there is no backlog.
        min_age: seconds a payment waits for its callback before its first query.
        recheck_interval: seconds before the second query of a payment that is still
            pending; each later wait is half as long again, up to ``recheck_cap``.
        recheck_cap: the longest wait between two queries of one payment.
        deadline: seconds after creation after which a payment with no final answer fails
            with reason ``expired``.
        query_rate: STK queries per second, at most, for this process.
        query_burst: queries that may go out at once after an idle spell.
        batch_size: payments claimed per round.
        lease: seconds a claimed payment stays reserved to this process.
        stale_created_after: seconds after which an intent still in ``created`` is
            treated as ``unknown``.
        backoff: pauses after spike arrest / quota answers.
        query_timeout: seconds one STK query may take in all; a query is only started
            while at least this much of the claim's lease remains.
    """

    interval: float = default_of("reconcile_interval")
    min_age: float = default_of("reconcile_min_age")
    recheck_interval: float = default_of("reconcile_recheck_interval")
    recheck_cap: float = default_of("reconcile_recheck_cap")
    deadline: float = default_of("reconcile_deadline")
    query_rate: float = default_of("reconcile_query_rate")
    query_burst: int = default_of("reconcile_query_burst")
    batch_size: int = default_of("reconcile_batch_size")
    lease: float = default_of("reconcile_lease")
    stale_created_after: float = default_of("reconcile_stale_created_after")
    backoff: Backoff = field(
        default_factory=lambda: Backoff(
            base=default_of("reconcile_backoff_base"), cap=default_of("reconcile_backoff_cap")
        )
    )
    query_timeout: float = DEFAULT_TIMEOUT

    def __post_init__(self) -> None:
        for name in (
            "interval",
            "recheck_interval",
            "deadline",
            "query_rate",
            "lease",
            "stale_created_after",
        ):
            if not getattr(self, name) > 0:
                raise ValidationError(name, "must be greater than 0", getattr(self, name))
        if self.recheck_cap < self.recheck_interval:
            raise ValidationError(
                "recheck_cap", "must be at least recheck_interval", self.recheck_cap
            )
        if self.min_age < 0:
            raise ValidationError("min_age", "must not be negative", self.min_age)
        for name in ("query_burst", "batch_size"):
            if getattr(self, name) < 1:
                raise ValidationError(name, "must be 1 or more", getattr(self, name))
        if not 0 < self.query_timeout < self.lease:
            raise ValidationError(
                "query_timeout", "must be positive and shorter than the lease", self.query_timeout
            )

    @classmethod
    def from_settings(cls, settings: Settings) -> ReconcilerOptions:
        """The options set by ``PESA_RECONCILE_*`` settings."""
        return cls(
            interval=settings.reconcile_interval,
            min_age=settings.reconcile_min_age,
            recheck_interval=settings.reconcile_recheck_interval,
            recheck_cap=settings.reconcile_recheck_cap,
            deadline=settings.reconcile_deadline,
            query_rate=settings.reconcile_query_rate,
            query_burst=settings.reconcile_query_burst,
            batch_size=settings.reconcile_batch_size,
            lease=settings.reconcile_lease,
            stale_created_after=settings.reconcile_stale_created_after,
            backoff=Backoff(
                base=settings.reconcile_backoff_base, cap=settings.reconcile_backoff_cap
            ),
            query_timeout=settings.timeout,
        )


@dataclass(slots=True)
class ReconcileReport:
    """What one reconciliation round did.

    Attributes:
        recovered: intents stuck in ``created`` moved to ``unknown``.
        claimed: payments claimed for checking.
        queried: STK queries sent.
        succeeded: payments the round settled as succeeded.
        failed: payments the round settled as failed by a final result code.
        still_pending: payments Daraja still reports as being processed.
        expired: payments failed with reason ``expired``.
        unqueryable: unknown payments without a CheckoutRequestID left to wait.
        errors: queries that got no usable answer (transport or Daraja errors).
        rate_limited: spike arrest / quota answers.
        released: claimed payments handed back unqueried (after a spike arrest, or too
            little lease left).
        adopted: unknown payments that took an id from a stored success callback.
        dropped: ids learnt from callbacks that Daraja refused (dropped).
        abandoned: verifications given up after the deadline (flagged).
    """

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


class _RoundAborted(Exception):
    """Spike arrest: hand the rest of the round back."""


class _LeaseRunningOut(Exception):
    """Too little of the claim's lease is left to start another query."""


class Reconciler:
    """Settles pending and unknown payments by STK query, within a rate bound.

    Args:
        ledger: the open :class:`~pesa.ledger.Ledger`.
        client: the Daraja client (:class:`pesa.AsyncDaraja`), used for ``stk_query`` only;
            or one client per account (:class:`pesa.gateway.AccountClients`): each payment
            is queried by the client of the account it was asked on.
        options: pacing; from ``settings`` when omitted.
        settings: used for ``options`` when those are not given.
        metrics: counters to update (``reconciler_*``).
        clock: where the time is read (:class:`pesa.daraja.Clock`): ``now()`` for due times,
            ``monotonic()`` for the rate bound and leases. Defaults to the ledger's.
        sleep: how to wait (the rate bound's pauses); injectable for tests.
        shared: the query budget's state shared by every process (``None``: its own).

    Example:
        >>> reconciler = Reconciler(ledger, client, settings=settings)  # doctest: +SKIP
        >>> report = await reconciler.run_once()                        # doctest: +SKIP
    """

    def __init__(
        self,
        ledger: Ledger,
        client: StkQueryClient | StkQueryClients,
        *,
        options: ReconcilerOptions | None = None,
        settings: Settings | None = None,
        metrics: Metrics | None = None,
        clock: Clock | None = None,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        rng: RandomSource | None = None,
        shared: SharedBucketState | None = None,
    ) -> None:
        if options is None:
            options = (
                ReconcilerOptions.from_settings(settings)
                if settings is not None
                else ReconcilerOptions()
            )
        self.ledger = ledger
        self.clients: StkQueryClients | None = None
        if isinstance(client, StkQueryClients):
            self.clients = client
            self.client: StkQueryClient = client.for_account(None)
        else:
            self.client = client
        self.options = options
        self.metrics = metrics if metrics is not None else Metrics()
        self._clock: Clock = require_clock(clock, ledger.clock)
        # ``shared``: the budget every process of the deployment spends (PESA_SHARED_STATE).
        self.bucket = TokenBucket(
            options.query_rate, options.query_burst, clock=self._clock, sleep=sleep, shared=shared
        )
        self._rng: RandomSource = rng if rng is not None else random.Random()
        # Pauses after a failed round (database unreachable, ...): from one interval up.
        self._failure_backoff = failure_backoff(options.interval)
        self._rate_limited_in_a_row = 0
        self._lease_end = float("inf")

    # -- one round ---------------------------------------------------------------------

    async def run_once(self) -> ReconcileReport:
        """Run one round: recover stale intents, claim due payments, query, settle."""
        options = self.options
        report = ReconcileReport()
        self.metrics.reconciler_rounds.inc()
        recovered = await self.ledger.recover_stale_created(
            timedelta(seconds=options.stale_created_after)
        )
        report.recovered = len(recovered)
        if recovered:
            self.metrics.reconciler_stale_recovered.inc(len(recovered))
            log.warning(
                "%d payment(s) stuck in created marked unknown: %s",
                len(recovered),
                ", ".join(p.id for p in recovered),
            )

        claimed_at = self._clock.monotonic()
        batch = await self.ledger.claim_for_reconciliation(
            limit=options.batch_size,
            min_age=timedelta(seconds=options.min_age),
            lease=timedelta(seconds=options.lease),
        )
        report.claimed = len(batch)
        # A query is started only while it can finish inside the claim's lease: after that
        # another process may claim the payment, and it must never be queried twice at once.
        self._lease_end = claimed_at + options.lease - options.query_timeout - 1.0
        for index, payment in enumerate(batch):
            try:
                await self._check(payment, report)
            except _LeaseRunningOut:
                await self._release(batch[index:], self._now(), report)
                break
            except _RoundAborted:
                resume = self._now() + timedelta(seconds=self.bucket.wait_time())
                await self._release(batch[index + 1 :], resume, report)
                break
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

    async def run(self, stop: anyio.Event) -> None:
        """Reconcile until ``stop`` is set: rounds back to back while a backlog remains,
        otherwise one every ``interval`` seconds. Errors are logged, never raised."""

        async def round_() -> bool:
            report = await self.run_once()
            return report.claimed >= self.options.batch_size and not report.released

        await run_rounds(
            "reconciliation",
            round_,
            stop,
            interval=self.options.interval,
            failure_backoff=self._failure_backoff,
            rng=self._rng,
        )

    async def settle(self, payment: Payment) -> Payment:
        """Query Daraja about ``payment`` now and apply a final answer (``/refresh``).

        A payment that is neither pending, unknown nor awaiting verification, or has no
        CheckoutRequestID, is returned as stored. A "still being processed" answer leaves it
        unchanged. The query counts against the same rate bound as the background rounds,
        and is logged like theirs.

        Raises:
            RateLimitError: Daraja answered with spike arrest (the bound also pauses).
            TransportError: no answer from Daraja.
            DarajaError: any other error answer.
        """
        current = await self.ledger.get_payment(payment.id) or payment
        cid = current.checkout_request_id
        if cid is None or not (current.status in _RECONCILABLE or current.verify_at is not None):
            return current
        await self.bucket.acquire()
        try:
            with anyio.fail_after(self.options.query_timeout):
                response = await self._client(current).stk_query(cid)
        except TimeoutError as err:
            await self._log_query(current, "error", detail="no answer in time")
            raise TransportError(
                f"STK query got no answer within {self.options.query_timeout:g} s"
            ) from err
        except RateLimitError as err:
            await self._log_query(current, "rate_limited", code=err.error_code)
            self._rate_limited()
            raise
        except DarajaError as err:
            if refuses_unverified_id(current.checkout_request_id_verified, err):
                await self._log_query(current, "refused", code=err.error_code, detail=str(err))
                return await self._drop_id(current, err, None)
            await self._log_query(current, "error", code=err.error_code, detail=str(err))
            raise
        except PesaError as err:
            await self._log_query(current, "error", detail=str(err))
            raise
        self._rate_limited_in_a_row = 0
        result = query_input(response)
        if isinstance(result, StillPending):
            self.metrics.reconciler_queries.inc(outcome="pending")
            await self._log_query(current, "pending", response=response)
            return current
        outcome = await self.ledger.apply_stk_result(cid, result, source="query")
        success = _is_success(response)
        self.metrics.reconciler_queries.inc(outcome="succeeded" if success else "failed")
        await self._log_query(
            current, "succeeded" if success else "failed", response=response, detail=outcome.detail
        )
        return outcome.payment or current

    # -- one payment -------------------------------------------------------------------

    def _client(self, payment: Payment) -> StkQueryClient:
        """The client of the account the payment was asked on."""
        if self.clients is None:
            return self.client
        return self.clients.for_account(payment.account)

    def _now(self) -> datetime:
        return self._clock.now()

    def _deadline(self, payment: Payment) -> datetime:
        """When to stop asking: the payment's deadline, or its verification's."""
        return reconcile_deadline(
            payment.status, payment.created_at, payment.verify_since, self.options.deadline
        )

    def _past_deadline(self, payment: Payment, now: datetime) -> bool:
        return now >= self._deadline(payment)

    async def _log_query(
        self,
        payment: Payment,
        outcome: StkQueryOutcome,
        *,
        response: StkQueryResponse | None = None,
        code: str | None = None,
        detail: str | None = None,
    ) -> None:
        cid = payment.checkout_request_id
        if cid is None:  # pragma: no cover - only payments with an id are queried
            return
        try:
            await self.ledger.record_stk_query(
                payment.id,
                cid,
                outcome,
                result_code=response.result_code if response is not None else code,
                result_desc=response.result_desc if response is not None else None,
                detail=detail,
            )
        except Exception:  # the log must never cost the answer
            log.exception("could not log the STK query of payment %s", payment.id)

    async def _check(self, payment: Payment, report: ReconcileReport) -> None:
        cid = payment.checkout_request_id
        if cid is None:
            adopted = await self.ledger.adopt_orphan_callbacks(payment.id)
            if adopted.checkout_request_id is None:
                await self._unqueryable(adopted, report)
                return
            report.adopted += 1
            payment = adopted
            cid = adopted.checkout_request_id

        await self.bucket.acquire()
        if self._clock.monotonic() >= self._lease_end:
            raise _LeaseRunningOut
        report.queried += 1
        try:
            with anyio.fail_after(self.options.query_timeout):
                response = await self._client(payment).stk_query(cid)
        except RateLimitError as err:
            report.rate_limited += 1
            self.metrics.reconciler_queries.inc(outcome="rate_limited")
            pause = self._rate_limited()
            log.warning(
                "STK query refused by rate limiting [%s]; pausing queries for %.1f s",
                err.error_code,
                pause,
            )
            # This payment is handed back with the rest of the round.
            await self._release([payment], self._now() + timedelta(seconds=pause), report)
            raise _RoundAborted from err
        except DarajaError as err:
            if refuses_unverified_id(payment.checkout_request_id_verified, err):
                self.metrics.reconciler_queries.inc(outcome="refused")
                await self._log_query(payment, "refused", code=err.error_code, detail=str(err))
                await self._drop_id(payment, err, report)
                return
            report.errors += 1
            self.metrics.reconciler_queries.inc(outcome="error")
            await self._log_query(payment, "error", code=err.error_code, detail=str(err))
            log.warning("STK query for payment %s got no usable answer: %s", payment.id, err)
            await self._no_answer(payment, report)
            return
        except (TransportError, TimeoutError) as err:
            report.errors += 1
            self.metrics.reconciler_queries.inc(outcome="error")
            await self._log_query(payment, "error", detail=str(err) or type(err).__name__)
            log.warning("STK query for payment %s got no usable answer: %s", payment.id, err)
            await self._no_answer(payment, report)
            return
        except PesaError as err:
            # Client-side problems (validation, configuration) are as good as no answer.
            report.errors += 1
            self.metrics.reconciler_queries.inc(outcome="error")
            await self._log_query(payment, "error", detail=str(err))
            log.error("STK query for payment %s could not be sent: %s", payment.id, err)
            await self._no_answer(payment, report)
            return
        self._rate_limited_in_a_row = 0

        result = query_input(response)
        if isinstance(result, StillPending):
            self.metrics.reconciler_queries.inc(outcome="pending")
            await self._log_query(payment, "pending", response=response)
            if not response.pending:
                log.warning(
                    "STK query for payment %s returned result code %s, which is not known "
                    "to be final; checking again later",
                    payment.id,
                    response.result_code,
                )
            await self._no_answer(payment, report, pending=True)
            return

        outcome = await self.ledger.apply_stk_result(cid, result, source="query")
        success = _is_success(response)
        self.metrics.reconciler_queries.inc(outcome="succeeded" if success else "failed")
        await self._log_query(
            payment, "succeeded" if success else "failed", response=response, detail=outcome.detail
        )
        settled = outcome.payment
        if outcome.status == "applied" and settled is not None:
            if settled.status is PaymentStatus.SUCCEEDED:
                report.succeeded += 1
            elif settled.status is PaymentStatus.FAILED:
                report.failed += 1
        log.info(
            "STK query settled payment %s: result code %s (%s)",
            payment.id,
            response.result_code,
            outcome.detail or outcome.status,
        )

    async def _drop_id(
        self, payment: Payment, err: DarajaError, report: ReconcileReport | None
    ) -> Payment:
        """Daraja does not know the id a callback gave this payment: forget it."""
        try:
            dropped = await self.ledger.drop_unverified_id(payment.id, err.error_message)
        except InvalidTransitionError as refused:  # settled meanwhile: the answer won
            log.info("payment %s kept its id: %s", payment.id, refused.detail)
            current = await self.ledger.get_payment(payment.id)
            return current or payment
        log.warning(
            "payment %s: Daraja does not know the CheckoutRequestID a callback gave it "
            "[%s]; dropped",
            payment.id,
            err.error_code,
        )
        if report is not None:
            report.dropped += 1
            if dropped.checkout_request_id is not None:
                # Another stored callback gave it an id: ask about that one now, under the
                # claim this round already holds (each refused id is marked, so this ends).
                report.adopted += 1
                await self._check(dropped, report)
            elif self._past_deadline(dropped, self._now()):
                await self._expire(dropped, report)
            else:
                await self._unqueryable(dropped, report)
        return dropped

    async def _no_answer(
        self, payment: Payment, report: ReconcileReport, *, pending: bool = False
    ) -> None:
        now = self._now()
        if self._past_deadline(payment, now):
            await self._expire(payment, report)
            return
        if pending:
            report.still_pending += 1
        deadline_at = self._deadline(payment)
        options = self.options
        wait = recheck_delay(payment.check_count, options.recheck_interval, options.recheck_cap)
        next_check = min(now + timedelta(seconds=wait), deadline_at)
        await self.ledger.record_still_pending(payment.id, next_check)

    async def _unqueryable(self, payment: Payment, report: ReconcileReport) -> None:
        now = self._now()
        if self._past_deadline(payment, now):
            await self._expire(payment, report)
            return
        report.unqueryable += 1
        # Nothing can be asked; look again only at the deadline (a callback or a late
        # "accepted" may settle it before then).
        deadline_at = payment.created_at + timedelta(seconds=self.options.deadline)
        await self.ledger.record_still_pending(payment.id, deadline_at)

    async def _expire(self, payment: Payment, report: ReconcileReport) -> None:
        if payment.status not in _RECONCILABLE:
            # A settled payment whose evidence Daraja never confirmed: flag, don't expire.
            try:
                await self.ledger.abandon_verification(payment.id)
            except InvalidTransitionError as err:
                log.info("payment %s: verification already closed: %s", payment.id, err.detail)
                return
            report.abandoned += 1
            log.warning(
                "payment %s: Daraja never confirmed its success callback within %g s; flagged",
                payment.id,
                self.options.deadline,
            )
            return
        try:
            expired = await self.ledger.expire(payment.id)
        except InvalidTransitionError as err:
            # A callback settled it between our query and now: the answer won the race.
            log.info("payment %s settled before it could expire: %s", payment.id, err.detail)
            return
        if expired.status is PaymentStatus.FAILED and expired.failure_reason == "expired":
            report.expired += 1
            self.metrics.reconciler_expired.inc()
            log.warning(
                "payment %s expired: no final answer within %g s%s",
                payment.id,
                self.options.deadline,
                "" if payment.checkout_request_id else " (no CheckoutRequestID to query)",
            )

    async def _release(
        self, payments: list[Payment], next_check_at: datetime, report: ReconcileReport
    ) -> None:
        for payment in payments:
            await self.ledger.record_still_pending(payment.id, next_check_at)
            report.released += 1

    def _rate_limited(self) -> float:
        self._rate_limited_in_a_row += 1
        self.metrics.reconciler_rate_limited.inc()
        pause = self.options.backoff.delay(self._rate_limited_in_a_row, self._rng)
        self.bucket.pause(pause)
        return pause


def _is_success(response: StkQueryResponse) -> bool:
    return (response.result_code or "").strip() == "0"
