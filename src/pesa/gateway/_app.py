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
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import anyio
from fastapi import FastAPI

from pesa._constants import BASE_URLS, DEFAULT_GATEWAY_HOST
from pesa._exceptions import ConfigurationError
from pesa._logging import get_logger
from pesa._version import __version__
from pesa.client import AsyncDaraja
from pesa.config import Settings
from pesa.daraja import (
    SANDBOX_PASSKEY,
    SANDBOX_STK_SHORTCODE,
    bundled_certificate,
    security_credential,
)
from pesa.gateway import _api, _callbacks, _payout_api, _results
from pesa.gateway._dispatcher import HandlerMap, WebhookDispatcher, delivery_endpoints
from pesa.gateway._metrics import Metrics
from pesa.gateway._payments import PaymentCreator
from pesa.gateway._payout_api import PAYOUT_BATCHES_PATH
from pesa.gateway._reconciler import Reconciler
from pesa.gateway._server import RequestGuard
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
    "create_app",
    "daraja_url",
    "gateway_urls",
    "run_workers",
]

log = get_logger("pesa.gateway")

EMULATOR_MOUNT = "/emulator"
EMULATOR_CONSUMER_KEY = "pesa-emulator"
EMULATOR_CONSUMER_SECRET = "pesa-emulator"  # a public placeholder, not a secret
# The public sandbox initiator (REFERENCE §2), which the emulator knows.
SANDBOX_INITIATOR = "testapi"
SANDBOX_INITIATOR_PASSWORD = "Safaricom999!*!"  # published test data, not a secret
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
    if settings.env == "emulator":
        return
    # Every missing one at once: a sandbox set up one restart per variable is no fun.
    settings.require_all(
        "api_key",
        "callback_token",
        "public_url",
        "consumer_key",
        "consumer_secret",
        "shortcode",
        "passkey",
    )
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


@dataclass(frozen=True, slots=True)
class GatewayUrls:
    """Where a gateway can be reached.

    Attributes:
        public: the base URL Daraja and users reach the gateway at.
        callback: the STK CallBackURL given to Daraja (contains the secret token).
        emulator: the base URL of the mounted emulator, if any.
        results: where initiator Results go (``<results>/b2c/result``, ...; contains the
            secret token).
    """

    public: str
    callback: str
    emulator: str | None
    results: str = ""

    @property
    def initiator(self) -> InitiatorUrls:
        """The ResultURL and QueueTimeOutURL of each initiator product."""
        return InitiatorUrls(self.results)


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
        public=public,
        callback=f"{public}/callbacks/{callback_token}/stk",
        emulator=emulator,
        results=f"{public}/callbacks/{callback_token}",
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
    """Run the reconciler and webhook dispatcher until ``stop`` is set (``pesa worker``).

    Opens its own ledger (``PESA_DATABASE_URL``) and Daraja client (``PESA_BASE_URL``, or
    the environment's default; in ``emulator``, the emulator that ``pesa serve`` with the
    same settings mounts at ``/emulator``, so that a worker beside it needs no
    ``PESA_BASE_URL``). Several
    such processes can share one PostgreSQL ledger: work is claimed with
    ``FOR UPDATE SKIP LOCKED``.
    """
    async with AsyncExitStack() as stack:
        endpoints = delivery_endpoints(settings.webhook_urls, handlers)
        ledger = await open_ledger(settings, endpoints)
        stack.push_async_callback(ledger.close)
        client = build_client(settings, emulator_url=_served_emulator_url(settings))
        stack.push_async_callback(client.aclose)
        metrics = Metrics()
        reconciler = _build_reconciler(settings, ledger, client, metrics)
        dispatcher = _build_dispatcher(settings, ledger, handlers, metrics)
        stack.push_async_callback(dispatcher.aclose)
        workers: list[Worker] = [
            ("reconciler", reconciler.run),
            ("webhook dispatcher", dispatcher.run),
        ]
        if settings.callback_token is not None:
            # Results of payouts and status queries must reach the gateway's callback path,
            # which only a configured token makes known to this process.
            urls = gateway_urls(settings, settings.require("callback_token"))
            sender, checker = _build_transfers(settings, ledger, client, urls, reconciler)
            workers += [("payout sender", sender.run), ("transfer checker", checker.run)]
        else:
            log.warning(
                "PESA_CALLBACK_TOKEN is not set: this worker does not send payouts nor check "
                "them (their Results could not reach the gateway)"
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
    )


def create_app(
    settings: Settings | None = None,
    *,
    ledger: Ledger | None = None,
    client: AsyncDaraja | None = None,
    emulator: Emulator | None = None,
    handlers: HandlerMap | None = None,
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
    mounted: Emulator | None = None
    if settings.env == "emulator":
        if emulator is None:
            # Imported here: only the emulator environment mounts one.
            from pesa.emulator import Emulator, config_from_settings

            emulator = Emulator(config_from_settings(settings))
        mounted = emulator
    token_secret = settings.callback_token
    # In the emulator a fresh random token per start is as good as a configured one.
    token = token_secret.get_secret_value() if token_secret else secrets.token_urlsafe(24)
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
            state = await _open(settings, urls, trust, stack, ledger, client, mounted, handlers)
            app.state.gateway = state
            stop = anyio.Event()
            async with anyio.create_task_group() as workers:
                if settings.run_workers:
                    workers.start_soon(_run_until_stopped, _workers(state), stop)
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
    app.include_router(_api.router)
    app.include_router(_payout_api.router)
    app.include_router(_callbacks.router)
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
            rebase_client=client is None and not settings.base_url,
        )
    return app


class _ServedAddress:
    """ASGI middleware: adopt the port the app is really served on, from the first request.

    Without ``PESA_PUBLIC_URL`` (emulator only) the callback URL and the mounted
    emulator's URL are derived from ``PESA_GATEWAY_PORT``. ``pesa serve`` keeps them
    true; ``uvicorn.run(create_app(...), port=9000)`` does not, and every payment would
    fail to reach the emulator. The first HTTP request names the real address.
    """

    def __init__(self, app: Any, *, settings: Settings, token: str, rebase_client: bool) -> None:
        self.app = app
        self.settings = settings
        self.token = token
        self.rebase_client = rebase_client
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
        state.creator = PaymentCreator(state.ledger, state.client, callback_url=urls.callback)
        if self.rebase_client and urls.emulator is not None:
            state.client._rebase(urls.emulator)
        log.warning(
            "served on port %d, not PESA_GATEWAY_PORT=%d: callbacks and the emulator now use "
            "%s (set PESA_GATEWAY_PORT or PESA_PUBLIC_URL to say so up front)",
            port,
            self.settings.gateway_port,
            urls.public,
        )


async def _open(
    settings: Settings,
    urls: GatewayUrls,
    trust: CallbackTrust,
    stack: AsyncExitStack,
    ledger: Ledger | None,
    client: AsyncDaraja | None,
    emulator: Emulator | None,
    handlers: HandlerMap | None,
) -> GatewayState:
    if ledger is None:
        endpoints = delivery_endpoints(settings.webhook_urls, handlers)
        ledger = await open_ledger(settings, endpoints)
        stack.push_async_callback(ledger.close)
        if settings.auto_migrate:
            await ledger.migrate()
    if emulator is not None:
        await stack.enter_async_context(emulator)
    if client is None:
        client = build_client(
            settings, emulator_url=urls.emulator, callback_url=urls.callback, emulator=emulator
        )
        stack.push_async_callback(client.aclose)
    metrics = Metrics()
    reconciler = _build_reconciler(settings, ledger, client, metrics)
    dispatcher = _build_dispatcher(settings, ledger, handlers, metrics)
    stack.push_async_callback(dispatcher.aclose)
    sender, checker = _build_transfers(settings, ledger, client, urls, reconciler)
    api_key = settings.api_key.get_secret_value() if settings.api_key else None
    if api_key is None:
        log.warning("PESA_API_KEY is not set: the REST API is open (emulator only)")
    return GatewayState(
        settings=settings,
        ledger=ledger,
        client=client,
        creator=PaymentCreator(ledger, client, callback_url=urls.callback),
        reconciler=reconciler,
        dispatcher=dispatcher,
        sender=sender,
        checker=checker,
        initiator_urls=urls.initiator,
        trust=trust,
        metrics=metrics,
        api_key=api_key,
        callback_url=urls.callback,
        public_url=urls.public,
        emulator_url=urls.emulator,
    )


def build_client(
    settings: Settings,
    *,
    emulator_url: str | None = None,
    callback_url: str | None = None,
    emulator: Emulator | None = None,
) -> AsyncDaraja:
    """The gateway's Daraja client, from the settings.

    In ``emulator`` it talks to ``emulator_url`` (the mounted emulator) unless
    ``PESA_BASE_URL`` points elsewhere (an emulator in its own process), and falls back on
    the public sandbox shortcode and passkey, a placeholder consumer key, and the sandbox
    initiator (``testapi``) with a SecurityCredential encrypted for the mounted emulator
    (or, for an emulator in its own process, the bundled sandbox certificate, which a
    lenient emulator accepts): a fresh checkout needs no credentials at all.
    """
    overrides: dict[str, Any] = {}
    if callback_url is not None:
        overrides["callback_url"] = callback_url
    if settings.env == "emulator":
        if settings.base_url is None and emulator_url is not None:
            overrides["base_url"] = emulator_url
        if settings.shortcode is None or settings.passkey is None:
            overrides["shortcode"] = SANDBOX_STK_SHORTCODE
            overrides["passkey"] = SANDBOX_PASSKEY
        if settings.consumer_key is None or settings.consumer_secret is None:
            overrides["consumer_key"] = EMULATOR_CONSUMER_KEY
            overrides["consumer_secret"] = EMULATOR_CONSUMER_SECRET
        if settings.initiator_name is None or settings.initiator_password is None:
            overrides["initiator_name"] = SANDBOX_INITIATOR
            overrides["initiator_password"] = SANDBOX_INITIATOR_PASSWORD
        if settings.certificate_path is None:
            password = overrides.get("initiator_password") or settings.require("initiator_password")
            certificate = (
                emulator.certificate_pem if emulator is not None else bundled_certificate("sandbox")
            )
            overrides["security_credential"] = security_credential(password, certificate)
    return AsyncDaraja.from_settings(settings, **overrides)


def _build_reconciler(
    settings: Settings, ledger: Ledger, client: AsyncDaraja, metrics: Metrics
) -> Reconciler:
    return Reconciler(ledger, client, settings=settings, metrics=metrics)


def _build_transfers(
    settings: Settings,
    ledger: Ledger,
    client: AsyncDaraja,
    urls: GatewayUrls,
    reconciler: Reconciler,
) -> tuple[TransferSender, TransferChecker]:
    options = TransferOptions.from_settings(settings)
    sender = TransferSender(ledger, client, settings=settings, urls=urls.initiator, options=options)
    # One bucket for every query of this process: STK and Transaction Status together stay
    # within PESA_RECONCILE_QUERY_RATE.
    checker = TransferChecker(
        ledger, client, bucket=reconciler.bucket, urls=urls.initiator, options=options
    )
    return sender, checker


def _workers(state: GatewayState) -> list[Worker]:
    return [
        ("reconciler", state.reconciler.run),
        ("webhook dispatcher", state.dispatcher.run),
        ("payout sender", state.sender.run),
        ("transfer checker", state.checker.run),
    ]


def _build_dispatcher(
    settings: Settings,
    ledger: Ledger,
    handlers: HandlerMap | None,
    metrics: Metrics,
) -> WebhookDispatcher:
    return WebhookDispatcher(ledger, handlers=handlers, settings=settings, metrics=metrics)
