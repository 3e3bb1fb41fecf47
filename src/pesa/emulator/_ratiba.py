"""M-Pesa Ratiba (standing orders): ``/standingorder/v1/createStandingOrderExternal``,
REFERENCE 9.

Ratiba has its own envelopes: refusals are ``{"requestRefId", "responseMessage",
"responseCode": 400, "timestamp"}`` (not Daraja's ``errorCode`` envelope), the acknowledgement
is ``ResponseHeader`` (``responseCode`` ``"200"``) plus ``ResponseBody``, and the customer's
answer (after ``stk_delay``, by the STK scenario phones and ``ratiba`` rules) is POSTed to
``CallBackURL`` as a header and ``ResponseBody.ResponseData`` ``{Name, Value}`` items
(``TransactionID``, ``responseCode``, ``Status``, ``Msisdn``). The casing of those keys
differs between Daraja's own examples: ``ratiba_callback_keys`` picks one. An accepted
order's first instalment is paid at once (its ``TransactionID`` is a receipt in the books;
when later instalments fall due is not emulated).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pesa.emulator import _daraja as daraja
from pesa.emulator import _validate as v
from pesa.emulator._books import Transaction
from pesa.emulator._product import DarajaRoute, Product
from pesa.emulator._rules import Outcome
from pesa.emulator._stk import SCENARIOS
from pesa.emulator._validate import Refusal

__all__ = ["Ratiba", "StandingOrder"]

_FREQUENCIES = ("1", "2", "3", "4", "5", "6", "7", "8")


@dataclass
class StandingOrder:
    """One standing order, as M-Pesa keeps it."""

    name: str
    phone: str
    shortcode: str
    amount: int
    frequency: str
    start_date: str
    end_date: str
    account_reference: str
    status: str = "pending"  # then "active" (accepted) or "failed"
    transaction_id: str = ""


class Ratiba(Product):
    """``/standingorder/v1/createStandingOrderExternal``."""

    operations = ("ratiba",)
    callback_kinds = ("ratiba",)

    def __init__(self, core: Any) -> None:
        super().__init__(core)
        self.orders: dict[tuple[str, str], StandingOrder] = {}

    def reset(self) -> None:
        self.orders = {}

    def routes(self) -> list[DarajaRoute]:
        return [DarajaRoute("/standingorder/v1/createStandingOrderExternal", self.create)]

    def _refusal(self, message: str) -> tuple[int, dict[str, Any]]:
        return 400, {
            "requestRefId": self.core.ids.request_id(),
            "responseMessage": message,
            "responseCode": 400,
            "timestamp": self.core.now().isoformat(timespec="milliseconds"),
        }

    def create(self, body: dict[str, Any], app: str) -> tuple[int, dict[str, Any]]:
        """``POST /standingorder/v1/createStandingOrderExternal``."""
        del app
        try:
            return self._create(body)
        except Refusal as refusal:
            return self._refusal(refusal.error_message)

    def _date(self, value: Any, field: str) -> str:
        text = v.required_text(value, field, max_length=8)
        try:
            datetime.strptime(text, "%Y%m%d")
        except ValueError:
            raise Refusal(daraja.bad_request(field)) from None
        return text

    def _create(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        core = self.core
        cfg = core.config
        name = v.required_text(body.get("StandingOrderName"), "StandingOrderName")
        start = self._date(body.get("StartDate"), "StartDate")
        end = self._date(body.get("EndDate"), "EndDate")
        if end < start:
            raise Refusal(daraja.bad_request("EndDate"))
        shortcode = v.shortcode(body.get("BusinessShortCode"), "BusinessShortCode")
        if cfg.strict and not core.known_shortcode(shortcode):
            raise Refusal((400, "400", daraja.RATIBA_WRONG_SHORTCODE))
        kind = v.choice(
            body.get("TransactionType"),
            "TransactionType",
            (daraja.RATIBA_PAYBILL, *cfg.ratiba_till_transaction_types),
        )
        # A PayBill order names a shortcode (4), a till order a till (2).
        identifier = "4" if kind == daraja.RATIBA_PAYBILL else "2"
        v.choice(
            body.get("ReceiverPartyIdentifierType"), "ReceiverPartyIdentifierType", (identifier,)
        )
        amount = v.amount(body.get("Amount"), cfg.stk_min_amount, cfg.stk_max_amount)
        phone = v.msisdn(body.get("PartyA"), "PartyA")
        callback_url = v.url(body.get("CallBackURL"), "CallBackURL")
        reference = v.required_text(body.get("AccountReference"), "AccountReference", max_length=12)
        v.required_text(body.get("TransactionDesc"), "TransactionDesc", max_length=13)
        frequency = v.choice(body.get("Frequency"), "Frequency", _FREQUENCIES)
        if (phone, name) in self.orders:
            # The name must be unique per customer (REFERENCE 9); the wording is ours.
            raise Refusal((400, "400", "StandingOrderName already exists for this customer"))
        order = StandingOrder(name, phone, shortcode, amount, frequency, start, end, reference)
        self.orders[(phone, name)] = order
        outcome = core.rules.outcome(
            "ratiba", phone, amount, reference, cfg.stk_delay, SCENARIOS.get(phone)
        )
        ref_id = core.ids.request_id()
        core.spawn(self._answer(order, ref_id, callback_url, outcome))
        return 200, self._cased(
            {
                "ResponseHeader": {
                    "responseRefID": ref_id,
                    "responseCode": daraja.RATIBA_ACCEPTED_CODE,
                    "responseDescription": daraja.RATIBA_ACCEPTED,
                    "ResultDesc": daraja.RATIBA_ACCEPTED,
                },
                "ResponseBody": {
                    "responseDescription": daraja.RATIBA_ACCEPTED,
                    "responseCode": daraja.RATIBA_ACCEPTED_CODE,
                },
            }
        )

    def _cased(self, payload: dict[str, Any]) -> dict[str, Any]:
        """``payload`` with its object keys in the configured casing (pascal as written)."""
        if self.core.config.ratiba_callback_keys == "pascal":
            return payload

        def camel(value: Any) -> Any:
            if isinstance(value, dict):
                return {k[:1].lower() + k[1:]: camel(item) for k, item in value.items()}
            if isinstance(value, list):
                return [camel(item) for item in value]
            return value

        result: dict[str, Any] = camel(payload)
        return result

    async def _answer(
        self, order: StandingOrder, ref_id: str, callback_url: str, outcome: Outcome | None
    ) -> None:
        core = self.core
        delay = core.config.stk_delay if outcome is None else outcome.delay
        if delay > 0:
            await asyncio.sleep(delay)
        code = "0" if outcome is None else str(outcome.result_code)
        now = core.now()
        if code == "0":
            core.books.accounts(order.shortcode)["Utility Account"] += order.amount
            order.transaction_id = core.ids.receipt(now)
            core.books.record(
                Transaction(
                    order.transaction_id,
                    "ratiba",
                    order.amount,
                    order.shortcode,
                    order.phone,
                    now,
                    reference=order.account_reference,
                    transaction_type="Standing Order",
                )
            )
            order.status = "active"
            desc = daraja.STK_RESULT_DESCRIPTIONS["0"]
        else:
            order.status = "failed"
            desc = (outcome.result_desc if outcome is not None else None) or (
                daraja.STK_RESULT_DESCRIPTIONS.get(code, "The request could not be processed.")
            )
        masked = f"{order.phone[:6]}****{order.phone[-2:]}"
        payload = self._cased(
            {
                "ResponseHeader": {
                    "responseRefID": ref_id,
                    "responseCode": code,
                    "responseDescription": desc,
                    "ResultDesc": desc,
                },
                "ResponseBody": {
                    "ResponseData": [
                        {"Name": "TransactionID", "Value": order.transaction_id},
                        {"Name": "responseCode", "Value": code},
                        {"Name": "Status", "Value": "OKAY" if code == "0" else "ERROR"},
                        {"Name": "Msisdn", "Value": masked},
                    ]
                },
            }
        )
        await core.send(outcome, "ratiba", callback_url, None, payload)
