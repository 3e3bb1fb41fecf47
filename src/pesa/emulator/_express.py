"""B2B Express Checkout: a USSD prompt asking a merchant's till to pay a vendor's PayBill
(``/v1/ussdpush/get-msisdn``, REFERENCE 8.8).

No SecurityCredential; lower-camel field names; the acknowledgement is
``{"code": "0", "status": "USSD Initiated Successfully"}`` and the till operator's answer
arrives at ``callbackUrl`` with lower-camel keys (``resultCode`` ``"0"`` paid, ``"4001"``
cancelled), after ``stk_delay`` as for a customer's prompt.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pesa.emulator import _daraja as daraja
from pesa.emulator import _validate as v
from pesa.emulator._books import Transaction
from pesa.emulator._product import DarajaRoute, Product
from pesa.emulator._rules import Outcome

__all__ = ["B2BExpressCheckout"]


class B2BExpressCheckout(Product):
    """``/v1/ussdpush/get-msisdn``: the till's Working account pays the vendor's Utility."""

    operations = ("b2b_express",)
    callback_kinds = ("b2b_express",)

    def routes(self) -> list[DarajaRoute]:
        return [DarajaRoute("/v1/ussdpush/get-msisdn", self.push)]

    def push(self, body: dict[str, Any], app: str) -> tuple[int, dict[str, Any]]:
        """``POST /v1/ussdpush/get-msisdn``: acknowledge, then the operator answers."""
        del app
        core = self.core
        cfg = core.config
        till = core.org_shortcode(body.get("primaryShortCode"), "primaryShortCode")
        vendor = core.org_shortcode(body.get("receiverShortCode"), "receiverShortCode")
        amount = v.amount(body.get("amount"), cfg.b2b_min_amount, cfg.b2b_max_amount, "amount")
        reference = v.required_text(body.get("paymentRef"), "paymentRef")
        callback_url = v.url(body.get("callbackUrl"), "callbackUrl")
        v.required_text(body.get("partnerName"), "partnerName")
        request_id = v.required_text(body.get("RequestRefID"), "RequestRefID")
        outcome = core.rules.outcome("b2b_express", None, amount, reference, cfg.stk_delay)
        core.spawn(self._answer(till, vendor, amount, reference, request_id, callback_url, outcome))
        return 200, {"code": "0", "status": daraja.EXPRESS_CHECKOUT_ACCEPTED}

    async def _answer(
        self,
        till: str,
        vendor: str,
        amount: int,
        reference: str,
        request_id: str,
        callback_url: str,
        outcome: Outcome | None,
    ) -> None:
        core = self.core
        delay = core.config.stk_delay if outcome is None else outcome.delay
        if delay > 0:
            await asyncio.sleep(delay)
        now = core.now()
        conversation_id = core.ids.conversation_id(now)
        code = "0" if outcome is None else str(outcome.result_code)
        payload: dict[str, Any] = {
            "resultCode": code,
            "resultDesc": "",
            "amount": f"{amount}.0",
            "requestId": request_id,
            "resultType": "0",
            "conversationID": conversation_id,
            "paymentReference": reference,
        }
        if code == "0":
            accounts = core.books.accounts(till)
            if accounts["Working Account"] < amount:
                code = "1"
            else:
                accounts["Working Account"] -= amount
                core.books.accounts(vendor)["Utility Account"] += amount
                receipt = core.ids.receipt(now)
                core.books.record(
                    Transaction(
                        receipt,
                        "b2b_express",
                        amount,
                        vendor,
                        till,
                        now,
                        conversation_id=conversation_id,
                        reference=reference,
                    )
                )
                payload["transactionId"] = receipt
                payload["status"] = "SUCCESS"
                payload["resultDesc"] = daraja.RESULT_DESCRIPTIONS["0"]
        if code != "0":
            payload["resultCode"] = code
            payload["status"] = "FAILED"
            if outcome is not None and outcome.result_desc:
                payload["resultDesc"] = outcome.result_desc
            elif code == "4001":
                payload["resultDesc"] = daraja.EXPRESS_CHECKOUT_CANCELLED
            else:
                payload["resultDesc"] = daraja.RESULT_DESCRIPTIONS.get(
                    code, "The service request could not be processed."
                )
        await core.send(outcome, "b2b_express", callback_url, None, payload)
