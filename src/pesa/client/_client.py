"""The Daraja clients: :class:`Daraja` (sync) and :class:`AsyncDaraja` (async).

Both execute the operations declared in :mod:`pesa.daraja`; they differ only in the
send/sleep loop.
"""

from __future__ import annotations

import ssl
import time
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import anyio
import httpx

from pesa._constants import (
    DEFAULT_B2C_MAX_AMOUNT,
    DEFAULT_B2C_MIN_AMOUNT,
    DEFAULT_ENVIRONMENT,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_RETRIES,
    DEFAULT_STK_MAX_AMOUNT,
    DEFAULT_STK_MIN_AMOUNT,
    DEFAULT_TIMEOUT,
    Environment,
)
from pesa._exceptions import DarajaError, ServerError, TransportError
from pesa._logging import get_logger
from pesa.client._base import BaseDaraja
from pesa.client._retry import (
    RetryPolicy,
    classify_transport_error,
    parse_retry_after,
    should_retry,
)
from pesa.client._token import AccessToken, FileTokenStore, TokenFetchError, TokenStore
from pesa.daraja._models import (
    C2BRegisterUrlResponse,
    C2BSimulateResponse,
    DarajaRequest,
    DarajaResponse,
    InitiatorResponse,
    StkPushResponse,
    StkQueryResponse,
)
from pesa.daraja._operations import (
    ACCOUNT_BALANCE,
    B2C_PAYMENT,
    OAUTH,
    REVERSAL,
    STK_PUSH,
    STK_QUERY,
    TRANSACTION_STATUS,
    Operation,
)
from pesa.daraja._time import Clock

if TYPE_CHECKING:
    from pesa.config import Settings

__all__ = ["AsyncDaraja", "Daraja"]

log = get_logger("pesa.client")


def _settings_kwargs(settings: Settings) -> dict[str, Any]:
    def secret(name: str) -> str | None:
        value = getattr(settings, name)
        return None if value is None else str(value.get_secret_value())

    return {
        "environment": settings.env,
        "base_url": settings.base_url,
        "consumer_key": secret("consumer_key"),
        "consumer_secret": secret("consumer_secret"),
        "shortcode": settings.shortcode,
        "passkey": secret("passkey"),
        "till": settings.till,
        "initiator_name": settings.initiator_name,
        "initiator_password": secret("initiator_password"),
        "certificate_path": settings.certificate_path,
        "callback_url": settings.callback_url,
        "result_url": settings.result_url,
        "timeout_url": settings.timeout_url,
        "timeout": settings.timeout,
        "max_retries": settings.max_retries,
        "rate_limit": settings.rate_limit,
        "token_store": (
            FileTokenStore(settings.token_cache_path) if settings.token_cache_path else None
        ),
    }


class _Step:
    """What the send loop does after one attempt: return, raise, or sleep and retry."""

    __slots__ = ("delay", "error", "result")

    def __init__(
        self,
        result: DarajaResponse | None = None,
        error: BaseException | None = None,
        delay: float = 0.0,
    ) -> None:
        self.result = result
        self.error = error
        self.delay = delay


class _Loop(BaseDaraja):
    """The decision half of the send loop, shared by both clients."""

    def _after_exception(
        self, op: Operation[Any, Any], body: dict[str, Any], exc: Exception, attempt: int
    ) -> _Step:
        if isinstance(exc, TokenFetchError):
            # The operation itself was never sent: retry OAuth's transient failures.
            failure: Any = exc.error
            moves_money = False
            final: BaseException = exc.error
        elif isinstance(exc, httpx.RequestError):
            failure = classify_transport_error(exc)
            moves_money = op.moves_money
            if failure == "maybe_sent" and op.moves_money:
                log.warning("%s: %s after sending; outcome unknown", op.name, type(exc).__name__)
                return _Step(error=self._outcome_unknown(op, body, exc))
            final = TransportError(f"{op.name}: {type(exc).__name__}: {exc or 'no answer'}")
            final.__cause__ = exc
        else:
            return _Step(error=exc)
        decision = should_retry(
            operation=op.name,
            moves_money=moves_money,
            failure=failure,
            attempt=attempt,
            policy=self.retry_policy,
        )
        if not decision.retry:
            return _Step(error=final)
        delay = self.retry_policy.delay(attempt)
        log.info(
            "retrying %s (attempt %d) in %.2fs: %s", op.name, attempt + 1, delay, decision.reason
        )
        return _Step(delay=delay)

    def _after_response(
        self,
        op: Operation[Any, Any],
        request: DarajaRequest,
        body: dict[str, Any],
        response: httpx.Response,
        attempt: int,
    ) -> _Step:
        outcome = self._interpret(op, request, response)
        if not isinstance(outcome, DarajaError):
            log.debug("%s answered %d", op.name, response.status_code)
            return _Step(result=outcome)
        log.debug("%s answered %d: %s", op.name, response.status_code, outcome)
        if op.moves_money and response.is_success and isinstance(outcome, ServerError):
            # A 2xx we cannot read: the request was accepted, perhaps. Never re-send.
            return _Step(error=self._outcome_unknown(op, body, outcome))
        decision = should_retry(
            operation=op.name,
            moves_money=op.moves_money,
            failure=outcome,
            attempt=attempt,
            policy=self.retry_policy,
        )
        if not decision.retry:
            return _Step(error=outcome)
        delay = self.retry_policy.delay(
            attempt, parse_retry_after(response.headers.get("Retry-After"))
        )
        log.info(
            "retrying %s (attempt %d) in %.2fs: %s", op.name, attempt + 1, delay, decision.reason
        )
        return _Step(delay=delay)


class Daraja(_Loop):
    """The synchronous Daraja client: one pooled ``httpx.Client``, no I/O in the constructor.

    Example:
        >>> with Daraja.from_env() as mpesa:
        ...     push = mpesa.stk_push("0708374149", 10, "INV0042", "Order 42")
        ...     print(push.checkout_request_id)

    Args:
        environment: ``"emulator"`` (default), ``"sandbox"`` or ``"production"``;
            production is never chosen implicitly.
        base_url: overrides the environment's base URL.
        consumer_key, consumer_secret: the Daraja app's credentials.
        shortcode: PayBill / HO number (``BusinessShortCode``; ``PartyA`` for B2C).
        passkey: the Lipa Na M-Pesa Online passkey.
        till: a till number: STK pushes become Buy Goods with ``PartyB`` = till.
        initiator_name, initiator_password: the API operator for initiator APIs.
        security_credential: a ready ``SecurityCredential`` (skips the encryption).
        certificate_path: the certificate to encrypt the credential with (required for the
            emulator; defaults to the bundled sandbox/production certificate).
        callback_url, result_url, timeout_url: defaults for the per-call URLs.
        timeout: seconds per HTTP request (connect is capped at 10 s).
        max_retries: re-sends of safe requests (money-moving ones: only if never sent).
        retry_policy: the full policy (overrides ``max_retries``).
        rate_limit: at most this many requests per second from this client.
        clock: where timestamps and token expiry read the time.
        token_store: where tokens are cached (share one between processes).
        verify: TLS verification: ``True``, ``False`` or a CA bundle path (the emulator's
            ``--tls`` certificate).
        transport: an httpx transport (``httpx.MockTransport`` in tests).
        stk_amount_limits, b2c_amount_limits: ``(minimum, maximum)`` whole shillings.
    """

    def __init__(
        self,
        *,
        environment: Environment | str = DEFAULT_ENVIRONMENT,
        base_url: str | None = None,
        consumer_key: str | None = None,
        consumer_secret: str | None = None,
        shortcode: str | int | None = None,
        passkey: str | None = None,
        till: str | int | None = None,
        initiator_name: str | None = None,
        initiator_password: str | None = None,
        security_credential: str | None = None,
        certificate_path: str | Path | None = None,
        callback_url: str | None = None,
        result_url: str | None = None,
        timeout_url: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        retry_policy: RetryPolicy | None = None,
        rate_limit: float | None = None,
        clock: Clock | None = None,
        token_store: TokenStore | None = None,
        verify: bool | str | Path | ssl.SSLContext = True,
        transport: httpx.BaseTransport | None = None,
        stk_amount_limits: tuple[int, int] = (DEFAULT_STK_MIN_AMOUNT, DEFAULT_STK_MAX_AMOUNT),
        b2c_amount_limits: tuple[int, int] = (DEFAULT_B2C_MIN_AMOUNT, DEFAULT_B2C_MAX_AMOUNT),
    ) -> None:
        super().__init__(
            environment=environment,
            base_url=base_url,
            consumer_key=consumer_key,
            consumer_secret=consumer_secret,
            shortcode=shortcode,
            passkey=passkey,
            till=till,
            initiator_name=initiator_name,
            initiator_password=initiator_password,
            security_credential=security_credential,
            certificate_path=certificate_path,
            callback_url=callback_url,
            result_url=result_url,
            timeout_url=timeout_url,
            timeout=timeout,
            max_retries=max_retries,
            retry_policy=retry_policy,
            rate_limit=rate_limit,
            clock=clock,
            token_store=token_store,
            verify=verify,
            stk_amount_limits=stk_amount_limits,
            b2c_amount_limits=b2c_amount_limits,
        )
        self._http = httpx.Client(
            base_url=self.base_url,
            timeout=self._timeout(None),
            verify=self.verify,
            transport=transport,
            limits=httpx.Limits(max_connections=DEFAULT_MAX_CONNECTIONS),
            headers={"Accept": "application/json"},
        )

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> Self:
        """Build a client from a :class:`pesa.Settings`; keyword arguments win."""
        return cls(**{**_settings_kwargs(settings), **overrides})

    @classmethod
    def from_env(cls, **overrides: Any) -> Self:
        """Build a client from ``PESA_*`` variables (and ``.env``); keyword arguments win."""
        from pesa.config import Settings

        return cls.from_settings(Settings(), **overrides)

    # -- lifecycle ----------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- the send loop --------------------------------------------------------------------

    def _execute(
        self, op: Operation[Any, Any], request: DarajaRequest, timeout: float | None
    ) -> Any:
        body = op.encode(request)
        auth = self.auth
        attempt = 1
        while True:
            if self.rate_limiter is not None:
                self.rate_limiter.wait()
            log.debug("%s %s %s", op.method, op.path, body)
            try:
                response = self._http.send(self._request(self._http, op, body, timeout), auth=auth)
            except (httpx.RequestError, TokenFetchError) as exc:
                step = self._after_exception(op, body, exc, attempt)
            else:
                step = self._after_response(op, request, body, response, attempt)
            if step.result is not None:
                return step.result
            if step.error is not None:
                raise step.error
            time.sleep(step.delay)
            attempt += 1

    # -- operations -----------------------------------------------------------------------

    def access_token(self, *, refresh: bool = False) -> AccessToken:
        """A valid access token (``GET /oauth/v1/generate``), cached until shortly before expiry.

        Raises:
            AuthenticationError: the consumer key/secret were refused.
        """
        auth = self.auth
        attempt = 1
        while True:
            try:
                return auth.sync_token(self._http, refresh=refresh)
            except (httpx.RequestError, TokenFetchError) as exc:
                step = self._after_exception(OAUTH, {}, exc, attempt)
            if step.error is not None:
                raise step.error
            time.sleep(step.delay)
            attempt += 1

    def stk_push(
        self,
        phone: str | int,
        amount: Any,
        account_reference: str,
        description: str | None = None,
        callback_url: str | None = None,
        till: str | int | None = None,
        *,
        timeout: float | None = None,
    ) -> StkPushResponse:
        """Send an M-Pesa Express prompt (``POST /mpesa/stkpush/v1/processrequest``).

        The answer means "accepted for processing", not "paid": the outcome arrives at the
        callback URL (parse it with :func:`pesa.parse_stk_callback`) or by :meth:`stk_query`.

        Example:
            >>> mpesa.stk_push("0708374149", 10, "INV0042").checkout_request_id
            'ws_CO_...'

        Raises:
            ValidationError: bad phone, amount, reference or description (nothing sent).
            OutcomeUnknownError: sent, but no answer: settle with :meth:`stk_query`.
            DarajaError: Daraja refused the request.
        """
        request = self._build_stk_push(
            phone, amount, account_reference, description, callback_url, till
        )
        result: StkPushResponse = self._execute(STK_PUSH, request, timeout)
        return result

    def stk_query(
        self, checkout_request_id: str, *, timeout: float | None = None
    ) -> StkQueryResponse:
        """Ask for the state of an STK push (``POST /mpesa/stkpushquery/v1/query``).

        Returns ``pending=True`` while the prompt is open (``500.001.1001 The transaction
        is being processed``), else the final ``result_code``.
        """
        request = self._build_stk_query(checkout_request_id)
        result: StkQueryResponse = self._execute(STK_QUERY, request, timeout)
        return result

    def c2b_register_urls(
        self,
        confirmation_url: str,
        validation_url: str,
        *,
        shortcode: str | int | None = None,
        response_type: str = "Completed",
        version: int = 2,
        timeout: float | None = None,
    ) -> C2BRegisterUrlResponse:
        """Register C2B URLs (``POST /mpesa/c2b/v{1,2}/registerurl``).

        ``version`` must match the C2B product on the Daraja app (v1 sends hashed
        MSISDNs, v2 masked ones; REFERENCE §7.1 marks the choice unsettled).
        """
        request = self._build_c2b_register(
            confirmation_url, validation_url, shortcode, response_type
        )
        result: C2BRegisterUrlResponse = self._execute(
            self._c2b_operation("register", version), request, timeout
        )
        return result

    def c2b_simulate(
        self,
        phone: str | int,
        amount: Any,
        *,
        bill_ref_number: str | None = None,
        shortcode: str | int | None = None,
        command_id: str = "CustomerPayBillOnline",
        version: int = 2,
        timeout: float | None = None,
    ) -> C2BSimulateResponse:
        """Simulate a customer paying the shortcode (``POST /mpesa/c2b/v{1,2}/simulate``).

        Sandbox and emulator only; never re-sent once it may have left.
        """
        request = self._build_c2b_simulate(phone, amount, bill_ref_number, shortcode, command_id)
        result: C2BSimulateResponse = self._execute(
            self._c2b_operation("simulate", version), request, timeout
        )
        return result

    def b2c_payment(
        self,
        phone: str | int,
        amount: Any,
        remarks: str,
        *,
        originator_conversation_id: str | None = None,
        command_id: str = "BusinessPayment",
        occasion: str | None = None,
        shortcode: str | int | None = None,
        result_url: str | None = None,
        timeout_url: str | None = None,
        timeout: float | None = None,
    ) -> InitiatorResponse:
        """Pay a customer (``POST /mpesa/b2c/v3/paymentrequest``).

        Pass your own ``originator_conversation_id`` (store it first): it is the key to
        settle an :class:`OutcomeUnknownError` by :meth:`transaction_status`, and Daraja
        refuses a duplicate. A random one is generated otherwise.
        """
        request = self._build_b2c(
            phone,
            amount,
            remarks,
            originator_conversation_id,
            command_id,
            occasion,
            shortcode,
            result_url,
            timeout_url,
        )
        result: InitiatorResponse = self._execute(B2C_PAYMENT, request, timeout)
        return result

    def transaction_status(
        self,
        *,
        transaction_id: str | None = None,
        original_conversation_id: str | None = None,
        remarks: str = "Status query",
        occasion: str | None = None,
        shortcode: str | int | None = None,
        identifier_type: str = "4",
        result_url: str | None = None,
        timeout_url: str | None = None,
        timeout: float | None = None,
    ) -> InitiatorResponse:
        """Ask for a transaction's status (``POST /mpesa/transactionstatus/v1/query``).

        By M-Pesa receipt (``transaction_id``) and/or the original request's
        ``OriginatorConversationID``; the answer arrives at ``result_url``.
        """
        request = self._build_transaction_status(
            transaction_id,
            original_conversation_id,
            remarks,
            occasion,
            shortcode,
            identifier_type,
            result_url,
            timeout_url,
        )
        result: InitiatorResponse = self._execute(TRANSACTION_STATUS, request, timeout)
        return result

    def account_balance(
        self,
        *,
        remarks: str = "Balance query",
        shortcode: str | int | None = None,
        identifier_type: str = "4",
        result_url: str | None = None,
        timeout_url: str | None = None,
        timeout: float | None = None,
    ) -> InitiatorResponse:
        """Ask for the shortcode's balances (``POST /mpesa/accountbalance/v1/query``).

        The balances arrive at ``result_url``; parse them with
        :meth:`pesa.daraja.ResultEnvelope.account_balances`.
        """
        request = self._build_account_balance(
            remarks, shortcode, identifier_type, result_url, timeout_url
        )
        result: InitiatorResponse = self._execute(ACCOUNT_BALANCE, request, timeout)
        return result

    def reversal(
        self,
        transaction_id: str,
        amount: Any,
        *,
        receiver_party: str | int | None = None,
        receiver_identifier_type: str = "11",
        remarks: str = "Reversal",
        occasion: str | None = None,
        result_url: str | None = None,
        timeout_url: str | None = None,
        timeout: float | None = None,
    ) -> InitiatorResponse:
        """Reverse a C2B payment (``POST /mpesa/reversal/v1/request``); never re-sent once sent."""
        request = self._build_reversal(
            transaction_id,
            amount,
            receiver_party,
            receiver_identifier_type,
            remarks,
            occasion,
            result_url,
            timeout_url,
        )
        result: InitiatorResponse = self._execute(REVERSAL, request, timeout)
        return result


class AsyncDaraja(_Loop):
    """The asynchronous Daraja client: one pooled ``httpx.AsyncClient``, no I/O in the constructor.

    Example:
        >>> async with AsyncDaraja.from_env() as mpesa:
        ...     push = await mpesa.stk_push("0708374149", 10, "INV0042", "Order 42")
        ...     print(push.checkout_request_id)

    Args:
        environment: ``"emulator"`` (default), ``"sandbox"`` or ``"production"``;
            production is never chosen implicitly.
        base_url: overrides the environment's base URL.
        consumer_key, consumer_secret: the Daraja app's credentials.
        shortcode: PayBill / HO number (``BusinessShortCode``; ``PartyA`` for B2C).
        passkey: the Lipa Na M-Pesa Online passkey.
        till: a till number: STK pushes become Buy Goods with ``PartyB`` = till.
        initiator_name, initiator_password: the API operator for initiator APIs.
        security_credential: a ready ``SecurityCredential`` (skips the encryption).
        certificate_path: the certificate to encrypt the credential with (required for the
            emulator; defaults to the bundled sandbox/production certificate).
        callback_url, result_url, timeout_url: defaults for the per-call URLs.
        timeout: seconds per HTTP request (connect is capped at 10 s).
        max_retries: re-sends of safe requests (money-moving ones: only if never sent).
        retry_policy: the full policy (overrides ``max_retries``).
        rate_limit: at most this many requests per second from this client.
        clock: where timestamps and token expiry read the time.
        token_store: where tokens are cached (share one between processes).
        verify: TLS verification: ``True``, ``False`` or a CA bundle path (the emulator's
            ``--tls`` certificate).
        transport: an httpx transport (``httpx.MockTransport`` in tests).
        stk_amount_limits, b2c_amount_limits: ``(minimum, maximum)`` whole shillings.
    """

    def __init__(
        self,
        *,
        environment: Environment | str = DEFAULT_ENVIRONMENT,
        base_url: str | None = None,
        consumer_key: str | None = None,
        consumer_secret: str | None = None,
        shortcode: str | int | None = None,
        passkey: str | None = None,
        till: str | int | None = None,
        initiator_name: str | None = None,
        initiator_password: str | None = None,
        security_credential: str | None = None,
        certificate_path: str | Path | None = None,
        callback_url: str | None = None,
        result_url: str | None = None,
        timeout_url: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        retry_policy: RetryPolicy | None = None,
        rate_limit: float | None = None,
        clock: Clock | None = None,
        token_store: TokenStore | None = None,
        verify: bool | str | Path | ssl.SSLContext = True,
        transport: httpx.AsyncBaseTransport | None = None,
        stk_amount_limits: tuple[int, int] = (DEFAULT_STK_MIN_AMOUNT, DEFAULT_STK_MAX_AMOUNT),
        b2c_amount_limits: tuple[int, int] = (DEFAULT_B2C_MIN_AMOUNT, DEFAULT_B2C_MAX_AMOUNT),
    ) -> None:
        super().__init__(
            environment=environment,
            base_url=base_url,
            consumer_key=consumer_key,
            consumer_secret=consumer_secret,
            shortcode=shortcode,
            passkey=passkey,
            till=till,
            initiator_name=initiator_name,
            initiator_password=initiator_password,
            security_credential=security_credential,
            certificate_path=certificate_path,
            callback_url=callback_url,
            result_url=result_url,
            timeout_url=timeout_url,
            timeout=timeout,
            max_retries=max_retries,
            retry_policy=retry_policy,
            rate_limit=rate_limit,
            clock=clock,
            token_store=token_store,
            verify=verify,
            stk_amount_limits=stk_amount_limits,
            b2c_amount_limits=b2c_amount_limits,
        )
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=self._timeout(None),
            verify=self.verify,
            transport=transport,
            limits=httpx.Limits(max_connections=DEFAULT_MAX_CONNECTIONS),
            headers={"Accept": "application/json"},
        )

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> Self:
        """Build a client from a :class:`pesa.Settings`; keyword arguments win."""
        return cls(**{**_settings_kwargs(settings), **overrides})

    @classmethod
    def from_env(cls, **overrides: Any) -> Self:
        """Build a client from ``PESA_*`` variables (and ``.env``); keyword arguments win."""
        from pesa.config import Settings

        return cls.from_settings(Settings(), **overrides)

    # -- lifecycle ----------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- the send loop --------------------------------------------------------------------

    async def _execute(
        self, op: Operation[Any, Any], request: DarajaRequest, timeout: float | None
    ) -> Any:
        body = op.encode(request)
        auth = self.auth
        attempt = 1
        while True:
            if self.rate_limiter is not None:
                await self.rate_limiter.await_slot()
            log.debug("%s %s %s", op.method, op.path, body)
            try:
                response = await self._http.send(
                    self._request(self._http, op, body, timeout), auth=auth
                )
            except (httpx.RequestError, TokenFetchError) as exc:
                step = self._after_exception(op, body, exc, attempt)
            else:
                step = self._after_response(op, request, body, response, attempt)
            if step.result is not None:
                return step.result
            if step.error is not None:
                raise step.error
            await anyio.sleep(step.delay)
            attempt += 1

    # -- operations -----------------------------------------------------------------------

    async def access_token(self, *, refresh: bool = False) -> AccessToken:
        """A valid access token (``GET /oauth/v1/generate``), cached until shortly before expiry.

        Raises:
            AuthenticationError: the consumer key/secret were refused.
        """
        auth = self.auth
        attempt = 1
        while True:
            try:
                return await auth.async_token(self._http, refresh=refresh)
            except (httpx.RequestError, TokenFetchError) as exc:
                step = self._after_exception(OAUTH, {}, exc, attempt)
            if step.error is not None:
                raise step.error
            await anyio.sleep(step.delay)
            attempt += 1

    async def stk_push(
        self,
        phone: str | int,
        amount: Any,
        account_reference: str,
        description: str | None = None,
        callback_url: str | None = None,
        till: str | int | None = None,
        *,
        timeout: float | None = None,
    ) -> StkPushResponse:
        """Send an M-Pesa Express prompt (``POST /mpesa/stkpush/v1/processrequest``).

        The answer means "accepted for processing", not "paid": the outcome arrives at the
        callback URL (parse it with :func:`pesa.parse_stk_callback`) or by :meth:`stk_query`.

        Example:
            >>> (await mpesa.stk_push("0708374149", 10, "INV0042")).checkout_request_id
            'ws_CO_...'

        Raises:
            ValidationError: bad phone, amount, reference or description (nothing sent).
            OutcomeUnknownError: sent, but no answer: settle with :meth:`stk_query`.
            DarajaError: Daraja refused the request.
        """
        request = self._build_stk_push(
            phone, amount, account_reference, description, callback_url, till
        )
        result: StkPushResponse = await self._execute(STK_PUSH, request, timeout)
        return result

    async def stk_query(
        self, checkout_request_id: str, *, timeout: float | None = None
    ) -> StkQueryResponse:
        """Ask for the state of an STK push (``POST /mpesa/stkpushquery/v1/query``).

        Returns ``pending=True`` while the prompt is open (``500.001.1001 The transaction
        is being processed``), else the final ``result_code``.
        """
        request = self._build_stk_query(checkout_request_id)
        result: StkQueryResponse = await self._execute(STK_QUERY, request, timeout)
        return result

    async def c2b_register_urls(
        self,
        confirmation_url: str,
        validation_url: str,
        *,
        shortcode: str | int | None = None,
        response_type: str = "Completed",
        version: int = 2,
        timeout: float | None = None,
    ) -> C2BRegisterUrlResponse:
        """Register C2B URLs (``POST /mpesa/c2b/v{1,2}/registerurl``).

        ``version`` must match the C2B product on the Daraja app (v1 sends hashed
        MSISDNs, v2 masked ones; REFERENCE §7.1 marks the choice unsettled).
        """
        request = self._build_c2b_register(
            confirmation_url, validation_url, shortcode, response_type
        )
        result: C2BRegisterUrlResponse = await self._execute(
            self._c2b_operation("register", version), request, timeout
        )
        return result

    async def c2b_simulate(
        self,
        phone: str | int,
        amount: Any,
        *,
        bill_ref_number: str | None = None,
        shortcode: str | int | None = None,
        command_id: str = "CustomerPayBillOnline",
        version: int = 2,
        timeout: float | None = None,
    ) -> C2BSimulateResponse:
        """Simulate a customer paying the shortcode (``POST /mpesa/c2b/v{1,2}/simulate``).

        Sandbox and emulator only; never re-sent once it may have left.
        """
        request = self._build_c2b_simulate(phone, amount, bill_ref_number, shortcode, command_id)
        result: C2BSimulateResponse = await self._execute(
            self._c2b_operation("simulate", version), request, timeout
        )
        return result

    async def b2c_payment(
        self,
        phone: str | int,
        amount: Any,
        remarks: str,
        *,
        originator_conversation_id: str | None = None,
        command_id: str = "BusinessPayment",
        occasion: str | None = None,
        shortcode: str | int | None = None,
        result_url: str | None = None,
        timeout_url: str | None = None,
        timeout: float | None = None,
    ) -> InitiatorResponse:
        """Pay a customer (``POST /mpesa/b2c/v3/paymentrequest``).

        Pass your own ``originator_conversation_id`` (store it first): it is the key to
        settle an :class:`OutcomeUnknownError` by :meth:`transaction_status`, and Daraja
        refuses a duplicate. A random one is generated otherwise.
        """
        request = self._build_b2c(
            phone,
            amount,
            remarks,
            originator_conversation_id,
            command_id,
            occasion,
            shortcode,
            result_url,
            timeout_url,
        )
        result: InitiatorResponse = await self._execute(B2C_PAYMENT, request, timeout)
        return result

    async def transaction_status(
        self,
        *,
        transaction_id: str | None = None,
        original_conversation_id: str | None = None,
        remarks: str = "Status query",
        occasion: str | None = None,
        shortcode: str | int | None = None,
        identifier_type: str = "4",
        result_url: str | None = None,
        timeout_url: str | None = None,
        timeout: float | None = None,
    ) -> InitiatorResponse:
        """Ask for a transaction's status (``POST /mpesa/transactionstatus/v1/query``).

        By M-Pesa receipt (``transaction_id``) and/or the original request's
        ``OriginatorConversationID``; the answer arrives at ``result_url``.
        """
        request = self._build_transaction_status(
            transaction_id,
            original_conversation_id,
            remarks,
            occasion,
            shortcode,
            identifier_type,
            result_url,
            timeout_url,
        )
        result: InitiatorResponse = await self._execute(TRANSACTION_STATUS, request, timeout)
        return result

    async def account_balance(
        self,
        *,
        remarks: str = "Balance query",
        shortcode: str | int | None = None,
        identifier_type: str = "4",
        result_url: str | None = None,
        timeout_url: str | None = None,
        timeout: float | None = None,
    ) -> InitiatorResponse:
        """Ask for the shortcode's balances (``POST /mpesa/accountbalance/v1/query``).

        The balances arrive at ``result_url``; parse them with
        :meth:`pesa.daraja.ResultEnvelope.account_balances`.
        """
        request = self._build_account_balance(
            remarks, shortcode, identifier_type, result_url, timeout_url
        )
        result: InitiatorResponse = await self._execute(ACCOUNT_BALANCE, request, timeout)
        return result

    async def reversal(
        self,
        transaction_id: str,
        amount: Any,
        *,
        receiver_party: str | int | None = None,
        receiver_identifier_type: str = "11",
        remarks: str = "Reversal",
        occasion: str | None = None,
        result_url: str | None = None,
        timeout_url: str | None = None,
        timeout: float | None = None,
    ) -> InitiatorResponse:
        """Reverse a C2B payment (``POST /mpesa/reversal/v1/request``); never re-sent once sent."""
        request = self._build_reversal(
            transaction_id,
            amount,
            receiver_party,
            receiver_identifier_type,
            remarks,
            occasion,
            result_url,
            timeout_url,
        )
        result: InitiatorResponse = await self._execute(REVERSAL, request, timeout)
        return result
