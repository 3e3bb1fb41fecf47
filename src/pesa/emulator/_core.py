"""What every emulated product shares: configuration, clock, ids, rules, books and callbacks."""

from __future__ import annotations

import asyncio
import contextlib
import random
import ssl
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from pesa._clock import Clock
from pesa._logging import get_logger
from pesa.daraja import NAIROBI
from pesa.emulator import _daraja as daraja
from pesa.emulator import _validate as v
from pesa.emulator._books import Books, Transaction
from pesa.emulator._delivery import CallbackDelivery
from pesa.emulator._models import EmulatorConfig
from pesa.emulator._rules import Outcome, RuleBook
from pesa.emulator._validate import Refusal

__all__ = ["Core", "evict_oldest"]

_log = get_logger("pesa.emulator")


class Core:
    """The services an emulated Daraja product is built on (one per :class:`Emulator`).

    Attributes:
        config: the emulator's configuration.
        ids: Daraja's id formats (receipts, ConversationIDs, ...), seeded by ``config.seed``.
        rng: the one seeded random source (ids and fault draws share it: deterministic).
        rules: the active rules; ``rules.outcome(...)`` decides how a request ends.
        books: accounts and completed transactions, shared by every product.
        delivery: the callback client and its records.
        max_kept: how many finished payments a product keeps queryable.
    """

    def __init__(
        self,
        config: EmulatorConfig,
        clock: Clock,
        callback_verify: bool | ssl.SSLContext,
    ) -> None:
        self.config = config
        self._clock = clock
        self.rng = random.Random(config.seed)
        self.ids = daraja.IdFactory(self.rng)
        self.delivery = CallbackDelivery(
            timeout=config.callback_timeout,
            retries=config.callback_retries,
            retry_delay=config.callback_retry_delay,
            max_records=config.max_records,
            verify=callback_verify,
        )
        self.rules = RuleBook()
        self.books = Books(config)
        self.max_kept = config.max_records * 10
        self._tasks: set[asyncio.Task[None]] = set()
        # Products told of every completed C2B payment (Bill Manager matches invoices).
        self.c2b_listeners: list[Callable[[Transaction], None]] = []

    def c2b_completed(self, txn: Transaction) -> None:
        """A customer's C2B payment completed (the money is in the books): tell listeners."""
        for listener in self.c2b_listeners:
            listener(txn)

    @property
    def clock(self) -> Clock:
        """The emulator's clock (tests may freeze it): token lifetimes, rates, dates."""
        return self._clock

    def now(self) -> datetime:
        """The current Nairobi time (Daraja's clock; tests may freeze it)."""
        return self._clock.now().astimezone(NAIROBI)

    def known_shortcode(self, code: str) -> bool:
        """Whether ``code`` is a configured organisation or STK shortcode."""
        return code in self.config.shortcodes or code in self.config.passkeys

    def org_shortcode(self, value: Any, field: str) -> str:
        """An organisation shortcode field: well-formed (5-7 digits), and in strict mode one
        the emulator was configured with. Lenient mode accepts any well-formed shortcode, so
        code written for a developer's own sandbox test shortcode (600996, ...) just works."""
        code = v.shortcode(value, field)
        if self.config.strict and not self.known_shortcode(code):
            raise Refusal(daraja.bad_request(field))
        return code

    # -- background work: simulated customers and callback deliveries ------------------------

    def spawn(self, coro: Awaitable[None]) -> None:
        """Run ``coro`` in the background; :meth:`wait_idle` waits for it, stop cancels it."""
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            _log.error("emulator background task failed", exc_info=task.exception())

    @property
    def pending_tasks(self) -> int:
        return len(self._tasks)

    async def cancel_tasks(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    async def wait_idle(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self._tasks:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            await asyncio.wait(list(self._tasks), timeout=remaining)
        return True

    async def send(
        self,
        outcome: Outcome | None,
        kind: str,
        url: str,
        timeout_url: str | None,
        payload: dict[str, Any],
    ) -> bool:
        """Deliver a callback as the outcome's ``callback`` action says (drop, duplicate, ...).

        Returns whether a copy reached ``url`` (a 2xx answer).
        """
        action = outcome.callback if outcome is not None else "deliver"
        if action == "drop":
            return False
        if action == "timeout":
            if timeout_url is not None:
                await self.delivery.post("queue_timeout", timeout_url, payload)
            # (STK and C2B have no QueueTimeOutURL: a timed-out one sends nothing.)
            return False
        if action == "delay" and outcome is not None and outcome.callback_delay > 0:
            await asyncio.sleep(outcome.callback_delay)
        delivered = (await self.delivery.post(kind, url, payload)).delivered
        if action == "duplicate":
            delivered = (await self.delivery.post(kind, url, payload)).delivered or delivered
        return delivered


def evict_oldest(table: dict[str, Any], limit: int, done: Callable[[Any], bool]) -> None:
    """Drop the oldest entry of an insertion-ordered table over ``limit`` once it is done."""
    if len(table) > limit:
        oldest = next(iter(table))
        if done(table[oldest]):
            del table[oldest]
