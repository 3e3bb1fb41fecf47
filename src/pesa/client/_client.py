"""The Daraja clients: :class:`Daraja` (sync) and :class:`AsyncDaraja` (async).

Both execute the operations declared in :mod:`pesa.daraja`; they differ only in the
send/sleep loop.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import date, datetime
from types import TracebackType
from typing import Any, Self, TypeVar, cast

import anyio
import httpx

from pesa._exceptions import ConfigurationError
from pesa._logging import get_logger
from pesa.client._base import BaseDaraja
from pesa.client._token import AccessToken, TokenFetchError
from pesa.daraja._models import (
    C2BRegisterUrlResponse,
    C2BSimulateResponse,
    DarajaRequest,
    DarajaResponse,
    InitiatorResponse,
    StkPushResponse,
    StkQueryResponse,
)
from pesa.daraja._notifications import BillPayment
from pesa.daraja._operations import (
    ACCOUNT_BALANCE,
    B2B_BUY_GOODS,
    B2B_EXPRESS_CHECKOUT,
    B2B_PAY_BILL,
    B2C_PAYMENT,
    B2C_TOP_UP,
    B2POCHI_PAYMENT,
    BILL_MANAGER_BULK_INVOICE,
    BILL_MANAGER_CANCEL_BULK,
    BILL_MANAGER_CANCEL_INVOICE,
    BILL_MANAGER_CHANGE_OPT_IN,
    BILL_MANAGER_INVOICE,
    BILL_MANAGER_OPT_IN,
    BILL_MANAGER_RECONCILE,
    OAUTH,
    PULL_REGISTER,
    QR_CODE,
    RATIBA_CREATE,
    REVERSAL,
    STK_PUSH,
    STK_QUERY,
    TAX_REMITTANCE,
    TRANSACTION_STATUS,
    Operation,
)
from pesa.daraja._products import (
    B2BExpressCheckoutResponse,
    BillManagerOptInResponse,
    BillManagerResponse,
    Invoice,
    PulledTransaction,
    PullQueryResponse,
    PullRegisterResponse,
    QRCodeResponse,
    StandingOrderResponse,
)

__all__ = ["AsyncDaraja", "Daraja"]

log = get_logger("pesa.client")

RequestT = TypeVar("RequestT", bound=DarajaRequest)
_MAX_PULL_PAGES = 1000
ResponseT = TypeVar("ResponseT", bound=DarajaResponse)


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
        self, op: Operation[RequestT, ResponseT], request: RequestT, timeout: float | None
    ) -> ResponseT:
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
                return cast(ResponseT, step.result)
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

    # -- the business products -----------------------------------------------------------

    def b2pochi_payment(
        self,
        phone: str | int,
        amount: Any,
        remarks: str,
        *,
        originator_conversation_id: str | None = None,
        occasion: str | None = None,
        shortcode: str | int | None = None,
        result_url: str | None = None,
        timeout_url: str | None = None,
        timeout: float | None = None,
    ) -> InitiatorResponse:
        """Pay a Pochi la Biashara wallet (``POST /mpesa/b2pochi/v1/paymentrequest``).

        B2C v3's body with ``CommandID`` ``BusinessPayToPochi``; the outcome arrives at
        ``result_url`` as a ``{"Result": ...}`` (:func:`pesa.daraja.parse_result`). Pass
        your own ``originator_conversation_id`` (store it first): never re-sent once it may
        have left; settle an :class:`OutcomeUnknownError` by :meth:`transaction_status`.

        Example (``await`` it on :class:`AsyncDaraja`):
            >>> mpesa.b2pochi_payment("0708374149", 500, "Stock", originator_conversation_id="p-1")
        """
        request = self._build_b2pochi(
            phone,
            amount,
            remarks,
            originator_conversation_id,
            occasion,
            shortcode,
            result_url,
            timeout_url,
        )
        return self._execute(B2POCHI_PAYMENT, request, timeout)

    def b2b_pay_bill(
        self,
        paybill: str | int,
        amount: Any,
        account_reference: str,
        *,
        remarks: str = "Business payment",
        requester: str | int | None = None,
        occasion: str | None = None,
        shortcode: str | int | None = None,
        result_url: str | None = None,
        timeout_url: str | None = None,
        timeout: float | None = None,
    ) -> InitiatorResponse:
        """Pay another business's PayBill (``POST /mpesa/b2b/v1/paymentrequest``,
        ``BusinessPayBill``).

        ``account_reference`` is the bill's account number (at most 13 characters);
        ``requester`` the customer on whose behalf you pay, if any. Money moves from your
        Working account; the outcome arrives at ``result_url``. Never re-sent once it may
        have left (B2B has no idempotency key): settle an :class:`OutcomeUnknownError` from
        the Result or your statement, never by sending again.

        Example (``await`` it on :class:`AsyncDaraja`):
            >>> mpesa.b2b_pay_bill(600000, 2500, "INV-2024-17")
        """
        request = self._build_b2b(
            "BusinessPayBill",
            paybill,
            "paybill",
            amount,
            account_reference,
            requester,
            remarks,
            occasion,
            shortcode,
            result_url,
            timeout_url,
        )
        return self._execute(B2B_PAY_BILL, request, timeout)

    def b2b_buy_goods(
        self,
        till: str | int,
        amount: Any,
        *,
        account_reference: str | None = None,
        remarks: str = "Business payment",
        requester: str | int | None = None,
        occasion: str | None = None,
        shortcode: str | int | None = None,
        result_url: str | None = None,
        timeout_url: str | None = None,
        timeout: float | None = None,
    ) -> InitiatorResponse:
        """Pay a merchant's till (``POST /mpesa/b2b/v1/paymentrequest``, ``BusinessBuyGoods``).

        Same rules as :meth:`b2b_pay_bill`; ``account_reference`` is optional.

        Example (``await`` it on :class:`AsyncDaraja`):
            >>> mpesa.b2b_buy_goods(5123456, 1200)
        """
        request = self._build_b2b(
            "BusinessBuyGoods",
            till,
            "till",
            amount,
            account_reference,
            requester,
            remarks,
            occasion,
            shortcode,
            result_url,
            timeout_url,
        )
        return self._execute(B2B_BUY_GOODS, request, timeout)

    def b2c_top_up(
        self,
        b2c_shortcode: str | int,
        amount: Any,
        *,
        account_reference: str | None = None,
        remarks: str = "B2C top up",
        requester: str | int | None = None,
        shortcode: str | int | None = None,
        result_url: str | None = None,
        timeout_url: str | None = None,
        timeout: float | None = None,
    ) -> InitiatorResponse:
        """Load a B2C shortcode's Utility account from your Working account (``POST
        /mpesa/b2b/v1/paymentrequest``, ``BusinessPayToBulk``, "B2C Account Top Up").

        Same rules as :meth:`b2b_pay_bill`.

        Example (``await`` it on :class:`AsyncDaraja`):
            >>> mpesa.b2c_top_up(600997, 100_000)
        """
        request = self._build_b2b(
            "BusinessPayToBulk",
            b2c_shortcode,
            "b2c_shortcode",
            amount,
            account_reference,
            requester,
            remarks,
            None,
            shortcode,
            result_url,
            timeout_url,
        )
        return self._execute(B2C_TOP_UP, request, timeout)

    def remit_tax(
        self,
        amount: Any,
        prn: str,
        *,
        remarks: str = "Tax remittance",
        shortcode: str | int | None = None,
        result_url: str | None = None,
        timeout_url: str | None = None,
        timeout: float | None = None,
    ) -> InitiatorResponse:
        """Pay tax to KRA (``POST /mpesa/b2b/v1/remittax``, ``PayTaxToKRA``, ``PartyB`` 572572).

        ``prn`` is KRA's Payment Registration Number (``AccountReference``). Money moves:
        never re-sent once it may have left; the outcome arrives at ``result_url``.

        Example (``await`` it on :class:`AsyncDaraja`):
            >>> mpesa.remit_tax(12_000, "2020123456789")
        """
        request = self._build_tax(amount, prn, remarks, shortcode, result_url, timeout_url)
        return self._execute(TAX_REMITTANCE, request, timeout)

    def b2b_express_checkout(
        self,
        till: str | int,
        amount: Any,
        payment_ref: str,
        partner_name: str,
        *,
        request_ref_id: str | None = None,
        receiver_shortcode: str | int | None = None,
        callback_url: str | None = None,
        timeout: float | None = None,
    ) -> B2BExpressCheckoutResponse:
        """Ask a merchant's till to pay you by a USSD prompt (``POST /v1/ussdpush/get-msisdn``).

        The till's nominated operator approves with their operator id and PIN; the outcome
        arrives at ``callback_url`` with lower-camel keys (parse it with
        :func:`pesa.daraja.parse_b2b_express_callback`; its ``requestId`` is the returned
        ``request_ref_id``). ``receiver_shortcode`` defaults to your shortcode. Never
        re-sent once it may have left.

        Example (``await`` it on :class:`AsyncDaraja`):
            >>> mpesa.b2b_express_checkout(5123456, 700, "INV-7", "Acme Supplies").request_ref_id
        """
        request = self._build_b2b_express(
            till,
            amount,
            payment_ref,
            partner_name,
            request_ref_id,
            receiver_shortcode,
            callback_url,
        )
        return self._execute(B2B_EXPRESS_CHECKOUT, request, timeout)

    def pull_register(
        self,
        nominated_number: str | int,
        callback_url: str,
        *,
        shortcode: str | int | None = None,
        timeout: float | None = None,
    ) -> PullRegisterResponse:
        """Register a shortcode for Pull Transactions (``POST /pulltransactions/v1/register``).

        ``ResponseStatus`` ``1000`` registered, ``1001`` already registered (both succeed;
        see ``already_registered``).

        Example (``await`` it on :class:`AsyncDaraja`):
            >>> mpesa.pull_register("0708374149", "https://example.com/pull").response_code
            '1000'
        """
        request = self._build_pull_register(nominated_number, callback_url, shortcode)
        return self._execute(PULL_REGISTER, request, timeout)

    def pull_query(
        self,
        start: datetime,
        end: datetime | None = None,
        *,
        offset: int = 0,
        shortcode: str | int | None = None,
        timeout: float | None = None,
    ) -> PullQueryResponse:
        """One page of the shortcode's C2B transactions (``POST /pulltransactions/v1/query``).

        ``start`` must be within the last 48 hours; ``end`` defaults to now (naive
        datetimes are Nairobi time). ``transactions`` is flat (Daraja nests it); ask for the
        next page with ``offset=`` the number already read, until a page is empty
        (``ResponseCode`` ``1001``). ``pull_transactions_method`` chooses GET or POST.

        Example (``await`` it on :class:`AsyncDaraja`):
            >>> page = mpesa.pull_query(datetime.now(UTC) - timedelta(hours=6))
            >>> [t.transaction_id for t in page.transactions]
        """
        request = self._build_pull_query(start, end, offset, shortcode)
        return self._execute(self._pull_query_operation(), request, timeout)

    def pull_transactions(
        self,
        start: datetime,
        end: datetime | None = None,
        *,
        shortcode: str | int | None = None,
        timeout: float | None = None,
    ) -> list[PulledTransaction]:
        """Every C2B transaction of the window, page after page (:meth:`pull_query`).

        ``end`` is fixed once (default now) so that every page reads the same window; each
        ``TransactionID`` is returned once, oldest page first. Reading stops at an empty
        page, a page with nothing new (a server ignoring ``OffSetValue``) or 1000 pages.

        Example (``await`` it on :class:`AsyncDaraja`):
            >>> missed = mpesa.pull_transactions(datetime.now(UTC) - timedelta(hours=48))
        """
        until = self._pull_end(end)
        pages = _PullPages()
        while pages.more:
            pages.add(
                self.pull_query(
                    start, until, offset=pages.offset, shortcode=shortcode, timeout=timeout
                )
            )
        return pages.found

    def qr_code(
        self,
        merchant_name: str,
        ref_no: str,
        amount: Any,
        trx_code: str,
        cpi: str | int,
        *,
        size: int = 300,
        timeout: float | None = None,
    ) -> QRCodeResponse:
        """Generate a Dynamic QR code (``POST /mpesa/qrcode/v1/generate``).

        ``trx_code``: ``BG`` buy goods (``cpi`` = till), ``WA`` withdraw at an agent till,
        ``PB`` PayBill (``cpi`` = PayBill, ``ref_no`` = account), ``SM`` send money and
        ``SB`` send to business (``cpi`` = a phone number). ``size`` is the square image's
        side in pixels. The answer's ``image`` is the decoded PNG.

        Example (``await`` it on :class:`AsyncDaraja`):
            >>> png = mpesa.qr_code("TEST SUPERMARKET", "Invoice 7", 100, "BG", 373132).image
        """
        request = self._build_qr(merchant_name, ref_no, amount, trx_code, cpi, size)
        return self._execute(QR_CODE, request, timeout)

    def ratiba_create(
        self,
        name: str,
        phone: str | int,
        amount: Any,
        account_reference: str,
        *,
        frequency: str | int,
        start_date: date,
        end_date: date,
        description: str | None = None,
        till: str | int | None = None,
        callback_url: str | None = None,
        shortcode: str | int | None = None,
        timeout: float | None = None,
    ) -> StandingOrderResponse:
        """Create an M-Pesa Ratiba standing order
        (``POST /standingorder/v1/createStandingOrderExternal``).

        ``frequency``: 1-8 or ``one-off``, ``daily``, ``weekly``, ``monthly``, ``bi-monthly``,
        ``quarterly``, ``half-yearly``, ``yearly``. A ``till`` (or the client's) makes it a
        Buy Goods order (``ratiba_till_transaction_type``). ``name`` must be unique per
        customer. The customer's answer arrives at ``callback_url``
        (:func:`pesa.daraja.parse_ratiba_callback`). Never re-sent once it may have left.

        Example (``await`` it on :class:`AsyncDaraja`):
            >>> mpesa.ratiba_create("Rent", "0708374149", 4500, "HOUSE12", frequency="monthly",
            ...                     start_date=date(2025, 1, 1), end_date=date(2025, 12, 1))
        """
        request = self._build_ratiba(
            name,
            phone,
            amount,
            account_reference,
            frequency,
            start_date,
            end_date,
            description,
            till,
            callback_url,
            shortcode,
        )
        return self._execute(RATIBA_CREATE, request, timeout)

    def bill_manager_opt_in(
        self,
        email: str,
        official_contact: str | int,
        callback_url: str,
        *,
        send_reminders: bool = True,
        logo: str | None = None,
        shortcode: str | int | None = None,
        timeout: float | None = None,
    ) -> BillManagerOptInResponse:
        """Opt a shortcode in to Bill Manager (``POST /v1/billmanager-invoice/optin``).

        Payments of your invoices are then POSTed to ``callback_url``
        (:func:`pesa.daraja.parse_bill_payment`; answer
        :data:`pesa.daraja.BILL_MANAGER_ACCEPTED`, else Bill Manager re-sends, 5 times).

        Example (``await`` it on :class:`AsyncDaraja`):
            >>> mpesa.bill_manager_opt_in("billing@example.com", "0708374149",
            ...                           "https://example.com/bills").app_key
        """
        request = self._build_bill_opt_in(
            email, official_contact, callback_url, send_reminders, logo, shortcode
        )
        return self._execute(BILL_MANAGER_OPT_IN, request, timeout)

    def bill_manager_change_opt_in(
        self,
        email: str,
        official_contact: str | int,
        callback_url: str,
        *,
        send_reminders: bool = True,
        logo: str | None = None,
        shortcode: str | int | None = None,
        timeout: float | None = None,
    ) -> BillManagerResponse:
        """Change the opt-in details (``POST /v1/billmanager-invoice/change-optin-details``).

        Example (``await`` it on :class:`AsyncDaraja`):
            >>> mpesa.bill_manager_change_opt_in("new@example.com", "0708374149",
            ...                                  "https://example.com/bills", send_reminders=False)
        """
        request = self._build_bill_opt_in(
            email, official_contact, callback_url, send_reminders, logo, shortcode
        )
        return self._execute(BILL_MANAGER_CHANGE_OPT_IN, request, timeout)

    def bill_manager_invoice(
        self, invoice: Invoice, *, timeout: float | None = None
    ) -> BillManagerResponse:
        """Send one invoice (``POST /v1/billmanager-invoice/single-invoicing``).

        The customer gets it by SMS (reminders 7 and 3 days before and on the due date)
        and pays with ``invoice.account_reference``. Never re-sent once it may have left.

        Example (``await`` it on :class:`AsyncDaraja`):
            >>> mpesa.bill_manager_invoice(Invoice("INV-42", "Jane Doe", "0708374149", 1500,
            ...     "ACC42", "School fees", "August 2021", date(2021, 10, 12)))
        """
        request = self._build_invoice(invoice)
        return self._execute(BILL_MANAGER_INVOICE, request, timeout)

    def bill_manager_bulk_invoice(
        self, invoices: Sequence[Invoice], *, timeout: float | None = None
    ) -> BillManagerResponse:
        """Send up to 1000 invoices at once (``POST /v1/billmanager-invoice/bulk-invoicing``).

        Each is checked before anything is sent (a bad one is named ``invoices.N.field``).

        Example (``await`` it on :class:`AsyncDaraja`):
            >>> mpesa.bill_manager_bulk_invoice([invoice_1, invoice_2])
        """
        request = self._build_bulk_invoice(invoices)
        return self._execute(BILL_MANAGER_BULK_INVOICE, request, timeout)

    def bill_manager_reconcile(
        self,
        payment: BillPayment,
        *,
        external_reference: str,
        full_name: str,
        invoice_name: str,
        timeout: float | None = None,
    ) -> BillManagerResponse:
        """Acknowledge a paid invoice (``POST /v1/billmanager-invoice/reconciliation``).

        ``payment`` is the notification Bill Manager POSTed to your callback URL
        (:func:`pesa.daraja.parse_bill_payment`).

        Example (``await`` it on :class:`AsyncDaraja`):
            >>> mpesa.bill_manager_reconcile(parse_bill_payment(body), external_reference="INV-42",
            ...                              full_name="Jane Doe", invoice_name="School fees")
        """
        request = self._build_reconcile(payment, external_reference, full_name, invoice_name)
        return self._execute(BILL_MANAGER_RECONCILE, request, timeout)

    def bill_manager_cancel_invoice(
        self, external_reference: str, *, timeout: float | None = None
    ) -> BillManagerResponse:
        """Cancel an unpaid invoice (``POST /v1/billmanager-invoice/cancel-single-invoice``).

        A paid invoice is refused: ``BadRequestError`` with ``error_code`` ``"409"``.

        Example (``await`` it on :class:`AsyncDaraja`):
            >>> mpesa.bill_manager_cancel_invoice("INV-42")
        """
        request = self._build_cancel_invoice(external_reference)
        return self._execute(BILL_MANAGER_CANCEL_INVOICE, request, timeout)

    def bill_manager_cancel_invoices(
        self, external_references: Sequence[str], *, timeout: float | None = None
    ) -> BillManagerResponse:
        """Cancel several unpaid invoices (``POST /v1/billmanager-invoice/cancel-bulk-invoices``).

        Example (``await`` it on :class:`AsyncDaraja`):
            >>> mpesa.bill_manager_cancel_invoices(["INV-42", "INV-43"])
        """
        request = self._build_cancel_invoices(external_references)
        return self._execute(BILL_MANAGER_CANCEL_BULK, request, timeout)


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
        options = self._pool_options()
        if transport is None and self.options.async_http == "aiohttp":
            try:
                from pesa.client._aiohttp import AiohttpTransport
            except ImportError as err:
                raise ConfigurationError(
                    "PESA_ASYNC_HTTP=aiohttp needs aiohttp: pip install 'pesa[aiohttp]'"
                ) from err
            transport = AiohttpTransport(verify=options["verify"], limits=options["limits"])
        return httpx.AsyncClient(transport=transport, **options)

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
        self, op: Operation[RequestT, ResponseT], request: RequestT, timeout: float | None
    ) -> ResponseT:
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
                return cast(ResponseT, step.result)
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

    # -- the business products -----------------------------------------------------------

    async def b2pochi_payment(
        self,
        phone: str | int,
        amount: Any,
        remarks: str,
        *,
        originator_conversation_id: str | None = None,
        occasion: str | None = None,
        shortcode: str | int | None = None,
        result_url: str | None = None,
        timeout_url: str | None = None,
        timeout: float | None = None,
    ) -> InitiatorResponse:
        """Pay a Pochi la Biashara wallet (``POST /mpesa/b2pochi/v1/paymentrequest``).

        B2C v3's body with ``CommandID`` ``BusinessPayToPochi``; the outcome arrives at
        ``result_url`` as a ``{"Result": ...}`` (:func:`pesa.daraja.parse_result`). Pass
        your own ``originator_conversation_id`` (store it first): never re-sent once it may
        have left; settle an :class:`OutcomeUnknownError` by :meth:`transaction_status`.

        Example (``await`` it on :class:`AsyncDaraja`):
            >>> mpesa.b2pochi_payment("0708374149", 500, "Stock", originator_conversation_id="p-1")
        """
        request = self._build_b2pochi(
            phone,
            amount,
            remarks,
            originator_conversation_id,
            occasion,
            shortcode,
            result_url,
            timeout_url,
        )
        return await self._execute(B2POCHI_PAYMENT, request, timeout)

    async def b2b_pay_bill(
        self,
        paybill: str | int,
        amount: Any,
        account_reference: str,
        *,
        remarks: str = "Business payment",
        requester: str | int | None = None,
        occasion: str | None = None,
        shortcode: str | int | None = None,
        result_url: str | None = None,
        timeout_url: str | None = None,
        timeout: float | None = None,
    ) -> InitiatorResponse:
        """Pay another business's PayBill (``POST /mpesa/b2b/v1/paymentrequest``,
        ``BusinessPayBill``).

        ``account_reference`` is the bill's account number (at most 13 characters);
        ``requester`` the customer on whose behalf you pay, if any. Money moves from your
        Working account; the outcome arrives at ``result_url``. Never re-sent once it may
        have left (B2B has no idempotency key): settle an :class:`OutcomeUnknownError` from
        the Result or your statement, never by sending again.

        Example (``await`` it on :class:`AsyncDaraja`):
            >>> mpesa.b2b_pay_bill(600000, 2500, "INV-2024-17")
        """
        request = self._build_b2b(
            "BusinessPayBill",
            paybill,
            "paybill",
            amount,
            account_reference,
            requester,
            remarks,
            occasion,
            shortcode,
            result_url,
            timeout_url,
        )
        return await self._execute(B2B_PAY_BILL, request, timeout)

    async def b2b_buy_goods(
        self,
        till: str | int,
        amount: Any,
        *,
        account_reference: str | None = None,
        remarks: str = "Business payment",
        requester: str | int | None = None,
        occasion: str | None = None,
        shortcode: str | int | None = None,
        result_url: str | None = None,
        timeout_url: str | None = None,
        timeout: float | None = None,
    ) -> InitiatorResponse:
        """Pay a merchant's till (``POST /mpesa/b2b/v1/paymentrequest``, ``BusinessBuyGoods``).

        Same rules as :meth:`b2b_pay_bill`; ``account_reference`` is optional.

        Example (``await`` it on :class:`AsyncDaraja`):
            >>> mpesa.b2b_buy_goods(5123456, 1200)
        """
        request = self._build_b2b(
            "BusinessBuyGoods",
            till,
            "till",
            amount,
            account_reference,
            requester,
            remarks,
            occasion,
            shortcode,
            result_url,
            timeout_url,
        )
        return await self._execute(B2B_BUY_GOODS, request, timeout)

    async def b2c_top_up(
        self,
        b2c_shortcode: str | int,
        amount: Any,
        *,
        account_reference: str | None = None,
        remarks: str = "B2C top up",
        requester: str | int | None = None,
        shortcode: str | int | None = None,
        result_url: str | None = None,
        timeout_url: str | None = None,
        timeout: float | None = None,
    ) -> InitiatorResponse:
        """Load a B2C shortcode's Utility account from your Working account (``POST
        /mpesa/b2b/v1/paymentrequest``, ``BusinessPayToBulk``, "B2C Account Top Up").

        Same rules as :meth:`b2b_pay_bill`.

        Example (``await`` it on :class:`AsyncDaraja`):
            >>> mpesa.b2c_top_up(600997, 100_000)
        """
        request = self._build_b2b(
            "BusinessPayToBulk",
            b2c_shortcode,
            "b2c_shortcode",
            amount,
            account_reference,
            requester,
            remarks,
            None,
            shortcode,
            result_url,
            timeout_url,
        )
        return await self._execute(B2C_TOP_UP, request, timeout)

    async def remit_tax(
        self,
        amount: Any,
        prn: str,
        *,
        remarks: str = "Tax remittance",
        shortcode: str | int | None = None,
        result_url: str | None = None,
        timeout_url: str | None = None,
        timeout: float | None = None,
    ) -> InitiatorResponse:
        """Pay tax to KRA (``POST /mpesa/b2b/v1/remittax``, ``PayTaxToKRA``, ``PartyB`` 572572).

        ``prn`` is KRA's Payment Registration Number (``AccountReference``). Money moves:
        never re-sent once it may have left; the outcome arrives at ``result_url``.

        Example (``await`` it on :class:`AsyncDaraja`):
            >>> mpesa.remit_tax(12_000, "2020123456789")
        """
        request = self._build_tax(amount, prn, remarks, shortcode, result_url, timeout_url)
        return await self._execute(TAX_REMITTANCE, request, timeout)

    async def b2b_express_checkout(
        self,
        till: str | int,
        amount: Any,
        payment_ref: str,
        partner_name: str,
        *,
        request_ref_id: str | None = None,
        receiver_shortcode: str | int | None = None,
        callback_url: str | None = None,
        timeout: float | None = None,
    ) -> B2BExpressCheckoutResponse:
        """Ask a merchant's till to pay you by a USSD prompt (``POST /v1/ussdpush/get-msisdn``).

        The till's nominated operator approves with their operator id and PIN; the outcome
        arrives at ``callback_url`` with lower-camel keys (parse it with
        :func:`pesa.daraja.parse_b2b_express_callback`; its ``requestId`` is the returned
        ``request_ref_id``). ``receiver_shortcode`` defaults to your shortcode. Never
        re-sent once it may have left.

        Example (``await`` it on :class:`AsyncDaraja`):
            >>> mpesa.b2b_express_checkout(5123456, 700, "INV-7", "Acme Supplies").request_ref_id
        """
        request = self._build_b2b_express(
            till,
            amount,
            payment_ref,
            partner_name,
            request_ref_id,
            receiver_shortcode,
            callback_url,
        )
        return await self._execute(B2B_EXPRESS_CHECKOUT, request, timeout)

    async def pull_register(
        self,
        nominated_number: str | int,
        callback_url: str,
        *,
        shortcode: str | int | None = None,
        timeout: float | None = None,
    ) -> PullRegisterResponse:
        """Register a shortcode for Pull Transactions (``POST /pulltransactions/v1/register``).

        ``ResponseStatus`` ``1000`` registered, ``1001`` already registered (both succeed;
        see ``already_registered``).

        Example (``await`` it on :class:`AsyncDaraja`):
            >>> mpesa.pull_register("0708374149", "https://example.com/pull").response_code
            '1000'
        """
        request = self._build_pull_register(nominated_number, callback_url, shortcode)
        return await self._execute(PULL_REGISTER, request, timeout)

    async def pull_query(
        self,
        start: datetime,
        end: datetime | None = None,
        *,
        offset: int = 0,
        shortcode: str | int | None = None,
        timeout: float | None = None,
    ) -> PullQueryResponse:
        """One page of the shortcode's C2B transactions (``POST /pulltransactions/v1/query``).

        ``start`` must be within the last 48 hours; ``end`` defaults to now (naive
        datetimes are Nairobi time). ``transactions`` is flat (Daraja nests it); ask for the
        next page with ``offset=`` the number already read, until a page is empty
        (``ResponseCode`` ``1001``). ``pull_transactions_method`` chooses GET or POST.

        Example (``await`` it on :class:`AsyncDaraja`):
            >>> page = mpesa.pull_query(datetime.now(UTC) - timedelta(hours=6))
            >>> [t.transaction_id for t in page.transactions]
        """
        request = self._build_pull_query(start, end, offset, shortcode)
        return await self._execute(self._pull_query_operation(), request, timeout)

    async def pull_transactions(
        self,
        start: datetime,
        end: datetime | None = None,
        *,
        shortcode: str | int | None = None,
        timeout: float | None = None,
    ) -> list[PulledTransaction]:
        """Every C2B transaction of the window, page after page (:meth:`pull_query`).

        ``end`` is fixed once (default now) so that every page reads the same window; each
        ``TransactionID`` is returned once, oldest page first. Reading stops at an empty
        page, a page with nothing new (a server ignoring ``OffSetValue``) or 1000 pages.

        Example (``await`` it on :class:`AsyncDaraja`):
            >>> missed = mpesa.pull_transactions(datetime.now(UTC) - timedelta(hours=48))
        """
        until = self._pull_end(end)
        pages = _PullPages()
        while pages.more:
            pages.add(
                await self.pull_query(
                    start, until, offset=pages.offset, shortcode=shortcode, timeout=timeout
                )
            )
        return pages.found

    async def qr_code(
        self,
        merchant_name: str,
        ref_no: str,
        amount: Any,
        trx_code: str,
        cpi: str | int,
        *,
        size: int = 300,
        timeout: float | None = None,
    ) -> QRCodeResponse:
        """Generate a Dynamic QR code (``POST /mpesa/qrcode/v1/generate``).

        ``trx_code``: ``BG`` buy goods (``cpi`` = till), ``WA`` withdraw at an agent till,
        ``PB`` PayBill (``cpi`` = PayBill, ``ref_no`` = account), ``SM`` send money and
        ``SB`` send to business (``cpi`` = a phone number). ``size`` is the square image's
        side in pixels. The answer's ``image`` is the decoded PNG.

        Example (``await`` it on :class:`AsyncDaraja`):
            >>> png = mpesa.qr_code("TEST SUPERMARKET", "Invoice 7", 100, "BG", 373132).image
        """
        request = self._build_qr(merchant_name, ref_no, amount, trx_code, cpi, size)
        return await self._execute(QR_CODE, request, timeout)

    async def ratiba_create(
        self,
        name: str,
        phone: str | int,
        amount: Any,
        account_reference: str,
        *,
        frequency: str | int,
        start_date: date,
        end_date: date,
        description: str | None = None,
        till: str | int | None = None,
        callback_url: str | None = None,
        shortcode: str | int | None = None,
        timeout: float | None = None,
    ) -> StandingOrderResponse:
        """Create an M-Pesa Ratiba standing order
        (``POST /standingorder/v1/createStandingOrderExternal``).

        ``frequency``: 1-8 or ``one-off``, ``daily``, ``weekly``, ``monthly``, ``bi-monthly``,
        ``quarterly``, ``half-yearly``, ``yearly``. A ``till`` (or the client's) makes it a
        Buy Goods order (``ratiba_till_transaction_type``). ``name`` must be unique per
        customer. The customer's answer arrives at ``callback_url``
        (:func:`pesa.daraja.parse_ratiba_callback`). Never re-sent once it may have left.

        Example (``await`` it on :class:`AsyncDaraja`):
            >>> mpesa.ratiba_create("Rent", "0708374149", 4500, "HOUSE12", frequency="monthly",
            ...                     start_date=date(2025, 1, 1), end_date=date(2025, 12, 1))
        """
        request = self._build_ratiba(
            name,
            phone,
            amount,
            account_reference,
            frequency,
            start_date,
            end_date,
            description,
            till,
            callback_url,
            shortcode,
        )
        return await self._execute(RATIBA_CREATE, request, timeout)

    async def bill_manager_opt_in(
        self,
        email: str,
        official_contact: str | int,
        callback_url: str,
        *,
        send_reminders: bool = True,
        logo: str | None = None,
        shortcode: str | int | None = None,
        timeout: float | None = None,
    ) -> BillManagerOptInResponse:
        """Opt a shortcode in to Bill Manager (``POST /v1/billmanager-invoice/optin``).

        Payments of your invoices are then POSTed to ``callback_url``
        (:func:`pesa.daraja.parse_bill_payment`; answer
        :data:`pesa.daraja.BILL_MANAGER_ACCEPTED`, else Bill Manager re-sends, 5 times).

        Example (``await`` it on :class:`AsyncDaraja`):
            >>> mpesa.bill_manager_opt_in("billing@example.com", "0708374149",
            ...                           "https://example.com/bills").app_key
        """
        request = self._build_bill_opt_in(
            email, official_contact, callback_url, send_reminders, logo, shortcode
        )
        return await self._execute(BILL_MANAGER_OPT_IN, request, timeout)

    async def bill_manager_change_opt_in(
        self,
        email: str,
        official_contact: str | int,
        callback_url: str,
        *,
        send_reminders: bool = True,
        logo: str | None = None,
        shortcode: str | int | None = None,
        timeout: float | None = None,
    ) -> BillManagerResponse:
        """Change the opt-in details (``POST /v1/billmanager-invoice/change-optin-details``).

        Example (``await`` it on :class:`AsyncDaraja`):
            >>> mpesa.bill_manager_change_opt_in("new@example.com", "0708374149",
            ...                                  "https://example.com/bills", send_reminders=False)
        """
        request = self._build_bill_opt_in(
            email, official_contact, callback_url, send_reminders, logo, shortcode
        )
        return await self._execute(BILL_MANAGER_CHANGE_OPT_IN, request, timeout)

    async def bill_manager_invoice(
        self, invoice: Invoice, *, timeout: float | None = None
    ) -> BillManagerResponse:
        """Send one invoice (``POST /v1/billmanager-invoice/single-invoicing``).

        The customer gets it by SMS (reminders 7 and 3 days before and on the due date)
        and pays with ``invoice.account_reference``. Never re-sent once it may have left.

        Example (``await`` it on :class:`AsyncDaraja`):
            >>> mpesa.bill_manager_invoice(Invoice("INV-42", "Jane Doe", "0708374149", 1500,
            ...     "ACC42", "School fees", "August 2021", date(2021, 10, 12)))
        """
        request = self._build_invoice(invoice)
        return await self._execute(BILL_MANAGER_INVOICE, request, timeout)

    async def bill_manager_bulk_invoice(
        self, invoices: Sequence[Invoice], *, timeout: float | None = None
    ) -> BillManagerResponse:
        """Send up to 1000 invoices at once (``POST /v1/billmanager-invoice/bulk-invoicing``).

        Each is checked before anything is sent (a bad one is named ``invoices.N.field``).

        Example (``await`` it on :class:`AsyncDaraja`):
            >>> mpesa.bill_manager_bulk_invoice([invoice_1, invoice_2])
        """
        request = self._build_bulk_invoice(invoices)
        return await self._execute(BILL_MANAGER_BULK_INVOICE, request, timeout)

    async def bill_manager_reconcile(
        self,
        payment: BillPayment,
        *,
        external_reference: str,
        full_name: str,
        invoice_name: str,
        timeout: float | None = None,
    ) -> BillManagerResponse:
        """Acknowledge a paid invoice (``POST /v1/billmanager-invoice/reconciliation``).

        ``payment`` is the notification Bill Manager POSTed to your callback URL
        (:func:`pesa.daraja.parse_bill_payment`).

        Example (``await`` it on :class:`AsyncDaraja`):
            >>> mpesa.bill_manager_reconcile(parse_bill_payment(body), external_reference="INV-42",
            ...                              full_name="Jane Doe", invoice_name="School fees")
        """
        request = self._build_reconcile(payment, external_reference, full_name, invoice_name)
        return await self._execute(BILL_MANAGER_RECONCILE, request, timeout)

    async def bill_manager_cancel_invoice(
        self, external_reference: str, *, timeout: float | None = None
    ) -> BillManagerResponse:
        """Cancel an unpaid invoice (``POST /v1/billmanager-invoice/cancel-single-invoice``).

        A paid invoice is refused: ``BadRequestError`` with ``error_code`` ``"409"``.

        Example (``await`` it on :class:`AsyncDaraja`):
            >>> mpesa.bill_manager_cancel_invoice("INV-42")
        """
        request = self._build_cancel_invoice(external_reference)
        return await self._execute(BILL_MANAGER_CANCEL_INVOICE, request, timeout)

    async def bill_manager_cancel_invoices(
        self, external_references: Sequence[str], *, timeout: float | None = None
    ) -> BillManagerResponse:
        """Cancel several unpaid invoices (``POST /v1/billmanager-invoice/cancel-bulk-invoices``).

        Example (``await`` it on :class:`AsyncDaraja`):
            >>> mpesa.bill_manager_cancel_invoices(["INV-42", "INV-43"])
        """
        request = self._build_cancel_invoices(external_references)
        return await self._execute(BILL_MANAGER_CANCEL_BULK, request, timeout)


class _PullPages:
    """The pure half of :meth:`Daraja.pull_transactions`: where the next page starts, when
    to stop, and each ``TransactionID`` once."""

    def __init__(self) -> None:
        self.found: list[PulledTransaction] = []
        self._seen: set[str] = set()
        self.offset = 0
        self.pages = 0
        self.more = True

    def add(self, page: PullQueryResponse) -> None:
        self.pages += 1
        new = [t for t in page.transactions if t.transaction_id not in self._seen]
        for txn in new:
            self._seen.add(txn.transaction_id)
            self.found.append(txn)
        self.offset += len(page.transactions)
        if not new or self.pages >= _MAX_PULL_PAGES:
            if new:
                log.warning("pull_transactions: stopped after %d pages", self.pages)
            self.more = False
