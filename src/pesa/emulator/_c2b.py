"""C2B: URL registration (v1, v2), customers paying a PayBill or Till, validation, confirmation.

A customer's payment comes from ``simulate`` (Daraja's sandbox endpoint) or from the control
API (``POST /__emulator__/c2b/payments``: the phone's "Lipa na M-Pesa" menu). Either way
M-Pesa POSTs the validation request to the registered ValidationURL (when validation is on),
then, if accepted, moves the money and POSTs the confirmation (REFERENCE 7.3).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from hashlib import sha256
from typing import Any

import pydantic
from starlette.requests import Request
from starlette.responses import Response

from pesa._exceptions import ValidationError
from pesa._logging import get_logger
from pesa.emulator import _daraja as daraja
from pesa.emulator import _validate as v
from pesa.emulator._books import Transaction
from pesa.emulator._control_routes import field_errors, json_response, problem, read_json
from pesa.emulator._core import Core
from pesa.emulator._models import C2BPay, C2BPayment
from pesa.emulator._product import ControlRoute, DarajaRoute, Product
from pesa.emulator._rules import Outcome
from pesa.emulator._validate import Refusal

__all__ = ["CustomerToBusiness"]

_log = get_logger("pesa.emulator")


@dataclass
class Registration:
    """The URLs a shortcode registered, and how (v1 hashes the MSISDN, v2 masks it)."""

    version: str
    response_type: str
    confirmation_url: str
    validation_url: str


class CustomerToBusiness(Product):
    """``/mpesa/c2b/v{1,2}/registerurl`` and ``/mpesa/c2b/v{1,2}/simulate``."""

    operations = ("c2b",)
    callback_kinds = ("c2b_validation", "c2b_confirmation")

    def __init__(self, core: Core) -> None:
        super().__init__(core)
        self.registrations: dict[str, Registration] = {}
        self.payments: dict[str, C2BPayment] = {}
        self._done: dict[str, asyncio.Event] = {}

    def reset(self) -> None:
        self.registrations = {}
        self.payments = {}
        self._done = {}

    def routes(self) -> list[DarajaRoute]:
        token_error = daraja.TOKEN_INVALID_C2B
        return [
            DarajaRoute("/mpesa/c2b/v1/registerurl", self.register_v1, token_error),
            DarajaRoute("/mpesa/c2b/v2/registerurl", self.register_v2, token_error),
            DarajaRoute("/mpesa/c2b/v1/simulate", self.simulate),
            DarajaRoute("/mpesa/c2b/v2/simulate", self.simulate),
        ]

    def control_routes(self) -> list[ControlRoute]:
        return [
            ControlRoute("/c2b/payments", self._payments_endpoint, ("GET", "POST")),
            ControlRoute("/c2b/payments/{trans_id}", self._payment_endpoint, ("GET",)),
        ]

    def register_v1(self, body: dict[str, Any], app: str) -> tuple[int, dict[str, Any]]:
        """``POST /mpesa/c2b/v1/registerurl``: confirmations carry a hashed MSISDN."""
        del app
        return self._register(body, "v1")

    def register_v2(self, body: dict[str, Any], app: str) -> tuple[int, dict[str, Any]]:
        """``POST /mpesa/c2b/v2/registerurl``: confirmations carry a masked MSISDN."""
        del app
        return self._register(body, "v2")

    def _check_url(self, value: Any, field: str) -> str:
        url = v.url(value, field)
        if self.core.config.c2b_url_keyword_check:
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

    def _register(self, body: dict[str, Any], version: str) -> tuple[int, dict[str, Any]]:
        shortcode = self.core.org_shortcode(body.get("ShortCode"), "ShortCode")
        if shortcode in self.core.config.stk_only_shortcodes:
            # The sandbox's STK shortcode cannot register C2B URLs (REFERENCE 2: a fault
            # "SCO-AddURLVault"); use a 600xxx shortcode.
            raise Refusal(daraja.bad_request("ShortCode"))
        response_type = v.choice(
            body.get("ResponseType"), "ResponseType", daraja.C2B_RESPONSE_TYPES
        )
        confirmation = self._check_url(body.get("ConfirmationURL"), "ConfirmationURL")
        validation = self._check_url(body.get("ValidationURL"), "ValidationURL")
        # The sandbox allows overwriting a registration (production refuses: "already registered").
        self.registrations[shortcode] = Registration(
            version, response_type, confirmation, validation
        )
        return 200, {
            "OriginatorCoversationID": self.core.ids.request_id(),
            "ResponseCode": "0" if version == "v1" else "00000000",
            "ResponseDescription": daraja.C2B_REGISTERED,
        }

    def simulate(self, body: dict[str, Any], app: str) -> tuple[int, dict[str, Any]]:
        """``POST /mpesa/c2b/v{1,2}/simulate``: a customer pays the shortcode (sandbox only)."""
        del app
        core = self.core
        cfg = core.config
        shortcode = core.org_shortcode(body.get("ShortCode"), "ShortCode")
        command = v.choice(
            body.get("CommandID"), "CommandID", ("CustomerPayBillOnline", "CustomerBuyGoodsOnline")
        )
        amount = v.amount(body.get("Amount"), cfg.stk_min_amount, cfg.stk_max_amount)
        phone = v.msisdn(body.get("Msisdn"), "Msisdn")
        bill_ref = v.optional_text(body.get("BillRefNumber"), "BillRefNumber", max_length=20)
        registration = self.registrations.get(shortcode)
        if registration is None:
            # The sandbox acknowledges a simulation for a shortcode without URLs and then
            # delivers nothing: the classic "callbacks never arrive".
            _log.warning("C2B simulate on %s: no URLs registered, nothing delivered", shortcode)
        else:
            outcome = core.rules.outcome("c2b", phone, amount, bill_ref, cfg.result_delay)
            payment = C2BPayment(
                trans_id="",  # drawn when M-Pesa completes it
                shortcode=shortcode,
                command=command,
                amount=amount,
                phone=phone,
                account_reference=bill_ref,
            )
            core.spawn(self._run(payment, registration, outcome))
        return 200, {
            "OriginatorCoversationID": core.ids.request_id(),
            "ResponseCode": "0",
            "ResponseDescription": daraja.C2B_SIMULATE_ACCEPTED,
        }

    def customer_pays(self, pay: C2BPay) -> C2BPayment:
        """A customer pays from the phone menu: PayBill ``shortcode`` account
        ``account_reference``, or Till ``shortcode`` (``till``), ``amount`` shillings.

        Unlike ``simulate``, the money arrives even when the shortcode registered no URLs (it
        is then in the books, for Transaction Status and the balance, but nobody is told).

        Raises:
            ValidationError: naming the field (an amount out of bounds; in strict mode a shortcode
                the emulator was not configured with).
        """
        core = self.core
        cfg = core.config
        if not cfg.stk_min_amount <= pay.amount <= cfg.stk_max_amount:
            raise ValidationError(
                "amount", f"must be {cfg.stk_min_amount} to {cfg.stk_max_amount} shillings"
            )
        if cfg.strict and not core.known_shortcode(pay.shortcode):
            raise ValidationError(
                "shortcode", "not one this emulator is configured with (strict mode)"
            )
        trans_id = core.ids.receipt(core.now())
        while trans_id in self.payments:
            trans_id = core.ids.receipt(core.now())
        payment = C2BPayment(
            trans_id=trans_id,
            shortcode=pay.shortcode,
            command="CustomerBuyGoodsOnline" if pay.till else "CustomerPayBillOnline",
            amount=pay.amount,
            phone=pay.phone,
            account_reference="" if pay.till else pay.account_reference,
        )
        self._keep(payment)
        outcome = core.rules.outcome(
            "c2b", pay.phone, pay.amount, payment.account_reference, cfg.result_delay
        )
        names = (pay.first_name, pay.middle_name, pay.last_name)
        core.spawn(self._run(payment, self.registrations.get(pay.shortcode), outcome, names))
        return payment

    def _keep(self, payment: C2BPayment) -> None:
        self.payments[payment.trans_id] = payment
        self._done[payment.trans_id] = asyncio.Event()
        if len(self.payments) > self.core.max_kept:
            oldest = next(iter(self.payments))
            if self.payments[oldest].status != "pending":
                del self.payments[oldest]
                self._done.pop(oldest, None)

    async def wait(self, trans_id: str, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for the payment to be decided."""
        done = self._done.get(trans_id)
        if done is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), timeout)

    async def _run(
        self,
        payment: C2BPayment,
        registration: Registration | None,
        outcome: Outcome | None,
        names: tuple[str | None, str | None, str | None] = (None, None, None),
    ) -> None:
        try:
            await self._pay(payment, registration, outcome, names)
        finally:
            done = self._done.get(payment.trans_id)
            if done is not None:
                done.set()

    async def _pay(
        self,
        payment: C2BPayment,
        registration: Registration | None,
        outcome: Outcome | None,
        names: tuple[str | None, str | None, str | None],
    ) -> None:
        core = self.core
        cfg = core.config
        shortcode, amount, phone = payment.shortcode, payment.amount, payment.phone
        delay = cfg.result_delay if outcome is None else outcome.delay
        if delay > 0:
            await asyncio.sleep(delay)
        if outcome is not None and str(outcome.result_code) != "0":
            # The customer's payment failed in M-Pesa (a rule said so): nothing is notified.
            _log.info("C2B payment on %s failed with %s", shortcode, outcome.result_code)
            payment.status, payment.result_code = "failed", str(outcome.result_code)
            return
        now = core.now()
        if not payment.trans_id:
            payment.trans_id = core.ids.receipt(now)
            self._keep(payment)
        receipt = payment.trans_id
        first, middle, last = (
            given if given is not None else default
            for given, default in zip(names, cfg.c2b_customer_names, strict=True)
        )
        if registration is None or registration.version == "v2":
            shown = f"{phone[:5]}****{phone[-3:]}"
        else:
            shown = sha256(phone.encode()).hexdigest()
        payload: dict[str, Any] = {
            "TransactionType": (
                "Pay Bill" if payment.command == "CustomerPayBillOnline" else "Buy Goods"
            ),
            "TransID": receipt,
            "TransTime": f"{now:%Y%m%d%H%M%S}",
            "TransAmount": f"{amount}.00",
            "BusinessShortCode": shortcode,
            "BillRefNumber": payment.account_reference,
            "InvoiceNumber": "",
            "OrgAccountBalance": "",
            "ThirdPartyTransID": "",
            "MSISDN": shown,
            "FirstName": first,
            "MiddleName": middle,
            "LastName": last,
        }
        if registration is not None and cfg.c2b_validation:
            record = await core.delivery.post(
                "c2b_validation",
                registration.validation_url,
                payload,
                timeout=cfg.c2b_validation_timeout,
                retries=0,
            )
            answer = record.response if isinstance(record.response, dict) else None
            if record.delivered and answer is not None and "ResultCode" in answer:
                payment.result_code = str(answer["ResultCode"])
                if payment.result_code != "0":
                    _log.info("C2B %s rejected by validation: %s", receipt, payment.result_code)
                    payment.validation, payment.status = "rejected", "rejected"
                    return
                payment.validation = "accepted"
                payment.third_party_trans_id = str(answer.get("ThirdPartyTransID") or "")
                payload["ThirdPartyTransID"] = payment.third_party_trans_id
            else:
                # Unanswered in time (or nonsense): the registration's ResponseType decides.
                payment.validation = "unanswered"
                if registration.response_type == "Cancelled":
                    _log.info("C2B %s cancelled: validation unanswered (ResponseType)", receipt)
                    payment.status = "cancelled"
                    return
        accounts = core.books.accounts(shortcode)
        accounts["Utility Account"] += amount
        payload["OrgAccountBalance"] = f"{accounts['Utility Account']:.2f}"
        core.books.record(Transaction(receipt, "c2b", amount, shortcode, phone, now))
        payment.status = "completed"
        if registration is None:
            _log.info("C2B %s on %s: no URLs registered, nobody notified", receipt, shortcode)
            return
        payment.notified = await core.send(
            outcome, "c2b_confirmation", registration.confirmation_url, None, payload
        )

    # -- control API ----------------------------------------------------------------------------

    async def _payments_endpoint(self, request: Request) -> Response:
        if request.method == "GET":
            shortcode = request.query_params.get("shortcode")
            return json_response(
                [
                    p.model_dump(mode="json")
                    for p in self.payments.values()
                    if shortcode is None or p.shortcode == shortcode
                ]
            )
        try:
            pay = C2BPay.model_validate(await read_json(request))
            wait = float(request.query_params.get("wait", "0"))
        except (ValueError, pydantic.ValidationError) as err:
            return problem(422, field_errors(err))
        try:
            payment = self.customer_pays(pay)
        except ValueError as err:
            field, _, rule = str(err).partition(": ")
            return problem(422, [{"field": field, "rule": rule}])
        if wait > 0:
            await self.wait(payment.trans_id, min(wait, 600.0))
        return json_response(payment.model_dump(mode="json"), 201)

    async def _payment_endpoint(self, request: Request) -> Response:
        payment = self.payments.get(request.path_params["trans_id"])
        if payment is None:
            return problem(404, "no such C2B payment")
        return json_response(payment.model_dump(mode="json"))
