"""The gateway application factory: routes, and a lifespan that opens what they use.

``create_app(settings)`` returns a FastAPI app whose lifespan opens the ledger, the Daraja
client and the background workers (reconciler and webhook dispatcher), and closes them in
reverse order. In the ``emulator`` environment it also mounts the Daraja emulator at
``/emulator``, points the client at it and its callbacks back at this app, so that one
process runs everything.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import anyio
import httpx
from fastapi import FastAPI

from pesa._constants import BASE_URLS, DEFAULT_GATEWAY_HOST
from pesa._exceptions import ConfigurationError
from pesa._logging import get_logger
from pesa._version import __version__
from pesa.client import DEFAULT_ACCOUNT, Accounts, AsyncDaraja
from pesa.config import Settings
from pesa.daraja import C2B_URL_FORBIDDEN_WORDS
from pesa.gateway import _api, _c2b, _callbacks, _payout_api, _receipt_api, _results
from pesa.gateway._accounts import AccountClients, effective_accounts, emulator_passkeys
from pesa.gateway._c2b import C2BValidator, C2BValidatorRule
from pesa.gateway._dispatcher import HandlerMap, WebhookDispatcher, delivery_endpoints
from pesa.gateway._metrics import Metrics
from pesa.gateway._payments import PaymentCreator
from pesa.gateway._payout_api import PAYOUT_BATCHES_PATH
from pesa.gateway._pull import PullRecovery
from pesa.gateway._receipts import C2BRegistrar, ReceiptVerifier
from pesa.gateway._reconciler import Reconciler, ReconcilerOptions
from pesa.gateway._server import RequestGuard
from pesa.gateway._shared import SharedState, shared_state
from pesa.gateway._state import GatewayState
from pesa.gateway._transfers import (
    InitiatorUrls,
    TransferChecker,
    TransferOptions,
    TransferSender,
)
from pesa.gateway._trust import CallbackTrust
from pesa.gateway.dashboard import install_dashboard
from pesa.ledger import Ledger

if TYPE_CHECKING:
    from pesa.emulator import Emulator

__all__ = [
    "EMULATOR_MOUNT",
    "GatewayUrls",
    "check_settings",
    "check_worker_settings",
    "daraja_url",
    "create_app",
    "gateway_urls",
    "run_workers",
]

log = get_logger("pesa.gateway")

EMULATOR_MOUNT = "/emulator"
# Once asked to stop, workers get this long to finish their batch before being cancelled.
_WORKER_GRACE_SECONDS = 5.0
_WORKER_RESTART_DELAY = 1.0


def check_settings(settings: Settings) -> None:
    """Refuse to run a real-money gateway that is open or unreachable.

    In ``sandbox`` and ``production`` the REST API needs a bearer key, the callback route a
    secret token, Daraja a public URL to call back (HTTPS in production), and the client
    its credentials (consumer key and secret, shortcode, passkey).

    Raises:
        ConfigurationError: naming every missing ``PESA_*`` variable.
    """
    accounts = Accounts.from_settings(settings)  # every account problem at once
    if settings.c2b_verify == "always":
        unverifiable = [
            name for name, a in accounts.items() if a.c2b_register and not a.has_initiator
        ]
        if unverifiable:
            raise ConfigurationError(
                "c2b_verify is 'always' (PESA_C2B_VERIFY) but these accounts register C2B "
                f"URLs without an initiator to ask Transaction Status: {', '.join(unverifiable)}"
            )
    if settings.env == "emulator":
        return
    # Every missing one at once: a sandbox set up one restart per variable is no fun.
    gateway = ("api_key", "callback_token", "public_url")
    client = ("consumer_key", "consumer_secret", "shortcode", "passkey")
    settings.require_all(*(gateway if settings.accounts_file is not None else (*gateway, *client)))
    _check_real_accounts(accounts)
    public_url = settings.require("public_url")
    scheme = urlsplit(public_url).scheme
    if scheme not in ("http", "https"):
        raise ConfigurationError(
            f"public_url must be an http(s) URL (PESA_PUBLIC_URL), got {public_url!r}"
        )
    if settings.env == "production" and scheme != "https":
        raise ConfigurationError("public_url must be https in production (PESA_PUBLIC_URL)")
    token = settings.require("callback_token")
    if len(token) < 16:
        raise ConfigurationError(
            "callback_token must be at least 16 characters (PESA_CALLBACK_TOKEN); "
            "generate one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )


def _random_token() -> str:
    """A callback token Daraja accepts in C2B URLs too (no ``exe``, ``sql``, ``cmd``...)."""
    while True:
        token = secrets.token_urlsafe(24)
        if not any(word in token.lower() for word in C2B_URL_FORBIDDEN_WORDS):
            return token


def check_worker_settings(settings: Settings) -> None:
    """What ``pesa worker`` needs: valid accounts, and outside the emulator their
    credentials (the reconciler's queries need them).

    Raises:
        ConfigurationError: every account problem at once, or the missing variable.
    """
    accounts = Accounts.from_settings(settings)
    if settings.env == "emulator":
        return
    if settings.accounts_file is None:
        settings.require_all("consumer_key", "consumer_secret", "shortcode", "passkey")
    _check_real_accounts(accounts)


def _check_real_accounts(accounts: Accounts) -> None:
    """Outside the emulator every account needs its app's credentials and a shortcode."""
    problems = []
    for account in accounts.values():
        missing = [
            key
            for key in ("consumer_key", "consumer_secret", "shortcode")
            if getattr(account, key) is None
        ]
        if missing:
            variables = (
                " (" + ", ".join(f"PESA_{key.upper()}" for key in missing) + ")"
                if account.name == DEFAULT_ACCOUNT
                else ""
            )
            problems.append(
                f"accounts.{account.name}: {', '.join(missing)} "
                f"{'is' if len(missing) == 1 else 'are'} required outside the emulator{variables}"
            )
    if problems:
        raise ConfigurationError(
            f"{len(problems)} account problem{'s' if len(problems) > 1 else ''}:\n"
            + "\n".join(f"  - {p}" for p in problems)
        )


@dataclass(frozen=True, slots=True)
class GatewayUrls:
    """Where a gateway can be reached.

    Attributes:
        public: the base URL Daraja and users reach the gateway at.
        callback: the STK CallBackURL given to Daraja (contains the secret token).
        emulator: the base URL of the mounted emulator, if any.
    """

    public: str
    callback: str
    emulator: str | None

    @property
    def callbacks(self) -> str:
        """The base of every callback URL (``<public>/callbacks/<token>``)."""
        return self.callback.rsplit("/", 1)[0]

    @property
    def c2b_confirmation(self) -> str:
        """The C2B ConfirmationURL registered with Daraja."""
        return f"{self.callbacks}/c2b/confirmation"

    @property
    def c2b_validation(self) -> str:
        """The C2B ValidationURL registered with Daraja."""
        return f"{self.callbacks}/c2b/validation"

    def c2b_status(self, nonce: str) -> str:
        """The ResultURL of one Transaction Status query (``nonce`` is its own secret)."""
        return f"{self.callbacks}/c2b/status/{nonce}"

    def c2b_status_timeout(self, nonce: str) -> str:
        """The QueueTimeOutURL of one Transaction Status query."""
        return f"{self.callbacks}/c2b/status/{nonce}/timeout"

    @property
    def initiator(self) -> InitiatorUrls:
        """The ResultURL and QueueTimeOutURL of payouts, refunds, their status and balance."""
        return InitiatorUrls(self.callbacks)


def gateway_urls(settings: Settings, callback_token: str) -> GatewayUrls:
    """Work out the public, callback and emulator URLs of a gateway from its settings.

    Without ``public_url`` (only allowed in ``emulator``) the gateway is reached at its own
    bind address; a wildcard bind (``0.0.0.0``) is reached on loopback.
    """
    if settings.public_url:
        public = settings.public_url.rstrip("/")
    else:
        host = settings.gateway_host
        if host in ("0.0.0.0", "::", ""):
            host = DEFAULT_GATEWAY_HOST
        if ":" in host:
            host = f"[{host}]"
        public = f"http://{host}:{settings.gateway_port}"
    emulator = f"{public}{EMULATOR_MOUNT}" if settings.env == "emulator" else None
    return GatewayUrls(
        public=public, callback=f"{public}/callbacks/{callback_token}/stk", emulator=emulator
    )


async def _supervise(
    name: str, run: Callable[[anyio.Event], Awaitable[Any]], stop: anyio.Event
) -> None:
    # A crashing worker must not take the API down with it: log, pause, start again.
    while not stop.is_set():
        try:
            await run(stop)
        except Exception:
            log.exception("%s crashed; restarting in %.0fs", name, _WORKER_RESTART_DELAY)
            with anyio.move_on_after(_WORKER_RESTART_DELAY):
                await stop.wait()
        else:
            return


Worker = tuple[str, Callable[[anyio.Event], Awaitable[Any]]]


async def _run_until_stopped(workers: Sequence[Worker], stop: anyio.Event) -> None:
    async with anyio.create_task_group() as tg:
        for name, run in workers:
            tg.start_soon(_supervise, name, run, stop)
        await stop.wait()
        # Workers finish the batch in hand (a claim, a query, a delivery), then stop.
        tg.cancel_scope.deadline = anyio.current_time() + _WORKER_GRACE_SECONDS


async def run_workers(
    settings: Settings,
    stop: anyio.Event,
    *,
    handlers: HandlerMap | None = None,
) -> None:
    """Run the reconciler, the webhook dispatcher, the receipt verifier (and the Pull
    Transactions job, when ``PESA_C2B_PULL_INTERVAL`` is set) until ``stop`` is
    set (``pesa worker``).

    Opens its own ledger (``PESA_DATABASE_URL``) and Daraja client (``PESA_BASE_URL``, or
    the environment's default: ``pesa emulator`` on port 8100 in ``emulator``). Several
    such processes can share one PostgreSQL ledger: work is claimed with
    ``FOR UPDATE SKIP LOCKED``.
    """
    async with AsyncExitStack() as stack:
        endpoints = delivery_endpoints(settings.webhook_urls, handlers)
        ledger = await open_ledger(settings, endpoints)
        stack.push_async_callback(ledger.close)
        shared = shared_state(settings, ledger)
        clients = AccountClients.build(
            settings,
            effective_accounts(settings),
            emulator_url=_served_emulator_url(settings),
            token_store=shared.tokens,
        )
        stack.push_async_callback(clients.aclose)
        metrics = Metrics()
        reconciler = _build_reconciler(settings, ledger, clients, metrics, shared)
        dispatcher = _build_dispatcher(settings, ledger, handlers, metrics)
        stack.push_async_callback(dispatcher.aclose)
        workers: list[Worker] = [
            ("reconciler", reconciler.run),
            ("webhook dispatcher", dispatcher.run),
        ]
        if settings.c2b_pull_interval > 0:
            workers.append(
                ("Pull Transactions", build_pull_recovery(settings, ledger, clients).run)
            )
        if settings.callback_token is not None:
            # The Results of its Transaction Status queries go to the gateway's URLs, which
            # this process knows only when the callback token is configured.
            urls = gateway_urls(settings, settings.callback_token.get_secret_value())
            verifier = _build_verifier(settings, ledger, clients, urls, metrics, shared)
            sender, checker = _build_transfers(settings, ledger, clients, urls, reconciler, shared)
            workers += [
                ("receipt verifier", verifier.run),
                ("payout sender", sender.run),
                ("transfer checker", checker.run),
            ]
        else:
            log.warning(
                "PESA_CALLBACK_TOKEN is not set: this worker does not verify C2B receipts, "
                "send payouts nor check them (the gateway process does)"
            )
        await _run_until_stopped(workers, stop)


def _served_emulator_url(settings: Settings) -> str | None:
    # The emulator `pesa serve` mounts, as reached with these settings (emulator only).
    return gateway_urls(settings, "-").emulator


def daraja_url(settings: Settings) -> str:
    """The Daraja base URL the gateway's (or a worker's) client uses, for banners and hints."""
    if settings.base_url:
        return settings.base_url.rstrip("/")
    return _served_emulator_url(settings) or BASE_URLS[settings.env]


async def open_ledger(settings: Settings, webhook_endpoints: Sequence[str]) -> Ledger:
    """Open the ledger of ``PESA_DATABASE_URL`` with the gateway's mismatch policy."""
    return await Ledger.open(
        settings.database_url,
        webhook_endpoints=webhook_endpoints,
        on_mismatch=settings.callback_on_mismatch,
        c2b_verify=settings.c2b_verify,
        notify=settings.webhook_notify,
    )


def create_app(
    settings: Settings | None = None,
    *,
    ledger: Ledger | None = None,
    client: AsyncDaraja | None = None,
    emulator: Emulator | None = None,
    handlers: HandlerMap | None = None,
    c2b_validator: C2BValidator | None = None,
) -> FastAPI:
    """Build the gateway ASGI app.

    Args:
        settings: the configuration; ``Settings()`` (the environment) when omitted.
        ledger: an open ledger to use instead of opening ``settings.database_url`` (the
            caller then owns it, and its migrations).
        client: a Daraja client to use instead of building one from the settings.
        emulator: the emulator to mount at ``/emulator`` in the ``emulator`` environment
            (one configured by the ``PESA_EMULATOR_*`` settings when omitted).
        handlers: Python event handlers: event type (``"payment.succeeded"``, or ``"*"``)
            → a callable or several, sync or async, called at least once per event.
        c2b_validator: the Python rule that accepts or rejects C2B payments when
            ``PESA_C2B_VALIDATION=handler``: it gets a :class:`pesa.gateway.C2BValidation`
            and returns a :class:`pesa.gateway.ValidationVerdict` (or a bool), sync or async.

    Returns:
        The FastAPI app; ``app.state.urls`` is its :class:`GatewayUrls`.

    Raises:
        ConfigurationError: in ``sandbox``/``production`` without an API key, a callback
            token and a public URL.

    Example:
        >>> app = create_app(Settings(env="emulator"))
        >>> # uvicorn.run(app)  -- or: pesa serve
    """
    settings = settings if settings is not None else Settings()
    check_settings(settings)
    accounts = effective_accounts(settings)
    mounted: Emulator | None = None
    if settings.env == "emulator":
        if emulator is None:
            # Imported here: only the emulator environment mounts one.
            from pesa.emulator import Emulator, config_from_settings

            emulator = Emulator(config_from_settings(settings, **_emulator_overrides(accounts)))
        mounted = emulator
    token_secret = settings.callback_token
    # In the emulator a fresh random token per start is as good as a configured one.
    token = token_secret.get_secret_value() if token_secret else _random_token()
    trust = CallbackTrust.build(
        token,
        allowlist_mode=settings.callback_allowlist,
        allowed_ips=settings.callback_allowed_ips,
        trusted_proxies=settings.trusted_proxies,
    )
    urls = gateway_urls(settings, token)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            state = await _open(
                settings,
                urls,
                trust,
                stack,
                accounts,
                ledger,
                client,
                mounted,
                handlers,
                c2b_validator,
            )
            app.state.gateway = state
            stop = anyio.Event()
            async with anyio.create_task_group() as workers:
                running: list[Worker] = []
                if state.registrar.registrations:
                    # Whatever run_workers says: each gateway registers its URLs at start.
                    running.append(("C2B registration", state.registrar.run))
                if settings.run_workers:
                    running += [
                        ("reconciler", state.reconciler.run),
                        ("webhook dispatcher", state.dispatcher.run),
                        ("receipt verifier", state.verifier.run),
                        ("payout sender", state.sender.run),
                        ("transfer checker", state.checker.run),
                    ]
                    if settings.c2b_pull_interval > 0:
                        pull = build_pull_recovery(settings, state.ledger, state.clients)
                        running.append(("Pull Transactions", pull.run))
                if running:
                    workers.start_soon(_run_until_stopped, running, stop)
                try:
                    yield
                finally:
                    stop.set()

    app = FastAPI(
        title="pesa gateway",
        version=__version__,
        description="M-Pesa payments with a durable ledger: STK push, callbacks, webhooks.",
        lifespan=lifespan,
    )
    _api.install_error_handlers(app)
    # Outermost of the app's own middleware: the key and the body cap come before any route.
    app.add_middleware(
        RequestGuard,
        api_key=settings.api_key.get_secret_value() if settings.api_key else None,
        max_body=settings.api_max_body_bytes,
        larger={PAYOUT_BATCHES_PATH: settings.batch_max_body_bytes},
    )
    # First: routes are matched in order, and the STK callback is the hot path under load
    # (every route tried before it costs a regex match per callback).
    app.include_router(_callbacks.router)
    app.include_router(_api.router)
    app.include_router(_receipt_api.router)
    app.include_router(_payout_api.router)
    app.include_router(_c2b.router)
    app.include_router(_results.router)
    if settings.dashboard:
        install_dashboard(app, settings)
    app.state.urls = urls
    if mounted is not None:
        app.mount(EMULATOR_MOUNT, mounted.app)
    if settings.env == "emulator" and not settings.public_url:
        # The URLs above assume PESA_GATEWAY_PORT; served elsewhere (uvicorn --port 9000),
        # the first request tells the real port and every URL follows it.
        app.add_middleware(
            _ServedAddress,
            settings=settings,
            token=token,
            rebase_clients=not settings.base_url,
        )
    return app


class _ServedAddress:
    """ASGI middleware: adopt the port the app is really served on, from the first request.

    Without ``PESA_PUBLIC_URL`` (emulator only) the callback URL and the mounted
    emulator's URL are derived from ``PESA_GATEWAY_PORT``. ``pesa serve`` keeps them
    true; ``uvicorn.run(create_app(...), port=9000)`` does not, and every payment would
    fail to reach the emulator. The first HTTP request names the real address. (C2B URLs
    registered at start before it used the guess: ``pesa c2b register`` registers again.)
    """

    def __init__(self, app: Any, *, settings: Settings, token: str, rebase_clients: bool) -> None:
        self.app = app
        self.settings = settings
        self.token = token
        self.rebase_clients = rebase_clients
        self.checked = False

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if not self.checked and scope["type"] == "http":
            server = scope.get("server")
            if server and server[1]:
                self.checked = True
                self._adopt(scope["app"], int(server[1]))
        await self.app(scope, receive, send)

    def _adopt(self, app: FastAPI, port: int) -> None:
        if port == self.settings.gateway_port:
            return
        urls = gateway_urls(self.settings.model_copy(update={"gateway_port": port}), self.token)
        app.state.urls = urls
        state: GatewayState | None = getattr(app.state, "gateway", None)
        if state is None:
            return
        state.public_url = urls.public
        state.callback_url = urls.callback
        state.emulator_url = urls.emulator
        state.urls = urls
        state.verifier.urls = urls
        state.registrar.urls = urls
        state.initiator_urls = state.sender.urls = state.checker.urls = urls.initiator
        if self.rebase_clients and urls.emulator is not None:
            state.clients.rebase(urls.emulator)
        state.creator = PaymentCreator(
            state.ledger, state.clients.default, callback_url=urls.callback, clients=state.clients
        )
        log.warning(
            "served on port %d, not PESA_GATEWAY_PORT=%d: callbacks and the emulator now use "
            "%s (set PESA_GATEWAY_PORT or PESA_PUBLIC_URL to say so up front)",
            port,
            self.settings.gateway_port,
            urls.public,
        )


def _emulator_overrides(accounts: Accounts) -> dict[str, Any]:
    """What the mounted emulator must know of the accounts: STK passkeys, C2B shortcodes."""
    from pesa.emulator._models import SANDBOX_SHORTCODES

    shortcodes = dict.fromkeys(SANDBOX_SHORTCODES)
    for account in accounts.values():
        shortcodes.update(dict.fromkeys(account.c2b_shortcodes))
    return {"passkeys": emulator_passkeys(accounts), "shortcodes": tuple(shortcodes)}


async def _open(
    settings: Settings,
    urls: GatewayUrls,
    trust: CallbackTrust,
    stack: AsyncExitStack,
    accounts: Accounts,
    ledger: Ledger | None,
    client: AsyncDaraja | None,
    emulator: Emulator | None,
    handlers: HandlerMap | None,
    c2b_validator: C2BValidator | None = None,
) -> GatewayState:
    if ledger is None:
        endpoints = delivery_endpoints(settings.webhook_urls, handlers)
        ledger = await open_ledger(settings, endpoints)
        stack.push_async_callback(ledger.close)
        if settings.auto_migrate:
            await ledger.migrate()
    if emulator is not None:
        await stack.enter_async_context(emulator)
    shared = shared_state(settings, ledger)
    clients = AccountClients.build(
        settings,
        accounts,
        emulator_url=urls.emulator,
        callback_url=urls.callback,
        default_client=client,
        emulator_certificate=None if emulator is None else emulator.certificate_pem,
        token_store=shared.tokens,
    )
    stack.push_async_callback(clients.aclose)
    metrics = Metrics()
    reconciler = _build_reconciler(settings, ledger, clients, metrics, shared)
    dispatcher = _build_dispatcher(settings, ledger, handlers, metrics)
    stack.push_async_callback(dispatcher.aclose)
    verifier = _build_verifier(settings, ledger, clients, urls, metrics, shared)
    sender, checker = _build_transfers(settings, ledger, clients, urls, reconciler, shared)
    http: httpx.AsyncClient | None = None
    if settings.c2b_validation == "http":
        # Its own pool: a slow merchant rule must not hold webhook connections.
        http = httpx.AsyncClient(timeout=settings.c2b_validation_timeout)
        stack.push_async_callback(http.aclose)
    validator = C2BValidatorRule(settings, ledger, handler=c2b_validator, http=http)
    api_key = settings.api_key.get_secret_value() if settings.api_key else None
    if api_key is None:
        log.warning("PESA_API_KEY is not set: the REST API is open (emulator only)")
    return GatewayState(
        settings=settings,
        ledger=ledger,
        client=clients.default,
        creator=PaymentCreator(
            ledger, clients.default, callback_url=urls.callback, clients=clients
        ),
        reconciler=reconciler,
        dispatcher=dispatcher,
        trust=trust,
        metrics=metrics,
        accounts=accounts,
        clients=clients,
        api_key=api_key,
        callback_url=urls.callback,
        public_url=urls.public,
        emulator_url=urls.emulator,
        urls=urls,
        verifier=verifier,
        validator=validator,
        registrar=C2BRegistrar(clients, urls),
        sender=sender,
        checker=checker,
        initiator_urls=urls.initiator,
    )


def _build_reconciler(
    settings: Settings,
    ledger: Ledger,
    clients: AccountClients,
    metrics: Metrics,
    shared: SharedState,
) -> Reconciler:
    return Reconciler(
        ledger, clients, settings=settings, metrics=metrics, shared=shared.budget("queries")
    )


def _build_verifier(
    settings: Settings,
    ledger: Ledger,
    clients: AccountClients,
    urls: GatewayUrls,
    metrics: Metrics,
    shared: SharedState,
) -> ReceiptVerifier:
    options = ReconcilerOptions.from_settings(settings)
    return ReceiptVerifier(
        ledger,
        clients,
        urls,
        options=options,
        metrics=metrics,
        shared=shared.budget("receipt-queries"),
    )


def build_pull_recovery(
    settings: Settings, ledger: Ledger, clients: AccountClients
) -> PullRecovery:
    """The Pull Transactions job of these settings (``PESA_C2B_PULL_*``)."""
    return PullRecovery(
        ledger,
        clients,
        window=timedelta(seconds=settings.c2b_pull_window),
        interval=settings.c2b_pull_interval,
        policy=settings.c2b_verify,
    )


def _build_transfers(
    settings: Settings,
    ledger: Ledger,
    clients: AccountClients,
    urls: GatewayUrls,
    reconciler: Reconciler,
    shared: SharedState,
) -> tuple[TransferSender, TransferChecker]:
    options = TransferOptions.from_settings(settings)
    sender = TransferSender(
        ledger,
        clients,
        settings=settings,
        urls=urls.initiator,
        options=options,
        shared=shared.budget("payouts"),
    )
    # One bucket for every query: STK and Transaction Status together stay within
    # PESA_RECONCILE_QUERY_RATE (across every process when the state is shared).
    checker = TransferChecker(
        ledger, clients, bucket=reconciler.bucket, urls=urls.initiator, options=options
    )
    return sender, checker


def _build_dispatcher(
    settings: Settings,
    ledger: Ledger,
    handlers: HandlerMap | None,
    metrics: Metrics,
) -> WebhookDispatcher:
    return WebhookDispatcher(ledger, handlers=handlers, settings=settings, metrics=metrics)
