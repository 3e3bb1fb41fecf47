"""The emulator: Daraja's products behind one gateway pipeline, and the control API.

``Emulator(config).app`` is an ASGI app serving Daraja's paths at its root (it works under a
mount prefix and has no lifespan of its own); ``async with emulator:`` owns the callback
client and the background tasks that play the customer and deliver callbacks.

Each Daraja product lives in its own module (``_stk``, ``_c2b``, ``_b2c``, ``_status``,
``_balance``, ``_reversal``, ``_pochi``, ``_b2b``, ``_express``, ``_pull``, ``_qr``,
``_ratiba``, ``_bill_manager``) and is registered once in :data:`PRODUCTS`.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from decimal import Decimal
from types import TracebackType
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from starlette.applications import Starlette
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp

from pesa._clock import SYSTEM_CLOCK, Clock, require_clock
from pesa._constants import NAIROBI_TZ
from pesa._exceptions import ValidationError
from pesa.emulator._b2b import BusinessToBusiness
from pesa.emulator._b2c import BusinessToCustomer
from pesa.emulator._balance import AccountBalance
from pesa.emulator._bill_manager import BillManager
from pesa.emulator._c2b import CustomerToBusiness
from pesa.emulator._core import Core
from pesa.emulator._crypto import CredentialKeys, credential_keys
from pesa.emulator._express import B2BExpressCheckout
from pesa.emulator._faults import FaultBook, RateLimiter
from pesa.emulator._models import (
    C2BPay,
    C2BPayment,
    EmulatorConfig,
    Fault,
    ReceivedRequest,
    Rule,
    SentCallback,
)
from pesa.emulator._oauth import OAUTH_PATH, OAuth
from pesa.emulator._pipeline import Pipeline
from pesa.emulator._pochi import BusinessToPochi
from pesa.emulator._product import Product
from pesa.emulator._pull import PullTransactions
from pesa.emulator._qr import DynamicQR
from pesa.emulator._ratiba import Ratiba
from pesa.emulator._reversal import Reversal
from pesa.emulator._rules import Scenario
from pesa.emulator._status import TransactionStatus
from pesa.emulator._stk import SCENARIOS, MpesaExpress

__all__ = [
    "CONTROL_PREFIX",
    "PRODUCTS",
    "SCENARIOS",
    "Emulator",
    "Scenario",
    "create_app",
    "nairobi_now",
]

P = TypeVar("P", bound=Product)

_NAIROBI = ZoneInfo(NAIROBI_TZ)
CONTROL_PREFIX = "/__emulator__"
# Every verb reaches our handlers so that a wrong one gets Daraja's answer, not Starlette's.
_ALL_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]

#: The Daraja products the emulator serves, in route order. A new product is one module
#: (a :class:`~pesa.emulator._product.Product` subclass) and one entry here.
PRODUCTS: tuple[type[Product], ...] = (
    MpesaExpress,
    CustomerToBusiness,
    BusinessToCustomer,
    TransactionStatus,
    AccountBalance,
    Reversal,
    BusinessToPochi,
    BusinessToBusiness,
    B2BExpressCheckout,
    PullTransactions,
    DynamicQR,
    Ratiba,
    BillManager,
)


def nairobi_now() -> datetime:
    """The current time in Africa/Nairobi, Daraja's clock."""
    return datetime.now(_NAIROBI)


class Emulator:
    """A faithful local Daraja: same paths, payloads, codes and callbacks, deterministic.

    Example:
        >>> emulator = Emulator(EmulatorConfig(stk_delay=0.1))
        >>> # async with emulator: serve emulator.app (or mount it), then
        >>> # POST {base}/mpesa/stkpush/v1/processrequest as you would to the sandbox.

    Args:
        config: the emulator's behaviour; sandbox defaults when omitted.
        clock: where the emulator reads the time (:class:`pesa.daraja.Clock`; tests may
            freeze it with :class:`pesa.testing.FrozenClock`): callback dates, token
            lifetimes and rate limits.
        callback_verify: TLS verification for callback deliveries (an ``ssl.SSLContext``
            trusting your receiver's CA, or False for self-signed receivers).
        products: the Daraja products to serve (default :data:`PRODUCTS`, all of them); a
            product under development can be tried alone or added to these.
    """

    def __init__(
        self,
        config: EmulatorConfig | None = None,
        *,
        clock: Clock | None = None,
        callback_verify: bool | ssl.SSLContext = True,
        products: Sequence[type[Product]] = PRODUCTS,
    ) -> None:
        self.config = config or EmulatorConfig()
        self._core = Core(self.config, require_clock(clock, SYSTEM_CLOCK), callback_verify)
        self._faults = FaultBook(self._core.rng)
        self._rate = RateLimiter(self.config.rate_limit, self._core.clock)
        self._oauth = OAuth(self.config, self._core.ids, self._rate, self._core.clock)
        self._pipeline = Pipeline(self._core, self._faults, self._rate, self._oauth)
        self.products: dict[type[Product], Product] = {cls: cls(self._core) for cls in products}
        self.operations: tuple[str, ...] = tuple(
            op for product in self.products.values() for op in product.operations
        )
        self.callback_kinds: tuple[str, ...] = tuple(
            dict.fromkeys(k for product in self.products.values() for k in product.callback_kinds)
        )
        self.routes: list[BaseRoute] = self._build_routes()
        self.app: ASGIApp = Starlette(routes=self.routes)

    def _build_routes(self) -> list[BaseRoute]:
        from pesa.emulator._control_routes import control_routes

        pipeline = self._pipeline
        routes: list[BaseRoute] = [Route(OAUTH_PATH, pipeline.oauth_endpoint, methods=_ALL_METHODS)]
        for product in self.products.values():
            routes += [
                Route(r.path, pipeline.endpoint(r), methods=_ALL_METHODS) for r in product.routes()
            ]
        routes += control_routes(self, CONTROL_PREFIX)
        for product in self.products.values():
            routes += [
                Route(CONTROL_PREFIX + r.path, r.endpoint, methods=list(r.methods))
                for r in product.control_routes()
            ]
        routes.append(Route("/{path:path}", pipeline.not_found, methods=_ALL_METHODS))
        return routes

    def product(self, cls: type[P]) -> P:
        """The instance of a registered product class (its state, for tests and tools).

        Example:
            >>> from pesa.emulator._stk import MpesaExpress
            >>> len(Emulator().product(MpesaExpress).sessions)
            0
        """
        found = self.products[cls]
        assert isinstance(found, cls)
        return found

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Prepare for traffic (the callback client is also created on first use)."""
        self._core.delivery.open()

    async def stop(self) -> None:
        """Cancel pending customers and deliveries and close the callback client."""
        await self._core.cancel_tasks()
        await self._core.delivery.aclose()

    async def __aenter__(self) -> Emulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def pending_tasks(self) -> int:
        """Simulated customers and callback deliveries still running."""
        return self._core.pending_tasks

    async def wait_idle(self, timeout: float = 10.0) -> bool:
        """Wait until every simulated customer and callback delivery is done.

        Returns False when ``timeout`` seconds pass first.
        """
        return await self._core.wait_idle(timeout)

    # -- Python control API (mirrors /__emulator__/) ------------------------------------------

    @property
    def credential_keys(self) -> CredentialKeys:
        """The RSA key pair for SecurityCredentials (its certificate is served publicly)."""
        return credential_keys(self.config.key_dir)

    @property
    def certificate_pem(self) -> bytes:
        """The PEM certificate clients encrypt SecurityCredentials with in this emulator."""
        return self.credential_keys.certificate_pem

    def add_rule(self, rule: Rule | None = None, **fields: Any) -> Rule:
        """Add a rule (a :class:`Rule` or its fields); newest rules are tried first.

        Raises:
            ValidationError: the rule's ``operation`` is not one of :attr:`operations`.
        """
        new = rule if rule is not None else Rule(**fields)
        if new.operation is not None and new.operation not in self.operations:
            raise ValidationError("operation", f"must be one of {', '.join(self.operations)}")
        return self._core.rules.add(new)

    def remove_rule(self, rule_id: str) -> bool:
        """Remove one rule by id; False when there is none."""
        return self._core.rules.remove(rule_id)

    def clear_rules(self) -> None:
        """Remove every rule."""
        self._core.rules.clear()

    @property
    def rules(self) -> list[Rule]:
        """The active rules, newest first."""
        return self._core.rules.rules

    def add_fault(self, fault: Fault | None = None, **fields: Any) -> Fault:
        """Inject a fault (a :class:`Fault` or its fields) into Daraja requests."""
        return self._faults.add(fault if fault is not None else Fault(**fields))

    def remove_fault(self, fault_id: str) -> bool:
        """Remove one fault by id; False when there is none."""
        return self._faults.remove(fault_id)

    def clear_faults(self) -> None:
        """Remove every fault."""
        self._faults.clear()

    @property
    def faults(self) -> list[Fault]:
        """The active faults."""
        return self._faults.faults

    @property
    def rate_limit(self) -> float | None:
        """Requests per second allowed per app (None: unlimited)."""
        return self._rate.rate

    def set_rate_limit(self, requests_per_second: float | None) -> None:
        """Allow each app this many requests per second; beyond it answer spike arrest."""
        self._rate.set(requests_per_second)

    def requests(self, path: str | None = None) -> list[ReceivedRequest]:
        """Daraja requests received (oldest first), optionally only those under ``path``."""
        return self._pipeline.requests(path)

    def callbacks(self, kind: str | None = None) -> list[SentCallback]:
        """Callbacks sent (oldest first) with their delivery attempts and results."""
        return [c for c in self._core.delivery.records if kind is None or c.kind == kind]

    def balances(self, shortcode: str) -> dict[str, Decimal]:
        """The accounts of ``shortcode`` and their available balances, KES."""
        return dict(self._core.books.accounts(shortcode))

    def customer_pays(self, pay: C2BPay | None = None, **fields: Any) -> C2BPayment:
        """A customer pays a PayBill (with an account number) or a Till from the phone menu.

        The payment then runs like a real one (validation, money, confirmation to the
        registered URLs); its record is updated as it goes. Needs a running event loop.

        Example:
            >>> # emulator.customer_pays(shortcode="600997", account_reference="INV-1", amount=150)

        Raises:
            ValueError: naming the field (amount out of bounds; strict mode: unknown shortcode).
        """
        return self.product(CustomerToBusiness).customer_pays(pay or C2BPay(**fields))

    def c2b_payments(self, shortcode: str | None = None) -> list[C2BPayment]:
        """Customers' C2B payments (from the control API or ``simulate``), oldest first."""
        payments = self.product(CustomerToBusiness).payments.values()
        return [p for p in payments if shortcode is None or p.shortcode == shortcode]

    def issue_token(self, consumer_key: str = "pesa") -> str:
        """Mint an access token for ``consumer_key`` without an OAuth round trip (tests)."""
        return self._oauth.issue_token(consumer_key)

    async def reset(self) -> None:
        """Forget payments, registrations, rules, faults and records (tokens stay valid)."""
        await self._core.cancel_tasks()
        for product in self.products.values():
            product.reset()
        self._core.books.reset()
        self.clear_rules()
        self.clear_faults()
        self._rate.reset()
        self._pipeline.clear()
        self._core.delivery.clear()


def create_app(
    config: EmulatorConfig | None = None, *, emulator: Emulator | None = None
) -> Starlette:
    """A standalone ASGI app for the emulator, whose lifespan starts and stops it.

    ``app.state.emulator`` is the :class:`Emulator` (for in-process control).

    Example:
        >>> app = create_app(EmulatorConfig(seed=1))  # then: uvicorn.run(app, port=8100)
    """
    instance = emulator or Emulator(config)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        async with instance:
            yield

    app = Starlette(routes=instance.routes, lifespan=lifespan)
    app.state.emulator = instance
    return app
