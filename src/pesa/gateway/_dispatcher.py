"""The webhook dispatcher: delivers outbox events to webhook URLs and Python handlers.

Every transition the ledger records writes an event, and for each event one delivery row
per endpoint (in the same transaction). The dispatcher claims due deliveries, sends them,
and records the outcome:

- **At least once.** A delivery is marked delivered only after the receiver answered 2xx
  (or the handler returned). A crash in between means it is sent again after its lease
  expires, so receivers de-duplicate on the event ``id``; they never miss one.
- **Signed.** Webhook bodies carry ``Pesa-Signature`` (see :func:`pesa.verify_webhook`).
- **Retried with backoff**, exponential with jitter and capped, up to ``max_attempts``; the
  last failure is recorded on the delivery (status ``failed``, ``last_error``) and counted.
- **Python handlers** registered on the app are endpoints too (``python:<module>.<name>``),
  so a failing handler is retried exactly like a webhook, independently of the others.
- **One lane per endpoint.** Each endpoint's deliveries are claimed and sent on their own,
  so a receiver that hangs until the timeout delays only its own deliveries.
- **Several processes** can dispatch at once: deliveries are claimed through the ledger
  (``FOR UPDATE SKIP LOCKED`` on PostgreSQL) with a lease, and a delivery is only started
  while enough of its lease remains to finish it, so two dispatchers never send the same
  delivery at the same time.
"""

from __future__ import annotations

import inspect
import random
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Final, Literal, TypeAlias, cast

import anyio
import anyio.to_thread
import httpx

from pesa._clock import Clock, require_clock
from pesa._exceptions import ConfigurationError, ValidationError
from pesa._logging import get_logger, redact
from pesa._version import __version__
from pesa._webhooks import SIGNATURE_HEADER, sign_webhook
from pesa.config._settings import default_of
from pesa.gateway._backoff import Backoff, RandomSource
from pesa.gateway._metrics import Metrics
from pesa.gateway._rounds import failure_backoff, run_rounds
from pesa.gateway._wake import listen_for_outbox
from pesa.ledger import EventType

if TYPE_CHECKING:
    from pesa.config import Settings
    from pesa.ledger import Delivery, Event, Ledger

__all__ = [
    "DispatchReport",
    "DispatcherOptions",
    "EventHandler",
    "HANDLER_ENDPOINT_PREFIX",
    "WebhookDispatcher",
    "delivery_endpoints",
    "handler_endpoint",
]

log = get_logger("pesa.gateway.webhooks")

HANDLER_ENDPOINT_PREFIX: Final = "python:"
# What a handler delivery records as its status code once the handler returned: 204, "done,
# nothing to say", the closest HTTP meaning (the ledger's column is an HTTP status).
HANDLER_DONE_STATUS: Final = 204
ALL_EVENTS: Final = "*"

EventHandler: TypeAlias = Callable[["Event"], Awaitable[None] | None]
"""A Python event handler: called with the ledger :class:`~pesa.ledger.Event`; sync or async."""

HandlerMap: TypeAlias = Mapping[str, EventHandler | Sequence[EventHandler]]
"""Event type (``"payment.succeeded"``, or ``"*"`` for every event) → handler(s)."""

Kind = Literal["webhook", "handler"]

# Bytes of a failing receiver's answer kept in ``last_error`` (enough to diagnose, bounded).
_ERROR_BODY_LIMIT: Final = 200


def handler_endpoint(handler: EventHandler) -> str:
    """The endpoint name under which ``handler``'s deliveries are stored.

    It is ``python:<module>.<qualified name>``, stable across restarts so that deliveries
    left pending by one process are picked up by the next.

    Example:
        >>> def on_paid(event): ...
        >>> handler_endpoint(on_paid)
        'python:pesa.gateway._dispatcher.on_paid'
    """
    module = getattr(handler, "__module__", None) or "unknown"
    name = getattr(handler, "__qualname__", None) or getattr(handler, "__name__", None)
    if name is None:
        # A callable instance: name it after its class.
        name = type(handler).__qualname__
    return f"{HANDLER_ENDPOINT_PREFIX}{module}.{name}"


def _normalise_handlers(handlers: HandlerMap | None) -> dict[str, tuple[EventHandler, set[str]]]:
    """endpoint → (handler, event types it wants)."""
    table: dict[str, tuple[EventHandler, set[str]]] = {}
    known_types = {str(t) for t in EventType} | {ALL_EVENTS}
    for event_type, value in (handlers or {}).items():
        if event_type not in known_types:
            # A typo ("payment.succeded") would otherwise mean a handler that never runs.
            raise ValidationError(
                "handlers",
                f"keys are event types ({', '.join(sorted(known_types))})",
                event_type,
            )
        callables: Iterable[EventHandler] = [value] if callable(value) else value
        for handler in callables:
            if not callable(handler):
                raise ValidationError(
                    "handlers", f"the handler for {event_type} must be callable", handler
                )
            endpoint = handler_endpoint(handler)
            known = table.get(endpoint)
            if known is not None and known[0] is not handler:
                raise ValidationError(
                    "handlers",
                    f"two different handlers share the endpoint name {endpoint!r}; "
                    "give them distinct names",
                )
            table.setdefault(endpoint, (handler, set()))[1].add(event_type)
    return table


def delivery_endpoints(
    webhook_urls: Sequence[str], handlers: HandlerMap | None = None
) -> list[str]:
    """Every endpoint the ledger must create deliveries for: the URLs, then the handlers.

    Pass the result to ``Ledger.open(url, webhook_endpoints=...)`` so that each event gets
    one delivery row per webhook URL and per Python handler.
    """
    endpoints = list(dict.fromkeys(webhook_urls))
    endpoints.extend(e for e in _normalise_handlers(handlers) if e not in endpoints)
    return endpoints


@dataclass(frozen=True, slots=True)
class DispatcherOptions:
    """How the dispatcher paces and retries (defaults match :class:`pesa.Settings`).

    Attributes:
        max_attempts: attempts per delivery before giving up (the give-up is recorded).
        timeout: seconds a receiver (or handler) has to answer one attempt.
        backoff: the retry schedule.
        batch_size: deliveries claimed per round.
        concurrency: deliveries in flight at once, per endpoint.
        lease: seconds a claimed delivery stays reserved to this dispatcher.
        interval: seconds between polls when the outbox is empty: the safety net, since
            a commit that writes deliveries wakes the dispatcher at once.
        listen: on PostgreSQL, LISTEN for the ledger's ``NOTIFY pesa_outbox`` on a
            connection of its own, so commits in other processes wake it too.
    """

    max_attempts: int = default_of("webhook_max_attempts")
    timeout: float = default_of("webhook_timeout")
    backoff: Backoff = Backoff(
        base=default_of("webhook_backoff_base"), cap=default_of("webhook_backoff_cap")
    )
    batch_size: int = default_of("webhook_batch_size")
    concurrency: int = default_of("webhook_concurrency")
    lease: float = default_of("webhook_lease")
    interval: float = default_of("webhook_interval")
    listen: bool = default_of("webhook_notify")

    def __post_init__(self) -> None:
        for name in ("max_attempts", "batch_size", "concurrency"):
            if getattr(self, name) < 1:
                raise ValidationError(name, "must be 1 or more", getattr(self, name))
        if not 0 < self.timeout < self.lease:
            raise ValidationError(
                "timeout", "must be positive and shorter than the lease", self.timeout
            )
        if not self.interval > 0:
            raise ValidationError("interval", "must be greater than 0", self.interval)

    @classmethod
    def from_settings(cls, settings: Settings) -> DispatcherOptions:
        """The options set by ``PESA_WEBHOOK_*`` settings."""
        return cls(
            max_attempts=settings.webhook_max_attempts,
            timeout=settings.webhook_timeout,
            backoff=Backoff(base=settings.webhook_backoff_base, cap=settings.webhook_backoff_cap),
            batch_size=settings.webhook_batch_size,
            concurrency=settings.webhook_concurrency,
            lease=settings.webhook_lease,
            interval=settings.webhook_interval,
            listen=settings.webhook_notify,
        )


@dataclass(slots=True)
class DispatchReport:
    """What one dispatcher round did.

    Attributes:
        claimed: deliveries claimed from the ledger.
        delivered: delivered now (2xx, or the handler returned).
        retrying: failed now, scheduled for another attempt.
        gave_up: failed on their last attempt (recorded as ``failed``).
        skipped: left for a later round because too little of the lease remained.
    """

    claimed: int = 0
    delivered: int = 0
    retrying: int = 0
    gave_up: int = 0
    skipped: int = 0


class _AttemptFailed(Exception):
    """One attempt failed; the message is what gets recorded as ``last_error``."""

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class WebhookDispatcher:
    """Delivers the ledger's events to webhook URLs and Python handlers, at least once.

    Args:
        ledger: the open :class:`~pesa.ledger.Ledger` (its ``webhook_endpoints`` decide
            which deliveries exist; see :func:`delivery_endpoints`).
        secret: the webhook signing secret, or several (newest first) during a rotation.
            Required when any delivery goes to a URL.
        http_client: the client to POST with; one is created (and closed) when omitted.
        handlers: event type (or ``"*"``) → handler or handlers; sync handlers run in a
            worker thread. The ledger must write deliveries for them (see
            :func:`delivery_endpoints`), or :class:`pesa.ConfigurationError` is raised.
        options: pacing and retries; from ``settings`` when omitted.
        settings: used for ``options`` and the secret when those are not given.
        metrics: counters to update (``webhook_attempts``, ``webhook_gave_up``).
        clock: where the time is read (:class:`pesa.daraja.Clock`): ``now()`` for retry
            schedules and signatures, ``monotonic()`` for leases. Defaults to the ledger's.

    Example:
        >>> dispatcher = WebhookDispatcher(ledger, secret="whsec_...")  # doctest: +SKIP
        >>> report = await dispatcher.run_once()                          # doctest: +SKIP
    """

    def __init__(
        self,
        ledger: Ledger,
        *,
        secret: str | Sequence[str] | None = None,
        http_client: httpx.AsyncClient | None = None,
        handlers: HandlerMap | None = None,
        options: DispatcherOptions | None = None,
        settings: Settings | None = None,
        metrics: Metrics | None = None,
        clock: Clock | None = None,
        rng: RandomSource | None = None,
    ) -> None:
        if options is None:
            options = (
                DispatcherOptions.from_settings(settings)
                if settings is not None
                else DispatcherOptions()
            )
        if secret is None and settings is not None and settings.webhook_secret is not None:
            rotation = [settings.webhook_secret.get_secret_value()]
            if settings.webhook_previous_secret is not None:
                rotation.append(settings.webhook_previous_secret.get_secret_value())
            secret = rotation
        self.ledger = ledger
        self.options = options
        self.metrics = metrics if metrics is not None else Metrics()
        self._secret: list[str] = (
            [] if secret is None else [secret] if isinstance(secret, str) else list(secret)
        )
        self._handlers = _normalise_handlers(handlers)
        missing = [e for e in self._handlers if e not in ledger.webhook_endpoints]
        if missing:
            # Without delivery rows a handler would silently never run.
            raise ConfigurationError(
                f"the ledger writes no deliveries for handler(s) {', '.join(missing)}: open "
                "it with webhook_endpoints=delivery_endpoints(webhook_urls, handlers)"
            )
        self._http = http_client
        self._owns_http = http_client is None
        self._clock: Clock = require_clock(clock, ledger.clock)
        self._rng: RandomSource = rng if rng is not None else random.Random()
        # Pauses after a failed round (database unreachable, ...): from one interval (at
        # most 5 s: a long poll interval is no reason to wait long after an outage) up.
        base = min(options.interval, 5.0)
        self._failure_backoff = failure_backoff(base, cap=60.0)

    @property
    def handler_endpoints(self) -> list[str]:
        """The endpoint names of the registered Python handlers."""
        return list(self._handlers)

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(
                timeout=httpx.Timeout(self.options.timeout), follow_redirects=False
            )
        return self._http

    async def aclose(self) -> None:
        """Close the HTTP client if the dispatcher created it."""
        if self._owns_http and self._http is not None:
            await self._http.aclose()
            self._http = None

    async def __aenter__(self) -> WebhookDispatcher:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- one round ---------------------------------------------------------------------

    async def run_once(
        self, *, endpoint: str | None = None, exclude_endpoints: Sequence[str] = ()
    ) -> DispatchReport:
        """Claim due deliveries, attempt each once, record the outcomes.

        Args:
            endpoint: only this endpoint's deliveries (what :meth:`run` does per endpoint).
            exclude_endpoints: none of these endpoints' deliveries.
        """
        options = self.options
        report = DispatchReport()
        claimed_at = self._clock.monotonic()
        batch = await self.ledger.claim_deliveries(
            limit=options.batch_size,
            lease=timedelta(seconds=options.lease),
            endpoint=endpoint,
            exclude_endpoints=exclude_endpoints,
        )
        report.claimed = len(batch)
        if not batch:
            return report
        # Start a delivery only while it can still finish inside its lease: after that
        # another dispatcher may claim it, and the same delivery must never be in flight
        # twice at once. A skipped delivery simply returns when its lease expires.
        deadline = claimed_at + options.lease - options.timeout - 1.0
        limiter = anyio.Semaphore(options.concurrency)

        async def one(delivery: Delivery, acknowledged: dict[str, int]) -> None:
            async with limiter:
                if self._clock.monotonic() >= deadline:
                    report.skipped += 1
                    return
                await self._deliver(delivery, report, acknowledged)

        acknowledged: dict[str, int] = {}
        try:
            async with anyio.create_task_group() as tg:
                for delivery in batch:
                    tg.start_soon(one, delivery, acknowledged)
        finally:
            # One write for the round's successes, even when the round is being cancelled
            # (a shutdown). Should it fail (or the process die first), those deliveries are
            # sent again when their lease ends: at least once.
            if acknowledged:
                with anyio.move_on_after(self.options.timeout, shield=True):
                    await self.ledger.mark_delivered_many(acknowledged)
        return report

    async def run(self, stop: anyio.Event) -> None:
        """Dispatch until ``stop`` is set. Errors are logged, never raised.

        Each endpoint the ledger writes deliveries for has its own lane (rounds back to
        back while it has work, at most ``concurrency`` deliveries in flight), and one more
        lane serves deliveries left for endpoints no longer configured. A receiver that
        hangs until the timeout therefore delays only its own deliveries, never another
        endpoint's. An idle lane waits for the ledger's outbox signal (a commit in this
        process, or on PostgreSQL a ``NOTIFY pesa_outbox`` from any process), or
        ``interval`` seconds at most.
        """
        endpoints = list(self.ledger.webhook_endpoints)
        async with anyio.create_task_group() as tg:
            if self.options.listen and self.ledger.notify:
                tg.start_soon(listen_for_outbox, self.ledger, stop)
            for endpoint in endpoints:
                tg.start_soon(self._run_lane, stop, endpoint, (), True)
            # New deliveries go to the configured endpoints: the lane of leftovers only
            # polls, so that a wake-up costs one claim per endpoint, not one more.
            tg.start_soon(self._run_lane, stop, None, endpoints, False)

    async def _run_lane(
        self,
        stop: anyio.Event,
        endpoint: str | None,
        exclude_endpoints: Sequence[str],
        woken: bool,
    ) -> None:
        async def round_() -> bool:
            report = await self.run_once(endpoint=endpoint, exclude_endpoints=exclude_endpoints)
            return report.claimed >= self.options.batch_size and not report.skipped

        await run_rounds(
            "webhook dispatcher",
            round_,
            stop,
            interval=self.options.interval,
            failure_backoff=self._failure_backoff,
            rng=self._rng,
            wake=self.ledger.outbox_signal if woken else None,
        )

    # -- one delivery ------------------------------------------------------------------

    async def _deliver(
        self, delivery: Delivery, report: DispatchReport, acknowledged: dict[str, int]
    ) -> None:
        # The ledger counts an attempt when it hands the delivery out (so an attempt cut
        # short by a crash still counts): ``attempts`` already includes this one.
        attempt = max(delivery.attempts, 1)
        kind: Kind = (
            "handler" if delivery.endpoint.startswith(HANDLER_ENDPOINT_PREFIX) else "webhook"
        )
        try:
            with anyio.fail_after(self.options.timeout):
                if kind == "handler":
                    status_code = await self._call_handler(delivery)
                else:
                    status_code = await self._post(delivery, attempt)
        except _AttemptFailed as err:
            await self._failed(delivery, kind, attempt, str(err), report, err.status_code)
            return
        except TimeoutError:
            await self._failed(
                delivery, kind, attempt, f"no answer within {self.options.timeout:g} s", report
            )
            return
        acknowledged[delivery.id] = status_code  # recorded with the round's others
        self.metrics.webhook_attempts.inc(kind=kind, outcome="delivered")
        report.delivered += 1
        log.info(
            "delivered %s %s to %s (attempt %d)",
            delivery.event.type,
            delivery.event.id,
            _describe(delivery.endpoint),
            attempt,
        )

    async def _post(self, delivery: Delivery, attempt: int) -> int:
        if not self._secret:
            raise _AttemptFailed("no webhook secret configured (PESA_WEBHOOK_SECRET)")
        event = delivery.event
        body = event.payload
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"pesa-webhooks/{__version__}",
            SIGNATURE_HEADER: sign_webhook(
                body, self._secret, timestamp=int(self._clock.now().timestamp())
            ),
            "Pesa-Event-Id": event.id,
            "Pesa-Event-Type": event.type,
            "Pesa-Delivery-Id": delivery.id,
            "Pesa-Delivery-Attempt": str(attempt),
        }
        try:
            async with self._client().stream(
                "POST", delivery.endpoint, content=body, headers=headers
            ) as response:
                if 200 <= response.status_code < 300:
                    return response.status_code
                # Keep the start of a failing answer for last_error; never read a huge body.
                start = b""
                async for chunk in response.aiter_bytes():
                    start += chunk
                    if len(start) >= _ERROR_BODY_LIMIT:
                        break
        except httpx.TimeoutException as err:
            raise _AttemptFailed(f"timed out: {type(err).__name__}") from err
        except httpx.HTTPError as err:
            raise _AttemptFailed(f"{type(err).__name__}: {err}") from err
        snippet = start[:_ERROR_BODY_LIMIT].decode("utf-8", "replace").strip()
        detail = f": {snippet}" if snippet else ""
        raise _AttemptFailed(f"HTTP {response.status_code}{detail}", response.status_code)

    async def _call_handler(self, delivery: Delivery) -> int:
        entry = self._handlers.get(delivery.endpoint)
        if entry is None:
            # Another process registered this handler; this one cannot run it. Counted as a
            # failed attempt so that a handler removed for good is eventually given up on.
            raise _AttemptFailed(
                f"no handler {delivery.endpoint.removeprefix(HANDLER_ENDPOINT_PREFIX)!r} "
                "is registered in this process"
            )
        handler, event_types = entry
        event = delivery.event
        if ALL_EVENTS not in event_types and event.type not in event_types:
            return HANDLER_DONE_STATUS  # not subscribed to this event type: nothing to do
        try:
            if _is_async(handler):
                await cast(Awaitable[None], handler(event))
            else:
                # A sync handler must not block the event loop. On timeout the thread is
                # abandoned (Python cannot kill it) and the attempt counts as failed.
                result = await anyio.to_thread.run_sync(handler, event, abandon_on_cancel=True)
                if inspect.isawaitable(result):
                    await result
        except Exception as err:  # a handler's bug is its delivery's failure
            raise _AttemptFailed(f"{type(err).__name__}: {err}") from err
        return HANDLER_DONE_STATUS

    async def _failed(
        self,
        delivery: Delivery,
        kind: Kind,
        attempt: int,
        error: str,
        report: DispatchReport,
        status_code: int | None = None,
    ) -> None:
        error = redact(error)
        self.metrics.webhook_attempts.inc(kind=kind, outcome="failed")
        where = _describe(delivery.endpoint)
        if attempt >= self.options.max_attempts:
            await self.ledger.mark_delivery_failed(
                delivery.id, error, None, status_code=status_code
            )
            self.metrics.webhook_gave_up.inc(kind=kind)
            report.gave_up += 1
            log.error(
                "gave up delivering %s %s to %s after %d attempts: %s",
                delivery.event.type,
                delivery.event.id,
                where,
                attempt,
                error,
            )
            return
        delay = self.options.backoff.delay(attempt, self._rng)
        next_attempt_at = self._clock.now() + timedelta(seconds=delay)
        await self.ledger.mark_delivery_failed(
            delivery.id, error, next_attempt_at, status_code=status_code
        )
        report.retrying += 1
        log.warning(
            "delivery of %s %s to %s failed (attempt %d of %d), retrying in %.0f s: %s",
            delivery.event.type,
            delivery.event.id,
            where,
            attempt,
            self.options.max_attempts,
            delay,
            error,
        )


def _is_async(handler: EventHandler) -> bool:
    # Async functions, partials of them, and instances with an ``async def __call__``.
    call = getattr(handler, "__call__", None)  # noqa: B004 - looking for async __call__
    return inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(call)


def _describe(endpoint: str) -> str:
    # Webhook URLs may carry credentials in their query string; log scheme, host and path.
    if endpoint.startswith(HANDLER_ENDPOINT_PREFIX):
        return endpoint
    try:
        url = httpx.URL(endpoint)
    except (httpx.InvalidURL, ValueError):
        return "<invalid endpoint URL>"
    return f"{url.scheme}://{url.host}{':' + str(url.port) if url.port else ''}{url.path}"
