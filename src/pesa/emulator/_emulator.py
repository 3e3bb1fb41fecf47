"""The emulator: Daraja's endpoints, its simulated customers and M-Pesa, and the control API.

``Emulator(config).app`` is an ASGI app serving Daraja's paths at its root (it works under a
mount prefix and has no lifespan of its own); ``async with emulator:`` owns the callback
client and the background tasks that play the customer and deliver callbacks.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hmac
import json
import random
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from hashlib import sha256
from itertools import count
from types import TracebackType
from typing import Any, Literal
from zoneinfo import ZoneInfo

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp

from pesa._constants import NAIROBI_TZ
from pesa._exceptions import ValidationError
from pesa._logging import get_logger, mask_phone
from pesa.emulator import _daraja as daraja
from pesa.emulator import _validate as v
from pesa.emulator._crypto import CredentialKeys, credential_keys, decode_block
from pesa.emulator._delivery import CallbackDelivery
from pesa.emulator._models import (
    CallbackAction,
    CallbackKind,
    EmulatorConfig,
    Fault,
    Operation,
    ReceivedRequest,
    Rule,
    SentCallback,
)
from pesa.emulator._validate import Refusal

__all__ = ["SCENARIOS", "Emulator", "Scenario", "create_app"]

_log = get_logger("pesa.emulator")
_NAIROBI = ZoneInfo(NAIROBI_TZ)
_JSON = "application/json"
CONTROL_PREFIX = "/__emulator__"
# Every verb reaches our handlers so that a wrong one gets Daraja's answer, not Starlette's.
_SECRET_FIELDS = frozenset({"Password", "SecurityCredential"})
_ALL_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]


@dataclass(frozen=True)
class Scenario:
    """What a test phone number makes the emulated customer do (the README table)."""

    result_code: int
    callback: CallbackAction = "deliver"
    description: str = ""


# The scenario phone table of issue 3, exactly: any other number succeeds.
SCENARIOS: dict[str, Scenario] = {
    "254700000001": Scenario(1, description="insufficient funds"),
    "254700001032": Scenario(1032, description="cancelled by the customer"),
    "254700001037": Scenario(1037, description="customer unreachable / no response"),
    "254700002001": Scenario(2001, description="wrong PIN"),
    # 1001 is never a callback: the push itself is refused with "Unable to lock subscriber".
    "254700001001": Scenario(1001, description="subscriber busy (refused at push time)"),
    "254700000404": Scenario(0, callback="drop", description="callback never delivered"),
    "254700000202": Scenario(0, callback="duplicate", description="callback delivered twice"),
}
_SUCCESS = Scenario(0, description="success")


def nairobi_now() -> datetime:
    """The current time in Africa/Nairobi, Daraja's clock."""
    return datetime.now(_NAIROBI)


@dataclass
class _Outcome:
    result_code: int | str
    result_desc: str | None
    delay: float
    callback: CallbackAction
    callback_delay: float
    callback_first: bool


@dataclass
class _StkSession:
    checkout_id: str
    merchant_id: str
    shortcode: str
    phone: str
    amount: int
    account_reference: str
    callback_url: str
    result_code: int | str = 0
    result_desc: str = ""
    final: bool = False


@dataclass
class _Registration:
    version: str
    response_type: str
    confirmation_url: str
    validation_url: str


@dataclass
class _Transaction:
    receipt: str
    kind: Literal["stk", "c2b", "b2c", "reversal"]
    amount: int
    shortcode: str
    party: str
    completed_at: datetime
    originator_conversation_id: str = ""
    conversation_id: str = ""
    reversed: bool = False


@dataclass
class _InitiatorJob:
    operation: Operation
    originator_id: str
    conversation_id: str
    result_url: str
    timeout_url: str
    initiator: str
    credential: str
    outcome: _Outcome | None
    decide: Callable[[], tuple[str, str, str, list[tuple[str, Any]]]]
    references: list[tuple[str, Any]] = field(default_factory=list)


Handler = Callable[[dict[str, Any], str], tuple[int, dict[str, Any]]]


class _Bucket:
    __slots__ = ("last", "tokens")

    def __init__(self, tokens: float, last: float) -> None:
        self.tokens = tokens
        self.last = last


class Emulator:
    """A faithful local Daraja: same paths, payloads, codes and callbacks, deterministic.

    Example:
        >>> emulator = Emulator(EmulatorConfig(stk_delay=0.1))
        >>> # async with emulator: serve emulator.app (or mount it), then
        >>> # POST {base}/mpesa/stkpush/v1/processrequest as you would to the sandbox.

    Args:
        config: the emulator's behaviour; sandbox defaults when omitted.
        clock: returns the current Nairobi time (tests may freeze it).
        callback_verify: TLS verification for callback deliveries (an ``ssl.SSLContext``
            trusting your receiver's CA, or False for self-signed receivers).
    """

    def __init__(
        self,
        config: EmulatorConfig | None = None,
        *,
        clock: Callable[[], datetime] | None = None,
        callback_verify: bool | ssl.SSLContext = True,
    ) -> None:
        self.config = config or EmulatorConfig()
        self._clock = clock or nairobi_now
        self._rng = random.Random(self.config.seed)
        self._ids = daraja.IdFactory(self._rng)
        self._delivery = CallbackDelivery(
            timeout=self.config.callback_timeout,
            retries=self.config.callback_retries,
            retry_delay=self.config.callback_retry_delay,
            max_records=self.config.max_records,
            verify=callback_verify,
        )
        self._tasks: set[asyncio.Task[None]] = set()
        self._tokens: dict[str, tuple[str, float]] = {}
        self._app_tokens: dict[str, set[str]] = {}
        self._rules: list[Rule] = []
        self._rule_uses: dict[str, int] = {}
        self._faults: list[Fault] = []
        self._fault_uses: dict[str, int] = {}
        self._rate_limit = self.config.rate_limit
        self._buckets: dict[str, _Bucket] = {}
        self._requests: deque[tuple[int, float, str, str, Any, int, Any]] = deque(
            maxlen=self.config.max_records
        )
        self._request_ids = count(1)
        # Payments stay queryable this long (in number of payments): bounded memory under load.
        self._max_kept = self.config.max_records * 10
        self._reset_state()
        self.routes: list[BaseRoute] = self._build_routes()
        self.app: ASGIApp = Starlette(routes=self.routes)

    def _reset_state(self) -> None:
        self._stk: dict[str, _StkSession] = {}
        self._open_prompts: dict[str, str] = {}
        self._registrations: dict[str, _Registration] = {}
        self._originator_ids: set[str] = set()
        self._transactions: dict[str, _Transaction] = {}
        self._by_originator: dict[str, str] = {}
        self._balances: dict[str, dict[str, Decimal]] = {}

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Prepare for traffic (the callback client is also created on first use)."""
        self._delivery.open()

    async def stop(self) -> None:
        """Cancel pending customers and deliveries and close the callback client."""
        await self._cancel_tasks()
        await self._delivery.aclose()

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

    async def _cancel_tasks(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            _log.error("emulator background task failed", exc_info=task.exception())

    @property
    def pending_tasks(self) -> int:
        """Simulated customers and callback deliveries still running."""
        return len(self._tasks)

    async def wait_idle(self, timeout: float = 10.0) -> bool:
        """Wait until every simulated customer and callback delivery is done.

        Returns False when ``timeout`` seconds pass first.
        """
        deadline = time.monotonic() + timeout
        while self._tasks:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            await asyncio.wait(list(self._tasks), timeout=remaining)
        return True

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
        """Add a rule (a :class:`Rule` or its fields); newest rules are tried first."""
        new = rule if rule is not None else Rule(**fields)
        self._rules.insert(0, new)
        if new.times is not None:
            self._rule_uses[new.id] = new.times
        return new

    def remove_rule(self, rule_id: str) -> bool:
        """Remove one rule by id; False when there is none."""
        before = len(self._rules)
        self._rules = [r for r in self._rules if r.id != rule_id]
        self._rule_uses.pop(rule_id, None)
        return len(self._rules) != before

    def clear_rules(self) -> None:
        """Remove every rule."""
        self._rules.clear()
        self._rule_uses.clear()

    @property
    def rules(self) -> list[Rule]:
        """The active rules, newest first."""
        return list(self._rules)

    def add_fault(self, fault: Fault | None = None, **fields: Any) -> Fault:
        """Inject a fault (a :class:`Fault` or its fields) into Daraja requests."""
        new = fault if fault is not None else Fault(**fields)
        self._faults.append(new)
        if new.times is not None:
            self._fault_uses[new.id] = new.times
        return new

    def remove_fault(self, fault_id: str) -> bool:
        """Remove one fault by id; False when there is none."""
        before = len(self._faults)
        self._faults = [f for f in self._faults if f.id != fault_id]
        self._fault_uses.pop(fault_id, None)
        return len(self._faults) != before

    def clear_faults(self) -> None:
        """Remove every fault."""
        self._faults.clear()
        self._fault_uses.clear()

    @property
    def faults(self) -> list[Fault]:
        """The active faults."""
        return list(self._faults)

    @property
    def rate_limit(self) -> float | None:
        """Requests per second allowed per app (None: unlimited)."""
        return self._rate_limit

    def set_rate_limit(self, requests_per_second: float | None) -> None:
        """Allow each app this many requests per second; beyond it answer spike arrest."""
        if requests_per_second is not None and requests_per_second <= 0:
            raise ValidationError("requests_per_second", "must be positive (or None for unlimited)")
        self._rate_limit = requests_per_second
        self._buckets.clear()

    def requests(self, path: str | None = None) -> list[ReceivedRequest]:
        """Daraja requests received (oldest first), optionally only those under ``path``."""
        return [
            ReceivedRequest(
                id=rid,
                received_at=datetime.fromtimestamp(at, UTC),
                method=method,
                path=where,
                body=body,
                status_code=status,
                response=response,
            )
            for rid, at, method, where, body, status, response in self._requests
            if path is None or where.startswith(path)
        ]

    def callbacks(self, kind: CallbackKind | None = None) -> list[SentCallback]:
        """Callbacks sent (oldest first) with their delivery attempts and results."""
        return [c for c in self._delivery.records if kind is None or c.kind == kind]

    def balances(self, shortcode: str) -> dict[str, Decimal]:
        """The accounts of ``shortcode`` and their available balances, KES."""
        return dict(self._accounts(shortcode))

    async def reset(self) -> None:
        """Forget payments, registrations, rules, faults and records (tokens stay valid)."""
        await self._cancel_tasks()
        self._reset_state()
        self.clear_rules()
        self.clear_faults()
        self._rate_limit = self.config.rate_limit
        self._buckets.clear()
        self._requests.clear()
        self._delivery.clear()

    # -- the request pipeline -----------------------------------------------------------------

    def _build_routes(self) -> list[BaseRoute]:
        token_404 = daraja.TOKEN_INVALID_404
        daraja_routes: list[tuple[str, Handler, daraja.ErrorSpec]] = [
            ("/mpesa/stkpush/v1/processrequest", self._stk_push, token_404),
            ("/mpesa/stkpushquery/v1/query", self._stk_query, token_404),
            ("/mpesa/c2b/v1/registerurl", self._c2b_register_v1, daraja.TOKEN_INVALID_C2B),
            ("/mpesa/c2b/v2/registerurl", self._c2b_register_v2, daraja.TOKEN_INVALID_C2B),
            ("/mpesa/c2b/v1/simulate", self._c2b_simulate, token_404),
            ("/mpesa/c2b/v2/simulate", self._c2b_simulate, token_404),
            ("/mpesa/b2c/v1/paymentrequest", self._b2c_v1, token_404),
            ("/mpesa/b2c/v3/paymentrequest", self._b2c_v3, token_404),
            ("/mpesa/transactionstatus/v1/query", self._transaction_status, token_404),
            ("/mpesa/accountbalance/v1/query", self._account_balance, token_404),
            ("/mpesa/reversal/v1/request", self._reversal, token_404),
        ]
        routes: list[BaseRoute] = [
            Route("/oauth/v1/generate", self._oauth_endpoint, methods=_ALL_METHODS)
        ]
        routes += [
            Route(p, self._endpoint(p, h, t), methods=_ALL_METHODS) for p, h, t in daraja_routes
        ]
        from pesa.emulator._control_routes import control_routes

        routes += control_routes(self, CONTROL_PREFIX)
        routes.append(Route("/{path:path}", self._not_found, methods=_ALL_METHODS))
        return routes

    def _respond(
        self,
        request: Request,
        path: str,
        body: Any,
        status: int,
        payload: Any,
    ) -> Response:
        if isinstance(body, dict) and _SECRET_FIELDS.intersection(body):
            body = {k: "[redacted]" if k in _SECRET_FIELDS else val for k, val in body.items()}
        # A plain tuple on the hot path; ReceivedRequest models are built when listed.
        self._requests.append(
            (next(self._request_ids), time.time(), request.method, path, body, status, payload)
        )
        if payload is None:
            return Response(b"", status_code=status)
        if isinstance(payload, str):
            return Response(payload, status_code=status, media_type="text/plain")
        return Response(
            json.dumps(payload, separators=(",", ":")).encode(),
            status_code=status,
            media_type=_JSON,
        )

    def _error(self, refusal: Refusal) -> dict[str, Any]:
        return {
            "requestId": refusal.request_id or self._ids.request_id(),
            "errorCode": refusal.error_code,
            "errorMessage": refusal.error_message,
        }

    async def _latency(self, extra: float) -> None:
        delay = self.config.latency_ms / 1000 + extra
        if delay > 0:
            await asyncio.sleep(delay)

    def _wrong_method(self, method: str) -> Refusal:
        if self.config.wrong_method_error == "404.001.04":
            return Refusal(daraja.INVALID_AUTH_HEADER)
        return Refusal(daraja.method_not_allowed(method))

    def _draw_faults(self, path: str, *, oauth: bool = False) -> tuple[Fault | None, float]:
        """The fault that answers this request (if any) and the extra delay of slow faults."""
        hit: Fault | None = None
        slow = 0.0
        for fault in self._faults:
            if fault.path is not None and not path.startswith(fault.path):
                continue
            if oauth and fault.kind == "invalid_token":
                continue  # OAuth issues tokens; it never checks one
            if fault.rate < 1 and self._rng.random() >= fault.rate:
                continue
            if fault.id in self._fault_uses:
                left = self._fault_uses[fault.id]
                if left <= 0:
                    continue
                self._fault_uses[fault.id] = left - 1
            if fault.kind == "slow":
                slow += fault.delay
            elif hit is None:
                hit = fault
        return hit, slow

    def _fault_refusal(self, fault: Fault, token_error: daraja.ErrorSpec) -> Refusal | str:
        if fault.kind == "http_500":
            return Refusal(daraja.INTERNAL_SERVER_ERROR)
        if fault.kind == "spike_arrest":
            return Refusal(daraja.SPIKE_ARREST)
        if fault.kind == "invalid_token":
            return Refusal(token_error)
        # A 503 comes from the load balancer in front of Daraja, not as Daraja JSON.
        return "Service Unavailable"

    def _take_rate(self, app: str) -> bool:
        rate = self._rate_limit
        if rate is None:
            return True
        now = time.monotonic()
        bucket = self._buckets.get(app)
        capacity = max(rate, 1.0)
        if bucket is None:
            bucket = self._buckets[app] = _Bucket(capacity, now)
        bucket.tokens = min(capacity, bucket.tokens + (now - bucket.last) * rate)
        bucket.last = now
        if bucket.tokens < 1:
            return False
        bucket.tokens -= 1
        return True

    def _app_for_token(self, request: Request) -> str | None:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return None
        entry = self._tokens.get(token.strip())
        if entry is None:
            return None
        app, expires = entry
        if time.monotonic() >= expires:
            del self._tokens[token.strip()]
            return None
        return app

    def _endpoint(
        self, path: str, handler: Handler, token_error: daraja.ErrorSpec
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            raw = await request.body()
            body: Any = None
            extra = 0.0
            try:
                fault, extra = self._draw_faults(path)
                if fault is not None:
                    refused = self._fault_refusal(fault, token_error)
                    if isinstance(refused, str):
                        await self._latency(extra)
                        return self._respond(request, path, None, 503, refused)
                    raise refused
                if request.method != "POST":
                    raise self._wrong_method(request.method)
                app = self._app_for_token(request)
                if app is None:
                    raise Refusal(token_error)
                if not self._take_rate(app):
                    raise Refusal(daraja.SPIKE_ARREST)
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = raw.decode("utf-8", "replace")
                    # Form-encoded bodies famously read as a missing BusinessShortCode.
                    raise Refusal(daraja.bad_request("BusinessShortCode")) from None
                if not isinstance(body, dict):
                    raise Refusal(daraja.INVALID_PAYLOAD)
                status, payload = handler(body, app)
            except Refusal as refusal:
                status, payload = refusal.status_code, self._error(refusal)
            await self._latency(extra)
            return self._respond(request, path, body, status, payload)

        return endpoint

    async def _not_found(self, request: Request) -> Response:
        path = "/" + request.path_params.get("path", "")
        refusal = Refusal(daraja.RESOURCE_NOT_FOUND)
        return self._respond(request, path, None, refusal.status_code, self._error(refusal))

    # -- OAuth -----------------------------------------------------------------------------

    async def _oauth_endpoint(self, request: Request) -> Response:
        path = "/oauth/v1/generate"
        status: int
        payload: Any
        fault, extra = self._draw_faults(path, oauth=True)
        try:
            if fault is not None:
                refused = self._fault_refusal(fault, daraja.OAUTH_INVALID_AUTHENTICATION)
                if isinstance(refused, str):
                    await self._latency(extra)
                    return self._respond(request, path, None, 503, refused)
                raise refused
            if request.method != "GET":
                raise self._wrong_method(request.method)
            status, payload = self._oauth(
                request.headers.get("authorization", ""),
                request.query_params.get("grant_type"),
            )
        except Refusal as refusal:
            status, payload = refusal.status_code, self._error(refusal)
        await self._latency(extra)
        return self._respond(request, path, None, status, payload)

    def _oauth(self, header: str, grant_type: str | None) -> tuple[int, Any]:
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic" or not encoded:
            raise Refusal(daraja.OAUTH_INVALID_AUTHENTICATION)
        try:
            key, sep, secret = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, ValueError):
            raise Refusal(daraja.OAUTH_INVALID_AUTHENTICATION) from None
        if not sep or not key:
            raise Refusal(daraja.OAUTH_INVALID_AUTHENTICATION)
        if grant_type != "client_credentials":
            raise Refusal(daraja.OAUTH_INVALID_GRANT)
        if self.config.strict:
            good = hmac.compare_digest(
                key.encode(), (self.config.consumer_key or "").encode()
            ) & hmac.compare_digest(secret.encode(), (self.config.consumer_secret or "").encode())
            if not good:
                if self.config.oauth_bad_credentials == "empty":
                    return 400, None
                raise Refusal(daraja.OAUTH_INVALID_AUTHENTICATION)
        if not self._take_rate(key):
            raise Refusal(daraja.SPIKE_ARREST)
        token = self._ids.token()
        while token in self._tokens:
            token = self._ids.token()
        now = time.monotonic()
        issued = self._app_tokens.setdefault(key, set())
        for old in list(issued):
            # Forget expired tokens (and, when configured, every older one) as we go.
            entry = self._tokens.get(old)
            if entry is None or entry[1] <= now or self.config.invalidate_old_tokens:
                issued.discard(old)
                self._tokens.pop(old, None)
        self._tokens[token] = (key, now + self.config.token_lifetime)
        issued.add(token)
        return 200, {"access_token": token, "expires_in": str(self.config.token_lifetime)}

    def issue_token(self, consumer_key: str = "pesa") -> str:
        """Mint an access token for ``consumer_key`` without an OAuth round trip (tests)."""
        credentials = base64.b64encode(f"{consumer_key}:x".encode()).decode()
        if self.config.strict:
            key, secret = self.config.consumer_key or "", self.config.consumer_secret or ""
            credentials = base64.b64encode(f"{key}:{secret}".encode()).decode()
        _, payload = self._oauth(f"Basic {credentials}", "client_credentials")
        return str(payload["access_token"])

    # -- rules and accounts -----------------------------------------------------------------

    def _match_rule(
        self, operation: Operation, phone: str | None, amount: int | None, reference: str | None
    ) -> Rule | None:
        for rule in self._rules:
            if rule.operation is not None and rule.operation != operation:
                continue
            if rule.phone is not None and rule.phone != phone:
                continue
            if rule.amount is not None and rule.amount != amount:
                continue
            if rule.account_reference is not None and rule.account_reference != reference:
                continue
            if rule.id in self._rule_uses:
                left = self._rule_uses[rule.id]
                if left <= 0:
                    continue
                self._rule_uses[rule.id] = left - 1
            return rule
        return None

    def _outcome(
        self,
        operation: Operation,
        phone: str | None,
        amount: int | None,
        reference: str | None,
        default_delay: float,
    ) -> _Outcome | None:
        """The outcome a rule or the scenario table sets; None means "behave normally"."""
        rule = self._match_rule(operation, phone, amount, reference)
        scenario = SCENARIOS.get(phone or "") if operation == "stk" else None
        if rule is None:
            if scenario is None:
                return None
            return _Outcome(
                scenario.result_code, None, default_delay, scenario.callback, 0.0, False
            )
        base = scenario or _SUCCESS
        return _Outcome(
            base.result_code if rule.result_code is None else rule.result_code,
            rule.result_desc,
            default_delay if rule.delay is None else rule.delay,
            rule.callback,
            rule.callback_delay,
            rule.callback_first,
        )

    def _accounts(self, shortcode: str) -> dict[str, Decimal]:
        accounts = self._balances.get(shortcode)
        if accounts is None:
            accounts = self._balances[shortcode] = {
                "Working Account": self.config.initial_working_balance,
                "Float Account": Decimal("0.00"),
                "Utility Account": self.config.initial_utility_balance,
                "Charges Paid Account": Decimal("0.00"),
                "Organization Settlement Account": Decimal("0.00"),
            }
        return accounts

    def _known_shortcode(self, code: str) -> bool:
        return code in self.config.shortcodes or code in self.config.passkeys

    def _now(self) -> datetime:
        return self._clock()

    # -- STK push and query -----------------------------------------------------------------

    def _check_password(self, body: dict[str, Any], shortcode: str, timestamp: str) -> None:
        passkey = self.config.passkeys.get(shortcode)
        if passkey is None:
            raise Refusal(daraja.MERCHANT_NOT_FOUND)
        expected = base64.b64encode(f"{shortcode}{passkey}{timestamp}".encode())
        given = body.get("Password")
        if not isinstance(given, str) or not hmac.compare_digest(given.encode(), expected):
            raise Refusal(daraja.WRONG_CREDENTIALS)

    def _stk_push(self, body: dict[str, Any], app: str) -> tuple[int, dict[str, Any]]:
        del app
        cfg = self.config
        now = self._now()
        shortcode = v.shortcode(body.get("BusinessShortCode"), "BusinessShortCode")
        timestamp = v.timestamp(body.get("Timestamp"), now, cfg.timestamp_tolerance)
        paybill = (
            v.choice(
                body.get("TransactionType"),
                "TransactionType",
                ("CustomerPayBillOnline", "CustomerBuyGoodsOnline"),
            )
            == "CustomerPayBillOnline"
        )
        amount = v.amount(body.get("Amount"), cfg.stk_min_amount, cfg.stk_max_amount)
        v.msisdn(body.get("PartyA"), "PartyA")
        v.shortcode(body.get("PartyB"), "PartyB")
        phone = v.msisdn(body.get("PhoneNumber"), "PhoneNumber")
        callback_url = v.url(body.get("CallBackURL"), "CallBackURL")
        if paybill:
            reference = v.required_text(
                body.get("AccountReference"), "AccountReference", max_length=12
            )
        else:
            reference = v.optional_text(
                body.get("AccountReference"), "AccountReference", max_length=12
            )
        v.optional_text(body.get("TransactionDesc"), "TransactionDesc", max_length=13)
        self._check_password(body, shortcode, timestamp)
        if phone in self._open_prompts:
            raise Refusal(daraja.SUBSCRIBER_LOCKED)
        outcome = self._outcome("stk", phone, amount, reference, cfg.stk_delay) or _Outcome(
            0, None, cfg.stk_delay, "deliver", 0.0, False
        )
        if str(outcome.result_code) == "1001":
            raise Refusal(daraja.SUBSCRIBER_LOCKED)
        checkout_id = self._ids.checkout_request_id(now)
        while checkout_id in self._stk:
            checkout_id = self._ids.checkout_request_id(now)
        session = _StkSession(
            checkout_id=checkout_id,
            merchant_id=self._ids.request_id(),
            shortcode=shortcode,
            phone=phone,
            amount=amount,
            account_reference=reference,
            callback_url=callback_url,
        )
        self._stk[checkout_id] = session
        _evict_oldest(self._stk, self._max_kept, lambda s: s.final)
        self._open_prompts[phone] = checkout_id
        self._spawn(self._run_stk(session, outcome))
        return 200, {
            "MerchantRequestID": session.merchant_id,
            "CheckoutRequestID": checkout_id,
            "ResponseCode": "0",
            "ResponseDescription": daraja.STK_PUSH_ACCEPTED,
            "CustomerMessage": daraja.STK_PUSH_ACCEPTED,
        }

    async def _run_stk(self, session: _StkSession, outcome: _Outcome) -> None:
        try:
            if outcome.delay > 0:
                await asyncio.sleep(outcome.delay)
        finally:
            # The prompt closes when the customer answers (or the emulator stops).
            if self._open_prompts.get(session.phone) == session.checkout_id:
                del self._open_prompts[session.phone]
        code = outcome.result_code
        session.result_code = code
        session.result_desc = outcome.result_desc or daraja.STK_RESULT_DESCRIPTIONS.get(
            str(code), "The transaction could not be processed."
        )
        stk: dict[str, Any] = {
            "MerchantRequestID": session.merchant_id,
            "CheckoutRequestID": session.checkout_id,
            "ResultCode": int(code) if str(code).isdigit() else code,
            "ResultDesc": session.result_desc,
        }
        if str(code) == "0":
            now = self._now()
            receipt = self._ids.receipt(now)
            self._accounts(session.shortcode)["Utility Account"] += session.amount
            _evict_oldest(self._transactions, self._max_kept, lambda _: True)
            self._transactions[receipt] = _Transaction(
                receipt, "stk", session.amount, session.shortcode, session.phone, now
            )
            stk["CallbackMetadata"] = {
                "Item": [
                    {"Name": "Amount", "Value": float(session.amount)},
                    {"Name": "MpesaReceiptNumber", "Value": receipt},
                    {"Name": "Balance"},
                    {"Name": "TransactionDate", "Value": int(f"{now:%Y%m%d%H%M%S}")},
                    {"Name": "PhoneNumber", "Value": int(session.phone)},
                ]
            }
        _log.info(
            "STK %s for %s finished with %s",
            session.checkout_id,
            mask_phone(session.phone),
            code,
        )
        payload = {"Body": {"stkCallback": stk}}
        if not outcome.callback_first:
            session.final = True
        await self._send(outcome, "stk", session.callback_url, None, payload)
        session.final = True

    async def _send(
        self,
        outcome: _Outcome | None,
        kind: CallbackKind,
        url: str,
        timeout_url: str | None,
        payload: dict[str, Any],
    ) -> None:
        action = outcome.callback if outcome is not None else "deliver"
        if action == "drop":
            return
        if action == "timeout":
            if timeout_url is None:
                return  # STK has no QueueTimeOutURL: a timed-out prompt sends nothing.
            await self._delivery.post("queue_timeout", timeout_url, payload)
            return
        if action == "delay" and outcome is not None and outcome.callback_delay > 0:
            await asyncio.sleep(outcome.callback_delay)
        await self._delivery.post(kind, url, payload)
        if action == "duplicate":
            await self._delivery.post(kind, url, payload)

    def _stk_query(self, body: dict[str, Any], app: str) -> tuple[int, dict[str, Any]]:
        del app
        now = self._now()
        shortcode = v.shortcode(body.get("BusinessShortCode"), "BusinessShortCode")
        timestamp = v.timestamp(body.get("Timestamp"), now, self.config.timestamp_tolerance)
        checkout_id = body.get("CheckoutRequestID")
        if not isinstance(checkout_id, str) or not checkout_id:
            raise Refusal(daraja.bad_request("CheckoutRequestID"))
        self._check_password(body, shortcode, timestamp)
        session = self._stk.get(checkout_id)
        if session is None or session.shortcode != shortcode:
            raise Refusal(daraja.bad_request("CheckoutRequestID"))
        if not session.final:
            raise Refusal(daraja.STK_PENDING, request_id=checkout_id)
        return 200, {
            "ResponseCode": "0",
            "ResponseDescription": daraja.STK_QUERY_ACCEPTED,
            "MerchantRequestID": session.merchant_id,
            "CheckoutRequestID": session.checkout_id,
            "ResultCode": str(session.result_code),
            "ResultDesc": session.result_desc,
        }

    # -- C2B ----------------------------------------------------------------------------------

    def _c2b_register_v1(self, body: dict[str, Any], app: str) -> tuple[int, dict[str, Any]]:
        return self._c2b_register(body, app, "v1")

    def _c2b_register_v2(self, body: dict[str, Any], app: str) -> tuple[int, dict[str, Any]]:
        return self._c2b_register(body, app, "v2")

    def _check_c2b_url(self, value: Any, field: str) -> str:
        url = v.url(value, field)
        if self.config.c2b_url_keyword_check:
            lowered = url.lower()
            for word in daraja.C2B_BANNED_WORDS:
                if word in lowered:
                    raise Refusal(
                        (
                            400,
                            daraja.C2B_URL_KEYWORD,
                            f"Bad Request - Invalid {field} - URL has the word {word.upper()}",
                        )
                    )
        return url

    def _c2b_register(
        self, body: dict[str, Any], app: str, version: str
    ) -> tuple[int, dict[str, Any]]:
        del app
        shortcode = v.shortcode(body.get("ShortCode"), "ShortCode")
        if shortcode not in self.config.shortcodes:
            raise Refusal(daraja.bad_request("ShortCode"))
        response_type = v.choice(
            body.get("ResponseType"), "ResponseType", daraja.C2B_RESPONSE_TYPES
        )
        confirmation = self._check_c2b_url(body.get("ConfirmationURL"), "ConfirmationURL")
        validation = self._check_c2b_url(body.get("ValidationURL"), "ValidationURL")
        # The sandbox allows overwriting a registration (production refuses: "already registered").
        self._registrations[shortcode] = _Registration(
            version, response_type, confirmation, validation
        )
        return 200, {
            "OriginatorCoversationID": self._ids.request_id(),
            "ResponseCode": "0" if version == "v1" else "00000000",
            "ResponseDescription": daraja.C2B_REGISTERED,
        }

    def _c2b_simulate(self, body: dict[str, Any], app: str) -> tuple[int, dict[str, Any]]:
        del app
        cfg = self.config
        shortcode = v.shortcode(body.get("ShortCode"), "ShortCode")
        if not self._known_shortcode(shortcode):
            raise Refusal(daraja.bad_request("ShortCode"))
        command = v.choice(
            body.get("CommandID"), "CommandID", ("CustomerPayBillOnline", "CustomerBuyGoodsOnline")
        )
        amount = v.amount(body.get("Amount"), cfg.stk_min_amount, cfg.stk_max_amount)
        phone = v.msisdn(body.get("Msisdn"), "Msisdn")
        bill_ref = v.optional_text(body.get("BillRefNumber"), "BillRefNumber", max_length=20)
        registration = self._registrations.get(shortcode)
        if registration is None:
            # The sandbox acknowledges a simulation for a shortcode without URLs and then
            # delivers nothing: the classic "callbacks never arrive".
            _log.warning("C2B simulate on %s: no URLs registered, nothing delivered", shortcode)
        else:
            outcome = self._outcome("c2b", phone, amount, bill_ref, cfg.result_delay)
            self._spawn(
                self._run_c2b(registration, shortcode, command, amount, phone, bill_ref, outcome)
            )
        return 200, {
            "OriginatorCoversationID": self._ids.request_id(),
            "ResponseCode": "0",
            "ResponseDescription": daraja.C2B_SIMULATE_ACCEPTED,
        }

    async def _run_c2b(
        self,
        registration: _Registration,
        shortcode: str,
        command: str,
        amount: int,
        phone: str,
        bill_ref: str,
        outcome: _Outcome | None,
    ) -> None:
        delay = self.config.result_delay if outcome is None else outcome.delay
        if delay > 0:
            await asyncio.sleep(delay)
        if outcome is not None and str(outcome.result_code) != "0":
            # The customer's payment failed in M-Pesa (a rule said so): nothing is notified.
            _log.info("C2B payment on %s failed with %s", shortcode, outcome.result_code)
            return
        now = self._now()
        receipt = self._ids.receipt(now)
        masked = (
            sha256(phone.encode()).hexdigest()
            if registration.version == "v1"
            else f"{phone[:5]}****{phone[-3:]}"
        )
        payload: dict[str, Any] = {
            "TransactionType": "Pay Bill" if command == "CustomerPayBillOnline" else "Buy Goods",
            "TransID": receipt,
            "TransTime": f"{now:%Y%m%d%H%M%S}",
            "TransAmount": f"{amount}.00",
            "BusinessShortCode": shortcode,
            "BillRefNumber": bill_ref,
            "InvoiceNumber": "",
            "OrgAccountBalance": "",
            "ThirdPartyTransID": "",
            "MSISDN": masked,
            "FirstName": "John",
            "MiddleName": "",
            "LastName": "Doe",
        }
        if self.config.c2b_validation:
            record = await self._delivery.post(
                "c2b_validation",
                registration.validation_url,
                payload,
                timeout=self.config.c2b_validation_timeout,
                retries=0,
            )
            answer = record.response if isinstance(record.response, dict) else None
            if record.delivered and answer is not None and "ResultCode" in answer:
                if str(answer["ResultCode"]) != "0":
                    _log.info("C2B %s rejected by validation: %s", receipt, answer["ResultCode"])
                    return
                payload["ThirdPartyTransID"] = str(answer.get("ThirdPartyTransID") or "")
            elif registration.response_type == "Cancelled":
                _log.info("C2B %s cancelled: validation unanswered (ResponseType)", receipt)
                return
        accounts = self._accounts(shortcode)
        accounts["Utility Account"] += amount
        payload["OrgAccountBalance"] = f"{accounts['Utility Account']:.2f}"
        _evict_oldest(self._transactions, self._max_kept, lambda _: True)
        self._transactions[receipt] = _Transaction(receipt, "c2b", amount, shortcode, phone, now)
        await self._send(outcome, "c2b_confirmation", registration.confirmation_url, None, payload)

    # -- initiator APIs (B2C, status, balance, reversal) --------------------------------------

    def _initiator_fields(self, body: dict[str, Any], name_field: str) -> tuple[str, str, str, str]:
        initiator = v.required_text(body.get(name_field), name_field)
        credential = v.required_text(
            body.get("SecurityCredential"), "SecurityCredential", max_length=4096
        )
        result_url = v.url(body.get("ResultURL"), "ResultURL")
        timeout_url = v.url(body.get("QueueTimeOutURL"), "QueueTimeOutURL")
        return initiator, credential, result_url, timeout_url

    def _credential_ok(self, initiator: str, credential: str) -> bool:
        password = self.config.initiators.get(initiator)
        if password is None:
            return False
        if not self.config.strict:
            return decode_block(credential) is not None
        plain = self.credential_keys.decrypt(credential)
        return plain is not None and hmac.compare_digest(plain.encode(), password.encode())

    def _accept_initiator(self, job: _InitiatorJob) -> tuple[int, dict[str, Any]]:
        self._spawn(self._run_initiator(job))
        return 200, {
            "OriginatorConversationID": job.originator_id,
            "ConversationID": job.conversation_id,
            "ResponseCode": "0",
            "ResponseDescription": daraja.INITIATOR_ACCEPTED,
        }

    async def _run_initiator(self, job: _InitiatorJob) -> None:
        delay = job.outcome.delay if job.outcome is not None else self.config.result_delay
        if delay > 0:
            await asyncio.sleep(delay)
        references = [("QueueTimeoutURL", job.timeout_url), *job.references]
        params: list[tuple[str, Any]]
        if job.outcome is not None and job.outcome.callback == "timeout":
            code, desc, txn, params = (
                daraja.QUEUE_TIMEOUT_CODE,
                daraja.QUEUE_TIMEOUT_DESC,
                daraja.FAILED_TRANSACTION_ID,
                [],
            )
        elif not self._credential_ok(job.initiator, job.credential):
            code, desc, txn, params = "2001", daraja.RESULT_DESCRIPTIONS["2001"], "", []
        elif job.outcome is not None and str(job.outcome.result_code) != "0":
            code = str(job.outcome.result_code)
            desc = job.outcome.result_desc or daraja.RESULT_DESCRIPTIONS.get(
                code, "The service request could not be processed."
            )
            txn, params = "", []
        else:
            code, desc, txn, params = job.decide()
        result: dict[str, Any] = {
            "ResultType": 0,
            "ResultCode": int(code) if code.isdigit() else code,
            "ResultDesc": desc,
            "OriginatorConversationID": job.originator_id,
            "ConversationID": job.conversation_id,
            "TransactionID": txn or daraja.FAILED_TRANSACTION_ID,
        }
        if params:
            result["ResultParameters"] = {
                "ResultParameter": [{"Key": k, "Value": val} for k, val in params]
            }
        items = [{"Key": k, "Value": val} for k, val in references]
        result["ReferenceData"] = {"ReferenceItem": items[0] if len(items) == 1 else items}
        await self._send(job.outcome, "result", job.result_url, job.timeout_url, {"Result": result})

    def _b2c_v1(self, body: dict[str, Any], app: str) -> tuple[int, dict[str, Any]]:
        return self._b2c(body, app, v3=False)

    def _b2c_v3(self, body: dict[str, Any], app: str) -> tuple[int, dict[str, Any]]:
        return self._b2c(body, app, v3=True)

    def _b2c(self, body: dict[str, Any], app: str, *, v3: bool) -> tuple[int, dict[str, Any]]:
        del app
        cfg = self.config
        originator_id = ""
        if v3:
            originator_id = v.required_text(
                body.get("OriginatorConversationID"), "OriginatorConversationID"
            )
        initiator, credential, result_url, timeout_url = self._initiator_fields(
            body, "InitiatorName"
        )
        v.choice(
            body.get("CommandID"),
            "CommandID",
            ("SalaryPayment", "BusinessPayment", "PromotionPayment"),
        )
        amount = v.amount(body.get("Amount"), cfg.b2c_min_amount, cfg.b2c_max_amount)
        shortcode = v.shortcode(body.get("PartyA"), "PartyA")
        if not self._known_shortcode(shortcode):
            raise Refusal(daraja.bad_request("PartyA"))
        phone = v.msisdn(body.get("PartyB"), "PartyB")
        v.required_text(body.get("Remarks"), "Remarks", min_length=2, max_length=100)
        occasion = body.get("Occassion", body.get("Occasion"))
        v.optional_text(occasion, "Occassion", max_length=100)
        if v3 and originator_id in self._originator_ids:
            raise Refusal(daraja.DUPLICATE_ORIGINATOR)
        originator_id = originator_id or self._ids.originator_conversation_id()
        self._originator_ids.add(originator_id)
        conversation_id = self._ids.conversation_id(self._now())
        outcome = self._outcome("b2c", phone, amount, None, cfg.result_delay)

        def decide() -> tuple[str, str, str, list[tuple[str, Any]]]:
            accounts = self._accounts(shortcode)
            if accounts["Utility Account"] < amount:
                return "1", daraja.RESULT_DESCRIPTIONS["1"], "", []
            accounts["Utility Account"] -= amount
            now = self._now()
            receipt = self._ids.receipt(now)
            _evict_oldest(self._transactions, self._max_kept, lambda _: True)
            self._transactions[receipt] = _Transaction(
                receipt, "b2c", amount, shortcode, phone, now, originator_id, conversation_id
            )
            self._by_originator[originator_id] = receipt
            return (
                "0",
                daraja.RESULT_DESCRIPTIONS["0"],
                receipt,
                [
                    ("TransactionAmount", amount),
                    ("TransactionReceipt", receipt),
                    ("ReceiverPartyPublicName", f"{phone} - John Doe"),
                    ("TransactionCompletedDateTime", f"{now:%d.%m.%Y %H:%M:%S}"),
                    ("B2CUtilityAccountAvailableFunds", float(accounts["Utility Account"])),
                    ("B2CWorkingAccountAvailableFunds", float(accounts["Working Account"])),
                    ("B2CRecipientIsRegisteredCustomer", "Y"),
                    (
                        "B2CChargesPaidAccountAvailableFunds",
                        float(accounts["Charges Paid Account"]),
                    ),
                ],
            )

        return self._accept_initiator(
            _InitiatorJob(
                "b2c",
                originator_id,
                conversation_id,
                result_url,
                timeout_url,
                initiator,
                credential,
                outcome,
                decide,
            )
        )

    def _transaction_status(self, body: dict[str, Any], app: str) -> tuple[int, dict[str, Any]]:
        del app
        initiator, credential, result_url, timeout_url = self._initiator_fields(body, "Initiator")
        v.choice(body.get("CommandID"), "CommandID", ("TransactionStatusQuery",))
        receipt = body.get("TransactionID")
        original = body.get("OriginalConversationID")
        if not (isinstance(receipt, str) and receipt) and not (
            isinstance(original, str) and original
        ):
            raise Refusal(daraja.bad_request("TransactionID"))
        party = v.required_text(body.get("PartyA"), "PartyA", max_length=12)
        if not party.isdigit():
            raise Refusal(daraja.bad_request("PartyA"))
        v.choice(body.get("IdentifierType"), "IdentifierType", ("1", "2", "4"))
        v.optional_text(body.get("Remarks"), "Remarks", max_length=100)
        originator_id = self._ids.originator_conversation_id()
        conversation_id = self._ids.conversation_id(self._now())
        outcome = self._outcome("transaction_status", None, None, None, self.config.result_delay)

        def decide() -> tuple[str, str, str, list[tuple[str, Any]]]:
            key = receipt if isinstance(receipt, str) and receipt else None
            if key is None and isinstance(original, str):
                key = self._by_originator.get(original)
            txn = self._transactions.get(key or "")
            if txn is None:
                return "2032", daraja.RESULT_DESCRIPTIONS["2032"], "", []
            stamp = f"{txn.completed_at:%Y%m%d%H%M%S}"
            incoming = txn.kind in ("stk", "c2b")
            return (
                "0",
                daraja.RESULT_DESCRIPTIONS["0"],
                txn.receipt,
                [
                    ("DebitPartyName", f"{txn.party} - John Doe" if incoming else txn.shortcode),
                    ("CreditPartyName", txn.shortcode if incoming else f"{txn.party} - John Doe"),
                    ("OriginatorConversationID", txn.originator_conversation_id),
                    ("InitiatedTime", int(stamp)),
                    ("DebitAccountType", "MMF Account" if incoming else "Utility Account"),
                    ("DebitPartyCharges", ""),
                    ("TransactionReason", ""),
                    ("ReasonType", "Pay Bill Online" if incoming else "Business Payment"),
                    ("TransactionStatus", "Reversed" if txn.reversed else "Completed"),
                    ("FinalisedTime", int(stamp)),
                    ("Amount", float(txn.amount)),
                    ("ConversationID", txn.conversation_id),
                    ("ReceiptNo", txn.receipt),
                ],
            )

        return self._accept_initiator(
            _InitiatorJob(
                "transaction_status",
                originator_id,
                conversation_id,
                result_url,
                timeout_url,
                initiator,
                credential,
                outcome,
                decide,
            )
        )

    def _account_balance(self, body: dict[str, Any], app: str) -> tuple[int, dict[str, Any]]:
        del app
        initiator, credential, result_url, timeout_url = self._initiator_fields(body, "Initiator")
        v.choice(body.get("CommandID"), "CommandID", ("AccountBalance",))
        shortcode = v.shortcode(body.get("PartyA"), "PartyA")
        if not self._known_shortcode(shortcode):
            raise Refusal(daraja.bad_request("PartyA"))
        v.choice(body.get("IdentifierType"), "IdentifierType", ("4",))
        v.optional_text(body.get("Remarks"), "Remarks", max_length=100)
        originator_id = self._ids.originator_conversation_id()
        conversation_id = self._ids.conversation_id(self._now())
        outcome = self._outcome("account_balance", None, None, None, self.config.result_delay)

        def decide() -> tuple[str, str, str, list[tuple[str, Any]]]:
            accounts = self._accounts(shortcode)
            text = "&".join(
                f"{name}|KES|{value:.2f}|{value:.2f}|0.00|0.00" for name, value in accounts.items()
            )
            stamp = int(f"{self._now():%Y%m%d%H%M%S}")
            return (
                "0",
                daraja.RESULT_DESCRIPTIONS["0"],
                "",
                [("AccountBalance", text), ("BOCompletedTime", stamp)],
            )

        return self._accept_initiator(
            _InitiatorJob(
                "account_balance",
                originator_id,
                conversation_id,
                result_url,
                timeout_url,
                initiator,
                credential,
                outcome,
                decide,
            )
        )

    def _reversal(self, body: dict[str, Any], app: str) -> tuple[int, dict[str, Any]]:
        del app
        initiator, credential, result_url, timeout_url = self._initiator_fields(body, "Initiator")
        v.choice(body.get("CommandID"), "CommandID", ("TransactionReversal",))
        receipt = v.required_text(body.get("TransactionID"), "TransactionID", max_length=20)
        amount = v.amount(body.get("Amount"), 1, 10**9)
        receiver = v.shortcode(body.get("ReceiverParty"), "ReceiverParty")
        # Daraja insists on its misspelling: the correct spelling reads as a missing field.
        v.choice(body.get("RecieverIdentifierType"), "RecieverIdentifierType", ("11", "4"))
        v.optional_text(body.get("Remarks"), "Remarks", max_length=100)
        v.optional_text(body.get("Occasion"), "Occasion", max_length=100)
        originator_id = self._ids.originator_conversation_id()
        conversation_id = self._ids.conversation_id(self._now())
        outcome = self._outcome("reversal", None, amount, None, self.config.result_delay)

        def decide() -> tuple[str, str, str, list[tuple[str, Any]]]:
            txn = self._transactions.get(receipt)
            # The Reversal API reverses C2B (including M-Pesa Express) only, not B2C.
            if txn is None or txn.kind not in ("stk", "c2b") or txn.shortcode != receiver:
                return "R000002", daraja.RESULT_DESCRIPTIONS["R000002"], "", []
            if txn.reversed:
                return "R000001", daraja.RESULT_DESCRIPTIONS["R000001"], "", []
            if amount != txn.amount:
                return "2006", daraja.RESULT_DESCRIPTIONS["2006"], "", []
            accounts = self._accounts(receiver)
            accounts["Utility Account"] -= amount
            txn.reversed = True
            now = self._now()
            new_receipt = self._ids.receipt(now)
            self._transactions[new_receipt] = _Transaction(
                new_receipt,
                "reversal",
                amount,
                receiver,
                txn.party,
                now,
                originator_id,
                conversation_id,
            )
            return (
                "0",
                daraja.RESULT_DESCRIPTIONS["0"],
                new_receipt,
                [
                    (
                        "DebitAccountBalance",
                        f"Utility Account|KES|{accounts['Utility Account']:.2f}",
                    ),
                    ("Amount", float(amount)),
                    ("TransCompletedTime", int(f"{now:%Y%m%d%H%M%S}")),
                    ("OriginalTransactionID", receipt),
                    ("Charge", 0.0),
                    ("CreditPartyPublicName", f"{txn.party} - John Doe"),
                    ("DebitPartyPublicName", f"{receiver} - pesa emulator"),
                ],
            )

        return self._accept_initiator(
            _InitiatorJob(
                "reversal",
                originator_id,
                conversation_id,
                result_url,
                timeout_url,
                initiator,
                credential,
                outcome,
                decide,
            )
        )


def _evict_oldest(table: dict[str, Any], limit: int, done: Callable[[Any], bool]) -> None:
    """Drop the oldest entry of an insertion-ordered table over ``limit`` once it is done."""
    if len(table) > limit:
        oldest = next(iter(table))
        if done(table[oldest]):
            del table[oldest]


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
