"""C2B receipts in the gateway: registering the URLs, verifying confirmations, lookups.

- :func:`register_c2b_urls` registers an account's ConfirmationURL and ValidationURL with
  Daraja (``pesa c2b register``); :class:`C2BRegistrar` does it in the background when the
  gateway starts, for every account with ``c2b_register``, retrying until Daraja answers.
- :class:`ReceiptVerifier` asks Daraja's Transaction Status about every confirmation the
  ledger wants verified (``verify_at``), at a bounded rate, re-asking when no Result comes,
  and gives up (flagging the receipt) after ``PESA_RECONCILE_DEADLINE``. Each query gets a
  ResultURL with a one-time secret of its own (``.../c2b/status/<secret>``), committed as a
  hash before the query leaves: a Result is believed only there, so whoever learnt the
  confirmation URL's token still cannot confirm a forged receipt.
- ``POST /v1/receipts/lookup`` uses :meth:`ReceiptVerifier.ask` for one receipt number.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Literal

import anyio

from pesa._bucket import SharedBucketState
from pesa._clock import Clock, require_clock
from pesa._exceptions import DarajaError, PesaError, RateLimitError, TransportError
from pesa._logging import get_logger
from pesa.client import Account, Accounts
from pesa.gateway._backoff import Backoff, RandomSource
from pesa.gateway._metrics import Metrics
from pesa.gateway._reconciler import ReconcilerOptions
from pesa.gateway._rounds import failure_backoff, run_rounds
from pesa.gateway._throttle import TokenBucket
from pesa.ledger import Receipt, ReceiptAccount, ReceiptQuery, VerifyPolicy

if TYPE_CHECKING:
    from pesa.gateway._accounts import AccountClients
    from pesa.gateway._app import GatewayUrls
    from pesa.ledger import Ledger

__all__ = [
    "C2BRegistrar",
    "Registration",
    "ReceiptVerifier",
    "VerifyReport",
    "receipt_account_resolver",
    "register_c2b_urls",
]

log = get_logger("pesa.gateway.receipts")

_REMARKS = "Receipt check"


def receipt_account_resolver(
    accounts: Accounts, policy: VerifyPolicy
) -> Callable[[str], ReceiptAccount]:
    """What the ledger needs to know of the account a C2B payment went to (by shortcode)."""

    def resolve(shortcode: str) -> ReceiptAccount:
        account = accounts.for_shortcode(shortcode)
        if account is None:
            return ReceiptAccount(None, verifiable=False)
        return ReceiptAccount(account.name, verifiable=account.has_initiator and policy != "never")

    return resolve


# -- registration ---------------------------------------------------------------------------


@dataclass(slots=True)
class Registration:
    """Where an account's C2B URL registration stands (shown by ``GET /v1/accounts``)."""

    status: Literal["pending", "registered", "failed"] = "pending"
    detail: str = ""
    at: datetime | None = None
    attempts: int = 0


async def register_c2b_urls(
    clients: AccountClients, account: Account, urls: GatewayUrls
) -> tuple[bool, str]:
    """Register ``account``'s C2B URLs with Daraja (``POST /mpesa/c2b/v{1,2}/registerurl``).

    Returns:
        ``(registered, detail)``. Production refuses a second registration ("already
        registered"): that counts as registered, the URLs being the same gateway's.

    Raises:
        ValidationError / ConfigurationError: the account or the URLs cannot be registered
            (no shortcode, a word Daraja refuses in a URL, no credentials).
        DarajaError / TransportError: Daraja refused or did not answer.
    """
    if account.shortcode is None:
        return False, f"account {account.name} has no shortcode to register"
    client = clients.for_account(account.name)
    try:
        answer = await client.c2b_register_urls(
            urls.c2b_confirmation,
            urls.c2b_validation,
            shortcode=account.shortcode,
            response_type=account.c2b_response_type,
            version=account.c2b_version,
        )
    except DarajaError as err:
        if "already registered" in (err.error_message or "").lower():
            return True, f"already registered (Daraja: {err.error_message})"
        raise
    return True, f"registered ({answer.response_description or answer.response_code})"


class C2BRegistrar:
    """Registers the C2B URLs of every account with ``c2b_register``, in the background.

    Daraja may be unreachable when the gateway starts; a failed attempt is retried with a
    growing pause (up to 5 minutes) until it succeeds, Daraja refuses the request itself
    (a 4xx), or the gateway stops.
    """

    def __init__(
        self,
        clients: AccountClients,
        urls: GatewayUrls,
        *,
        backoff: Backoff | None = None,
        rng: RandomSource | None = None,
    ) -> None:
        self.clients = clients
        self.urls = urls
        self.backoff = backoff or Backoff(base=2.0, cap=300.0)
        self._rng: RandomSource = rng if rng is not None else random.Random()
        self.registrations: dict[str, Registration] = {
            name: Registration() for name, a in clients.accounts.items() if a.c2b_register
        }

    async def run(self, stop: anyio.Event) -> None:
        """Register every account, then return (or when ``stop`` is set)."""
        async with anyio.create_task_group() as tg:
            for name in self.registrations:
                tg.start_soon(self._register, name, stop)

    async def _register(self, name: str, stop: anyio.Event) -> None:
        account = self.clients.accounts[name]
        record = self.registrations[name]
        while not stop.is_set():
            record.attempts += 1
            try:
                done, detail = await register_c2b_urls(self.clients, account, self.urls)
            except DarajaError as err:
                final = 400 <= err.status_code < 500 and not isinstance(err, RateLimitError)
                record.detail = f"Daraja refused the registration: {err}"
                if final and err.status_code not in (401, 404):
                    record.status, record.at = "failed", datetime.now(UTC)
                    log.error("C2B URLs of account %s not registered: %s", name, err)
                    return
            except PesaError as err:
                record.detail = f"{type(err).__name__}: {err}"
                if not isinstance(err, TransportError):
                    record.status, record.at = "failed", datetime.now(UTC)
                    log.error("C2B URLs of account %s cannot be registered: %s", name, err)
                    return
            else:
                record.status, record.detail, record.at = (
                    "registered" if done else "failed",
                    detail,
                    datetime.now(UTC),
                )
                log.info("C2B URLs of account %s: %s", name, detail)
                return
            pause = self.backoff.delay(record.attempts, self._rng)
            log.warning(
                "C2B URLs of account %s not registered yet (%s); trying again in %.0f s",
                name,
                record.detail,
                pause,
            )
            with anyio.move_on_after(pause):
                await stop.wait()


# -- verification ---------------------------------------------------------------------------


@dataclass(slots=True)
class VerifyReport:
    """What one verification round did."""

    claimed: int = 0
    asked: int = 0
    errors: int = 0
    rate_limited: int = 0
    abandoned: int = 0
    released: int = 0
    details: list[str] = field(default_factory=list)


class ReceiptVerifier:
    """Asks Daraja's Transaction Status about receipts (verification and lookups).

    Args:
        ledger: the open ledger.
        clients: one Daraja client per account (Transaction Status needs an initiator).
        urls: where the Results come back (the gateway's public URLs).
        options: pacing, shared with the reconciler's settings: ``query_rate`` and
            ``query_burst`` bound the queries, ``recheck_interval`` (growing by half up to
            ``recheck_cap``) is how long a Result may take before the question is asked
            again, ``deadline`` when to give up, ``lease`` how long a claim lasts.
        metrics: counters to update (``receipt_queries``).
        clock: where the time is read (:class:`pesa.daraja.Clock`); defaults to the
            ledger's clock, so the two agree.
    """

    def __init__(
        self,
        ledger: Ledger,
        clients: AccountClients,
        urls: GatewayUrls,
        *,
        options: ReconcilerOptions | None = None,
        metrics: Metrics | None = None,
        clock: Clock | None = None,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        rng: RandomSource | None = None,
        shared: SharedBucketState | None = None,
    ) -> None:
        self.ledger = ledger
        self.clients = clients
        self.urls = urls
        self.options = options or ReconcilerOptions()
        self.metrics = metrics if metrics is not None else Metrics()
        self._clock: Clock = require_clock(clock, ledger.clock)
        self.bucket = TokenBucket(
            self.options.query_rate,
            self.options.query_burst,
            clock=self._clock,
            sleep=sleep,
            shared=shared,
        )
        self._rng: RandomSource = rng if rng is not None else random.Random()
        self._recheck = Backoff(
            base=self.options.recheck_interval,
            cap=self.options.recheck_cap,
            factor=1.5,
            jitter=0.0,
        )
        self._failures = failure_backoff(self.options.interval)
        self._rate_limited_in_a_row = 0

    def _now(self) -> datetime:
        return self._clock.now()

    async def ask(self, query: ReceiptQuery, nonce: str) -> ReceiptQuery:
        """Send one Transaction Status query (already committed) and record Daraja's
        acknowledgement; the answer itself comes to the query's ResultURL.

        Returns:
            The query as recorded (``sent`` when acknowledged, else ``error`` or
            ``rate_limited``).

        Raises:
            RateLimitError, TransportError, DarajaError, PesaError: the query was not
                acknowledged (recorded on the query first).
        """
        account = self.clients.accounts.resolve(query.account)
        client = self.clients.for_account(account.name)
        await self.bucket.acquire()
        try:
            with anyio.fail_after(self.options.query_timeout):
                answer = await client.transaction_status(
                    transaction_id=query.trans_id,
                    shortcode=query.shortcode,
                    identifier_type="4",
                    remarks=_REMARKS,
                    result_url=self.urls.c2b_status(nonce),
                    timeout_url=self.urls.c2b_status_timeout(nonce),
                )
        except TimeoutError as err:
            await self._failed(query, "error", "no answer in time")
            raise TransportError(
                f"Transaction Status got no answer within {self.options.query_timeout:g} s"
            ) from err
        except RateLimitError as err:
            self._rate_limited()
            await self._failed(query, "rate_limited", str(err), err.error_code)
            raise
        except DarajaError as err:
            await self._failed(query, "error", str(err), err.error_code)
            raise
        except PesaError as err:
            await self._failed(query, "error", f"{type(err).__name__}: {err}")
            raise
        self._rate_limited_in_a_row = 0
        await self.ledger.receipts.record_query_sent(
            query.id,
            conversation_id=answer.conversation_id,
            originator_conversation_id=answer.originator_conversation_id,
        )
        self.metrics.receipt_queries.inc(purpose=query.purpose, outcome="sent")
        log.info(
            "Transaction Status about %s sent (%s, account %s)",
            query.trans_id,
            query.purpose,
            query.account,
        )
        return await self.ledger.receipts.get_query(query.id) or query

    async def _failed(
        self,
        query: ReceiptQuery,
        outcome: Literal["error", "rate_limited"],
        detail: str,
        code: str | None = None,
    ) -> None:
        self.metrics.receipt_queries.inc(purpose=query.purpose, outcome=outcome)
        log.warning("Transaction Status about %s not sent: %s", query.trans_id, detail)
        try:
            await self.ledger.receipts.record_query_error(
                query.id, outcome, detail, result_code=code
            )
        except Exception:  # the record must never cost the answer
            log.exception("could not record the failed query %s", query.id)

    def _rate_limited(self) -> float:
        self._rate_limited_in_a_row += 1
        pause = self.options.backoff.delay(self._rate_limited_in_a_row, self._rng)
        self.bucket.pause(pause)
        return pause

    # -- rounds ------------------------------------------------------------------------

    async def run_once(self) -> VerifyReport:
        """Claim the receipts due for a Transaction Status query and ask about each."""
        report = VerifyReport()
        lease = timedelta(seconds=self.options.lease)
        batch = await self.ledger.receipts.claim_for_verification(
            limit=self.options.batch_size, lease=lease
        )
        report.claimed = len(batch)
        for index, receipt in enumerate(batch):
            try:
                await self._verify(receipt, report)
            except RateLimitError:
                resume = self._now() + timedelta(seconds=self.bucket.wait_time())
                for rest in batch[index + 1 :]:
                    await self.ledger.receipts.schedule_verification(rest.id, resume)
                    report.released += 1
                break
        return report

    async def run(self, stop: anyio.Event) -> None:
        """Verify until ``stop`` is set; errors are logged, never raised."""

        async def round_() -> bool:
            report = await self.run_once()
            return report.claimed >= self.options.batch_size

        await run_rounds(
            "receipt verification",
            round_,
            stop,
            interval=self.options.interval,
            failure_backoff=self._failures,
            rng=self._rng,
        )

    async def _verify(self, receipt: Receipt, report: VerifyReport) -> None:
        now = self._now()
        since = receipt.verify_since or receipt.created_at
        if now >= since + timedelta(seconds=self.options.deadline):
            await self.ledger.receipts.abandon_verification(
                receipt.id, f"no answer within {self.options.deadline:g} s"
            )
            report.abandoned += 1
            log.warning("receipt %s: Daraja never confirmed it; flagged", receipt.id)
            return
        account = self.clients.accounts.get(receipt.account or "")
        if account is None or not account.has_initiator or account.shortcode is None:
            why = (
                f"account {receipt.account} has no initiator to ask Transaction Status"
                if account is not None
                else "its shortcode is not a configured account's"
            )
            await self.ledger.receipts.abandon_verification(receipt.id, why)
            report.abandoned += 1
            return
        query, nonce = await self.ledger.receipts.start_query(
            purpose="verify",
            trans_id=receipt.trans_id,
            account=account.name,
            shortcode=receipt.shortcode,
            receipt_id=receipt.id,
        )
        report.asked += 1
        # Whatever happens, ask again later unless the Result settles it first.
        wait = self._recheck.ceiling(max(receipt.check_count, 1))
        try:
            await self.ask(query, nonce)
        except RateLimitError:
            report.rate_limited += 1
            await self.ledger.receipts.schedule_verification(
                receipt.id, self._now() + timedelta(seconds=self.bucket.wait_time())
            )
            raise
        except PesaError as err:
            report.errors += 1
            report.details.append(f"{receipt.trans_id}: {err}")
        await self.ledger.receipts.schedule_verification(
            receipt.id, self._now() + timedelta(seconds=wait)
        )
