"""The Daraja clients: :class:`Daraja` (sync) and :class:`AsyncDaraja` (async).

Both execute the operations declared in :mod:`pesa.daraja`; they differ only in the
send/sleep loop.
"""

from __future__ import annotations

import time
from types import TracebackType
from typing import Any, Self

import anyio
import httpx

from pesa._logging import get_logger
from pesa.client._base import BaseDaraja
from pesa.client._token import AccessToken, TokenFetchError
from pesa.daraja._models import (
    C2BRegisterUrlResponse,
    C2BSimulateResponse,
    DarajaRequest,
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

__all__ = ["AsyncDaraja", "Daraja"]

log = get_logger("pesa.client")


class Daraja(BaseDaraja[httpx.Client, httpx.BaseTransport]):
    """The synchronous Daraja client: one pooled ``httpx.Client``, no I/O in the constructor.

    Example:
        >>> with Daraja.from_env() as mpesa:
        ...     push = mpesa.stk_push("0708374149", 10, "INV0042", "Order 42")
        ...     print(push.checkout_request_id)

    Args:
        options: a :class:`DarajaOptions` (every option, checked once).
        transport: an httpx transport (``httpx.MockTransport`` in tests).
        **fields: any :class:`DarajaOptions` field, replacing the one in ``options``.
    """

    def _open(self, transport: httpx.BaseTransport | None) -> httpx.Client:
        return httpx.Client(transport=transport, **self._pool_options())

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
            sent = self._request(self._http, op, body, timeout)
            try:
                response = self._http.send(sent, auth=auth)
            except (httpx.RequestError, TokenFetchError) as exc:
                step = self._after_exception(op, sent, exc, attempt)
            else:
                step = self._after_response(op, request, sent, response, attempt)
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
                step = self._after_exception(OAUTH, auth.token_request(), exc, attempt)
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

        Example (``await`` it on :class:`AsyncDaraja`):
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


class AsyncDaraja(BaseDaraja[httpx.AsyncClient, httpx.AsyncBaseTransport]):
    """The asynchronous Daraja client: one pooled ``httpx.AsyncClient``, no I/O in the constructor.

    Example:
        >>> async with AsyncDaraja.from_env() as mpesa:
        ...     push = await mpesa.stk_push("0708374149", 10, "INV0042", "Order 42")
        ...     print(push.checkout_request_id)

    Args:
        options: a :class:`DarajaOptions` (every option, checked once).
        transport: an httpx transport (``httpx.MockTransport`` in tests).
        **fields: any :class:`DarajaOptions` field, replacing the one in ``options``.
    """

    def _open(self, transport: httpx.AsyncBaseTransport | None) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=transport, **self._pool_options())

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
            sent = self._request(self._http, op, body, timeout)
            try:
                response = await self._http.send(sent, auth=auth)
            except (httpx.RequestError, TokenFetchError) as exc:
                step = self._after_exception(op, sent, exc, attempt)
            else:
                step = self._after_response(op, request, sent, response, attempt)
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
                step = self._after_exception(OAUTH, auth.token_request(), exc, attempt)
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

        Example (``await`` it on :class:`AsyncDaraja`):
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
