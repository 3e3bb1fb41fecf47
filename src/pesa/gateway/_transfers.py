"""Payouts and refunds: validate, commit the intent, send, record what Daraja answered.

The order is what makes a payout impossible to send twice:

1. validate everything before anything is stored (a 422 names the field and the rule);
2. commit the intent, keyed by the caller's idempotency key (a batch row by its batch id
   and row number), with its first attempt counted: a retried request finds the row and
   sends nothing;
3. send once, paced by a token bucket at ``PESA_PAYOUT_RATE`` (every B2C request of this
   process shares it, batches and API calls alike, so bulk sends stay under Daraja's spike
   arrest). The ``OriginatorConversationID`` is the payout's id: if a send's answer is lost
   and the payout is sent again (a crashed sender's claim ran out, or Transaction Status
   found nothing), Daraja refuses the copy as a duplicate instead of paying twice;
4. record the answer: accepted → ``pending`` with the ConversationID; refused → ``rejected``
   (only if no earlier send may have arrived); a duplicate or no answer → ``unknown``, which
   Transaction Status settles; spike arrest or no connection (the request provably never
   left) → handed back to be sent later, nothing counted.

Refunds (reversals) follow the same steps without step 3's re-send: a reversal has no
idempotency key at Daraja, so one that may have left is never sent again.
"""

from __future__ import annotations

import math
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

import anyio

from pesa._bucket import SharedBucketState
from pesa._clock import Clock, require_clock
from pesa._exceptions import (
    DarajaError,
    PesaError,
    RateLimitError,
    ValidationError,
)
from pesa._logging import get_logger, mask_phone
from pesa.config._settings import default_of
from pesa.gateway._backoff import Backoff, RandomSource
from pesa.gateway._rounds import failure_backoff, run_rounds
from pesa.gateway._throttle import TokenBucket
from pesa.ledger import (
    PaymentNotFoundError,
    Payout,
    PayoutSpec,
    ReceiptNotFoundError,
    Refund,
    TransferNotFoundError,
    classify_send_error,
    flag_late_transfer,
    next_transfer_check,
    transfer_deadline,
    transfer_grace,
)
from pesa.ledger import PayoutRequest as PurePayoutRequest

if TYPE_CHECKING:
    from pesa.client import AsyncDaraja
    from pesa.client._accounts import Account, Accounts
    from pesa.config import Settings
    from pesa.daraja import InitiatorResponse
    from pesa.gateway._accounts import AccountClients
    from pesa.ledger import Ledger

__all__ = [
    "InitiatorUrls",
    "PayoutRequest",
    "TransferChecker",
    "TransferOptions",
    "TransferSender",
    "classify_send_error",
    "payout_account",
]

log = get_logger("pesa.gateway.payouts")


def payout_account(accounts: Accounts, name: str | None) -> Account:
    """The account called ``name`` (``None``: the default one), able to pay out.

    Raises:
        ValidationError: no account has this name, or it has no shortcode or no initiator
            (field ``account``).
    """
    account = accounts.resolve(name)
    if account.shortcode is None or not account.has_initiator:
        raise ValidationError(
            "account",
            "must have a shortcode and an initiator (B2C, reversal and balance need both)",
            account.name,
        )
    return account


@dataclass(frozen=True, slots=True)
class InitiatorUrls:
    """Where Daraja POSTs the Results of the gateway's initiator requests.

    Each is ``<base>/<product>/result`` or ``/timeout``, under the secret callback path.
    """

    base: str

    def result(self, product: str) -> str:
        """The ResultURL of ``b2c``, ``reversal``, ``status`` or ``balance``."""
        return f"{self.base}/{product}/result"

    def timeout(self, product: str) -> str:
        """The QueueTimeOutURL of ``b2c``, ``reversal``, ``status`` or ``balance``."""
        return f"{self.base}/{product}/timeout"


@dataclass(frozen=True, slots=True)
class PayoutRequest:
    """A validated payout (the body of ``POST /v1/payouts`` or one batch row)."""

    phone: str
    amount: int
    command: str
    remarks: str
    occasion: str | None
    account: Account
    metadata: dict[str, Any] | None

    @classmethod
    def validate(
        cls,
        accounts: Accounts,
        *,
        phone: Any,
        amount: Any,
        command: Any = "BusinessPayment",
        remarks: Any,
        occasion: Any = None,
        account: Any = None,
        metadata: Any = None,
        prefix: str = "",
    ) -> PayoutRequest:
        """Check a payout with Daraja's B2C rules before anything is stored or sent.

        Raises:
            ValidationError: naming the field (``prefix`` + name) and the rule.
        """
        try:
            checked = PurePayoutRequest.validate(
                phone=phone,
                amount=amount,
                command=command,
                remarks=remarks,
                occasion=occasion,
                metadata=metadata,
            )
            return cls(
                phone=checked.phone,
                amount=checked.amount,
                command=checked.command,
                remarks=checked.remarks,
                occasion=checked.occasion,
                account=payout_account(accounts, account),
                metadata=checked.metadata,
            )
        except ValidationError as err:
            if not prefix:
                raise
            raise ValidationError(f"{prefix}{err.field}", err.rule) from err

    def spec(self) -> PayoutSpec:
        """The ledger's view of this payout."""
        return PayoutSpec(
            phone=self.phone,
            amount=self.amount,
            command_id=self.command,
            remarks=self.remarks,
            occasion=self.occasion,
            account=self.account.name,
            shortcode=self.account.shortcode or "",
            metadata=self.metadata,
        )


@dataclass(frozen=True, slots=True)
class TransferOptions:
    """How payouts and refunds are sent and checked (defaults are :class:`pesa.Settings`' own)."""

    rate: float = default_of("payout_rate")
    status_after: float = default_of("payout_status_after")
    deadline: float = default_of("payout_deadline")
    resend: bool = default_of("payout_resend")
    recheck_interval: float = default_of("reconcile_recheck_interval")
    recheck_cap: float = default_of("reconcile_recheck_cap")
    interval: float = default_of("reconcile_interval")
    lease: float = default_of("reconcile_lease")
    batch_size: int = default_of("reconcile_batch_size")
    stale_created_after: float = default_of("reconcile_stale_created_after")
    concurrency: int = 32
    backoff: Backoff = field(
        default_factory=lambda: Backoff(
            base=default_of("reconcile_backoff_base"), cap=default_of("reconcile_backoff_cap")
        )
    )

    @classmethod
    def from_settings(cls, settings: Settings) -> TransferOptions:
        """The options of ``PESA_PAYOUT_*`` (and the reconciler's pacing settings)."""
        return cls(
            rate=settings.payout_rate,
            status_after=settings.payout_status_after,
            deadline=settings.payout_deadline,
            resend=settings.payout_resend,
            recheck_interval=settings.reconcile_recheck_interval,
            recheck_cap=settings.reconcile_recheck_cap,
            interval=settings.reconcile_interval,
            lease=settings.reconcile_lease,
            batch_size=settings.reconcile_batch_size,
            stale_created_after=settings.reconcile_stale_created_after,
            backoff=Backoff(
                base=settings.reconcile_backoff_base, cap=settings.reconcile_backoff_cap
            ),
        )


class TransferSender:
    """Sends payouts (B2C) and refunds (reversals) and records Daraja's answers.

    Every B2C request of the process waits for a token of one bucket (``rate`` per
    second); the worker (:meth:`run`) sends the payouts that are due: batch rows, re-sends
    asked for by Transaction Status, and sends whose sender died holding the claim.

    Args:
        ledger: the open ledger.
        client: the Daraja client (B2C and reversal).
        settings: where accounts come from.
        urls: the ResultURL/QueueTimeOutURL base.
        options: pacing.
        rng: jitter for the failure backoff.
        shared: a shared state for the pace (every process spends one budget).
        clock: where the time is read; defaults to the ledger's.
    """

    def __init__(
        self,
        ledger: Ledger,
        clients: AccountClients,
        *,
        settings: Settings,
        urls: InitiatorUrls,
        options: TransferOptions,
        rng: RandomSource | None = None,
        shared: SharedBucketState | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.ledger = ledger
        self.clients = clients
        self.settings = settings
        self.urls = urls
        self.options = options
        # A burst of 2: a send the busy event loop made late lets the next one catch up, so
        # the average is the configured rate, while never more than 2 requests leave together.
        # ``shared``: the pace every process of the deployment spends (PESA_SHARED_STATE).
        self._clock: Clock = require_clock(clock, ledger.clock)
        self.bucket = TokenBucket(options.rate, 2, shared=shared, clock=self._clock)
        self._rng: RandomSource = rng if rng is not None else random.Random()
        self._failure_backoff = failure_backoff(options.interval)
        self._spiked_in_a_row = 0
        self.sent = 0
        """B2C requests this sender has sent (for the benchmark and metrics)."""

    # -- payouts ---------------------------------------------------------------------------

    async def create_payout(
        self, request: PayoutRequest, *, idempotency_key: str | None
    ) -> tuple[Payout, bool]:
        """Commit a payout and send it now (or return the one with this key, sending nothing).

        Returns:
            ``(payout, created)``.
        """
        payout, created = await self.ledger.payouts.create(
            idempotency_key, request.spec(), claim=timedelta(seconds=self.options.lease)
        )
        if not created:
            log.info("payout %s: idempotent retry, nothing sent", payout.id)
            return payout, False
        # Shielded: once the request is on its way, a cancelled HTTP request or a shutdown
        # must not prevent us from recording Daraja's answer.
        with anyio.CancelScope(shield=True):
            payout = await self.send_payout(payout)
        return payout, True

    async def send_payout(self, payout: Payout, *, paced: bool = True) -> Payout:
        """Send one claimed payout (its attempt already counted) and record the answer.

        ``paced=False``: the caller already took the payout's token from :attr:`bucket`.
        """
        if paced:
            await self.bucket.acquire()
        try:
            response = await self.clients.for_account(payout.account).b2c_payment(
                payout.phone,
                payout.amount,
                payout.remarks,
                originator_conversation_id=payout.originator_conversation_id,
                command_id=payout.command_id,
                occasion=payout.occasion,
                shortcode=payout.shortcode,
                result_url=self.urls.result("b2c"),
                timeout_url=self.urls.timeout("b2c"),
            )
        except Exception as err:  # every failure is classified: none may lose the payout
            return await self._payout_error(payout, err)
        self.sent += 1
        self._spiked_in_a_row = 0
        return await self._payout_accepted(payout, response)

    async def _payout_accepted(self, payout: Payout, response: InitiatorResponse) -> Payout:
        if not response.conversation_id:
            return await self.ledger.payouts.mark_unknown(
                payout.id, "Daraja accepted the request without a ConversationID"
            )
        log.info(
            "payout %s: accepted for %s (%s)",
            payout.id,
            mask_phone(payout.phone),
            response.conversation_id,
        )
        return await self.ledger.payouts.mark_accepted(
            payout.id, response.conversation_id, response.originator_conversation_id
        )

    async def _payout_error(self, payout: Payout, err: Exception) -> Payout:
        verdict, code, message = classify_send_error(err)
        payouts = self.ledger.payouts
        if verdict == "never_left":
            pause = self._pause(err)
            log.warning("payout %s not sent (%s); again in %.1f s", payout.id, code, pause)
            return await payouts.release_send(
                payout.id, self._clock.now() + timedelta(seconds=pause)
            )
        self.sent += 1
        if verdict == "duplicate":
            log.warning("payout %s: Daraja holds an earlier send (%s)", payout.id, code)
            return await payouts.mark_refused(payout.id, code, message, duplicate=True)
        if verdict == "refused":
            log.info("payout %s: refused [%s] %s", payout.id, code, message)
            return await payouts.mark_refused(payout.id, code, message)
        log.warning(
            "payout %s: outcome unknown (%s), settled by Transaction Status",
            payout.id,
            type(err).__name__,
        )
        return await payouts.mark_unknown(payout.id, message)

    def _pause(self, err: Exception) -> float:
        if isinstance(err, RateLimitError):
            self._spiked_in_a_row += 1
            pause = self.options.backoff.delay(self._spiked_in_a_row, self._rng)
            self.bucket.pause(pause)
            return pause
        return self.options.backoff.delay(1, self._rng)

    # -- refunds ---------------------------------------------------------------------------

    async def create_refund(
        self,
        payment_id: str,
        amount: int | None,
        *,
        remarks: str,
        idempotency_key: str | None,
        metadata: dict[str, Any] | None = None,
        source: Literal["payment", "receipt"] = "payment",
    ) -> tuple[Refund, bool]:
        """Commit a refund of a payment or a C2B receipt (within what remains) and send its
        reversal now.

        The reversal goes to the shortcode the money was paid to: the payment's account's,
        or the receipt's ``BusinessShortCode`` (whose account must have an initiator).

        Raises:
            PaymentNotFoundError / ReceiptNotFoundError: no such payment or receipt.
            ValidationError: the account cannot send reversals (field ``account``).
            RefundNotAllowedError: see :meth:`pesa.ledger.RefundBook.create`.
        """
        if source == "payment":
            payment = await self.ledger.get_payment(payment_id)
            if payment is None:
                raise PaymentNotFoundError(payment_id)
            account = payout_account(self.clients.accounts, payment.account)
            receiver = account.shortcode or ""
        else:
            receipt = await self.ledger.receipts.get_receipt(payment_id)
            if receipt is None:
                raise ReceiptNotFoundError(payment_id)
            owner = self.clients.accounts.for_shortcode(receipt.shortcode)
            name = receipt.account if owner is None else owner.name
            payout_account(self.clients.accounts, name)
            receiver = receipt.shortcode
        refund, created = await self.ledger.refunds.create(
            idempotency_key,
            payment_id,
            amount,
            remarks=remarks,
            receiver_party=receiver,
            partial=self.settings.refund_partial == "allow",
            claim=timedelta(seconds=self.options.lease),
            metadata=metadata,
            source=source,
        )
        if not created:
            log.info("refund %s: idempotent retry, nothing sent", refund.id)
            return refund, False
        with anyio.CancelScope(shield=True):
            refund = await self._send_refund(refund)
        return refund, True

    async def _send_refund(self, refund: Refund) -> Refund:
        refunds = self.ledger.refunds
        await self.bucket.acquire()
        try:
            client = self._refund_client(refund)
            response = await client.reversal(
                refund.original_receipt,
                refund.amount,
                receiver_party=refund.receiver_party,
                remarks=refund.remarks,
                result_url=self.urls.result("reversal"),
                timeout_url=self.urls.timeout("reversal"),
            )
        except Exception as err:  # every failure is classified: none may lose the refund
            verdict, code, message = classify_send_error(err)
            if verdict in ("never_left", "refused"):
                log.info("refund %s: not carried out [%s] %s", refund.id, code, message)
                return await refunds.mark_refused(refund.id, code, message)
            log.warning("refund %s: outcome unknown (%s)", refund.id, type(err).__name__)
            return await refunds.mark_unknown(refund.id, message)
        if not response.conversation_id:
            return await refunds.mark_unknown(
                refund.id, "Daraja accepted the reversal without a ConversationID"
            )
        log.info("refund %s: reversal accepted (%s)", refund.id, response.conversation_id)
        return await refunds.mark_accepted(
            refund.id, response.conversation_id, response.originator_conversation_id
        )

    def _refund_client(self, refund: Refund) -> AsyncDaraja:
        account = self.clients.accounts.for_shortcode(refund.receiver_party)
        return self.clients.for_account(None if account is None else account.name)

    # -- the worker ------------------------------------------------------------------------

    async def run_once(self) -> int:
        """Send the payouts that are due; returns how many were claimed.

        Rows are claimed a slice at a time, and the next slice is claimed while the last
        sends of the previous one wait for their turn in the bucket, so a long batch leaves
        at an even pace with no pause between slices.
        """
        options = self.options
        # Claim no more than can be sent well inside the claim's lease at this rate.
        limit = max(1, min(1000, int(options.rate * options.lease / 4)))
        lease = timedelta(seconds=options.lease)
        limiter = anyio.CapacityLimiter(options.concurrency)
        waiting = 0
        total = 0

        async def send(payout: Payout) -> None:
            nonlocal waiting
            async with limiter:
                await self.bucket.acquire()
                waiting -= 1
                try:
                    await self.send_payout(payout, paced=False)
                except Exception:  # one payout's bookkeeping error must not stop the rest
                    log.exception("payout %s: could not record the send", payout.id)

        async with anyio.create_task_group() as tg:
            while True:
                claimed = await self.ledger.payouts.claim_for_sending(limit=limit, lease=lease)
                total += len(claimed)
                waiting += len(claimed)
                for payout in claimed:
                    tg.start_soon(send, payout)
                if len(claimed) < limit:
                    break
                # Claim the next slice when this one is nearly out of the bucket.
                while waiting > max(1, limit // 4):
                    await anyio.sleep(min(0.5, 1 / options.rate))
        return total

    async def run(self, stop: anyio.Event) -> None:
        """Send due payouts until ``stop`` is set (rounds back to back while any are due)."""

        async def round_() -> bool:
            return await self.run_once() > 0

        await run_rounds(
            "payout sender",
            round_,
            stop,
            interval=min(self.options.interval, 1.0),
            failure_backoff=self._failure_backoff,
            rng=self._rng,
        )


class _RoundAborted(Exception):
    """Spike arrest: hand the rest of the round back."""


@dataclass(slots=True)
class CheckReport:
    """What one round of the transfer checker did."""

    claimed: int = 0
    queried: int = 0
    errors: int = 0
    rate_limited: int = 0
    expired: int = 0
    recovered: int = 0


class TransferChecker:
    """Settles payouts and refunds whose Result is late or lost, by Transaction Status.

    Each round claims open transfers that waited ``status_after`` seconds (or whose
    evidence awaits verification), and sends one Transaction Status query each, by the
    transfer's OriginatorConversationID, through the reconciler's token bucket (so STK and
    status queries of this process together stay within ``PESA_RECONCILE_QUERY_RATE``).
    The answer comes back by callback to ``/callbacks/<token>/status/result`` and is
    applied there. A transfer with no final answer past ``deadline`` is flagged and no
    longer checked.

    Args:
        ledger: the open ledger.
        client: the Daraja client (Transaction Status).
        bucket: the token bucket shared with the reconciler.
        urls: the ResultURL/QueueTimeOutURL base.
        options: pacing.
        clock: where the time is read (wall time for schedules, monotonic for the lease);
            defaults to the ledger's.
        sleep: how to wait (tests pass a fake).
        rng: jitter for the failure backoff.
    """

    def __init__(
        self,
        ledger: Ledger,
        clients: AccountClients,
        *,
        bucket: TokenBucket,
        urls: InitiatorUrls,
        options: TransferOptions,
        clock: Clock | None = None,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        rng: RandomSource | None = None,
    ) -> None:
        self.ledger = ledger
        self.clients = clients
        self.bucket = bucket
        self.urls = urls
        self.options = options
        self._clock: Clock = require_clock(clock, ledger.clock)
        self._sleep = sleep
        self._rng: RandomSource = rng if rng is not None else random.Random()
        self._failure_backoff = failure_backoff(options.interval)
        self._recheck = Backoff(
            base=options.recheck_interval, cap=options.recheck_cap, factor=1.5, jitter=0.0
        )
        self._spiked_in_a_row = 0
        # How long the last question, asked at the deadline, may take to be answered.
        self._grace = transfer_grace(options.status_after)

    async def run_once(self) -> CheckReport:
        """One round: recover stale refunds, claim due transfers, ask Transaction Status."""
        options = self.options
        report = CheckReport()
        recovered = await self.ledger.refunds.recover_stale_created(
            timedelta(seconds=options.stale_created_after)
        )
        report.recovered = len(recovered)
        lease = timedelta(seconds=options.lease)
        min_age = timedelta(seconds=options.status_after)
        started = self._clock.monotonic()
        payouts = await self.ledger.payouts.claim_for_checks(
            limit=options.batch_size, min_age=min_age, lease=lease
        )
        refunds = await self.ledger.refunds.claim_for_checks(
            limit=options.batch_size, min_age=min_age, lease=lease
        )
        batch: list[Payout | Refund] = [*payouts, *refunds]
        report.claimed = len(batch)
        for index, transfer in enumerate(batch):
            if self._clock.monotonic() - started > options.lease / 2:
                await self._release(batch[index:], self._clock.now())
                break
            try:
                await self._check(transfer, report)
            except _RoundAborted:
                resume = self._clock.now() + timedelta(seconds=self.bucket.wait_time())
                await self._release(batch[index + 1 :], resume)
                break
        return report
        return report

    async def run(self, stop: anyio.Event) -> None:
        """Check until ``stop`` is set."""

        async def round_() -> bool:
            report = await self.run_once()
            return report.claimed >= self.options.batch_size and not report.rate_limited

        await run_rounds(
            "transfer checker",
            round_,
            stop,
            interval=self.options.interval,
            failure_backoff=self._failure_backoff,
            rng=self._rng,
        )

    def _client(self, transfer: Payout | Refund) -> AsyncDaraja:
        if isinstance(transfer, Payout):
            client = self.clients.for_account(transfer.account)
        else:
            account = self.clients.accounts.for_shortcode(transfer.receiver_party)
            client = self.clients.for_account(None if account is None else account.name)
        # No retries inside the client: a spike arrest must reach the checker at once, which
        # pauses the shared bucket and reschedules, rather than block a round in backoff.
        return client.with_options(max_retries=0)

    def _book(self, transfer: Payout | Refund) -> Any:
        return self.ledger.payouts if isinstance(transfer, Payout) else self.ledger.refunds

    def _deadline(self, transfer: Payout | Refund) -> datetime:
        return transfer_deadline(
            created_at=transfer.created_at,
            first_sent_at=transfer.first_sent_at,
            verify_since=transfer.verify_since,
            settled=transfer.is_terminal,
            seconds=self.options.deadline,
        )

    async def _release(self, batch: list[Payout | Refund], when: datetime) -> None:
        for transfer in batch:
            await self._book(transfer).record_check(transfer.id, when)

    async def _check(self, transfer: Payout | Refund, report: CheckReport) -> None:
        book = self._book(transfer)
        statuses = self.ledger.status_queries
        now = self._clock.now()
        deadline = self._deadline(transfer)
        ocid = transfer.originator_conversation_id
        if now >= deadline:
            # Flag only after asking once more at the deadline and giving the answer time to
            # come: a checker behind on its work must not flag what Daraja would confirm.
            asked = await statuses.latest(transfer.id)
            if flag_late_transfer(
                now,
                deadline,
                grace=self._grace,
                asked_at=None if asked is None else asked.asked_at,
                asked_outcome=None if asked is None else asked.outcome,
                askable=ocid is not None,
            ):
                try:
                    await book.expire(transfer.id)
                except TransferNotFoundError:  # pragma: no cover - rows are never deleted
                    return
                report.expired += 1
                log.warning(
                    "%s %s: no final answer before the deadline; flagged", book.kind, transfer.id
                )
                return
        if ocid is None:
            # A refund whose answer was lost: nothing to ask by. Its Result may still adopt
            # it (by receipt and amount); otherwise it is flagged at the deadline.
            await book.record_check(transfer.id, deadline)
            return
        shortcode = transfer.shortcode if isinstance(transfer, Payout) else transfer.receiver_party
        await self.bucket.acquire()
        report.queried += 1
        try:
            response = await self._client(transfer).transaction_status(
                original_conversation_id=ocid,
                shortcode=shortcode,
                remarks="Status check",
                result_url=self.urls.result("status"),
                timeout_url=self.urls.timeout("status"),
            )
        except RateLimitError as err:
            report.rate_limited += 1
            self._spiked_in_a_row += 1
            pause = self.options.backoff.delay(self._spiked_in_a_row, self._rng)
            self.bucket.pause(pause)
            await statuses.record(
                transfer.id,
                by_originator_id=ocid,
                outcome="rate_limited",
                result_code=err.error_code,
            )
            await book.record_check(transfer.id, now + timedelta(seconds=pause))
            log.warning("Transaction Status refused by rate limiting; pausing %.1f s", pause)
            raise _RoundAborted from err
        except (PesaError, TimeoutError) as err:
            report.errors += 1
            code = err.error_code if isinstance(err, DarajaError) else None
            await statuses.record(
                transfer.id,
                by_originator_id=ocid,
                outcome="error",
                result_code=code,
                detail=str(err),
            )
            log.warning("Transaction Status for %s got no usable answer: %s", transfer.id, err)
        else:
            self._spiked_in_a_row = 0
            await statuses.record(
                transfer.id,
                by_originator_id=ocid,
                outcome="sent",
                conversation_id=response.conversation_id,
                originator_conversation_id=response.originator_conversation_id,
                resend=self.options.resend,
            )
        wait = self._recheck.ceiling(max(transfer.check_count, 1))
        await book.record_check(
            transfer.id, next_transfer_check(now, deadline, wait=wait, grace=self._grace)
        )


def retry_after(bucket: TokenBucket) -> int:
    """Whole seconds until ``bucket`` gives a token again (at least 1)."""
    return max(1, math.ceil(bucket.pause_remaining()))
