"""M-Pesa Express: STK push, the emulated customer's answer, its callback, and STK query."""

from __future__ import annotations

import asyncio
import base64
import hmac
from dataclasses import dataclass
from typing import Any

from pesa._logging import get_logger, mask_phone
from pesa.emulator import _daraja as daraja
from pesa.emulator import _validate as v
from pesa.emulator._books import Transaction
from pesa.emulator._core import Core, evict_oldest
from pesa.emulator._product import DarajaRoute, Product
from pesa.emulator._rules import Outcome, Scenario
from pesa.emulator._validate import Refusal

__all__ = ["SCENARIOS", "MpesaExpress"]

_log = get_logger("pesa.emulator")

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


@dataclass
class StkSession:
    """One STK push: the prompt on the customer's phone and, once answered, its result."""

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


class MpesaExpress(Product):
    """``/mpesa/stkpush/v1/processrequest`` and ``/mpesa/stkpushquery/v1/query``."""

    operations = ("stk",)
    callback_kinds = ("stk",)

    def __init__(self, core: Core) -> None:
        super().__init__(core)
        self.sessions: dict[str, StkSession] = {}
        self._open_prompts: dict[str, str] = {}

    def reset(self) -> None:
        self.sessions = {}
        self._open_prompts = {}

    def routes(self) -> list[DarajaRoute]:
        return [
            DarajaRoute("/mpesa/stkpush/v1/processrequest", self.push),
            DarajaRoute("/mpesa/stkpushquery/v1/query", self.query),
        ]

    def _check_password(self, body: dict[str, Any], shortcode: str, timestamp: str) -> None:
        passkey = self.core.config.passkeys.get(shortcode)
        if passkey is None:
            raise Refusal(daraja.MERCHANT_NOT_FOUND)
        expected = base64.b64encode(f"{shortcode}{passkey}{timestamp}".encode())
        given = body.get("Password")
        if not isinstance(given, str) or not hmac.compare_digest(given.encode(), expected):
            raise Refusal(daraja.WRONG_CREDENTIALS)

    def push(self, body: dict[str, Any], app: str) -> tuple[int, dict[str, Any]]:
        """``POST /mpesa/stkpush/v1/processrequest``: validate, open the prompt, acknowledge."""
        del app
        core = self.core
        cfg = core.config
        now = core.now()
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
        outcome = core.rules.outcome(
            "stk", phone, amount, reference, cfg.stk_delay, SCENARIOS.get(phone)
        ) or Outcome(0, None, cfg.stk_delay, "deliver", 0.0, False)
        if str(outcome.result_code) == "1001":
            raise Refusal(daraja.SUBSCRIBER_LOCKED)
        checkout_id = core.ids.checkout_request_id(now)
        while checkout_id in self.sessions:
            checkout_id = core.ids.checkout_request_id(now)
        session = StkSession(
            checkout_id=checkout_id,
            merchant_id=core.ids.request_id(),
            shortcode=shortcode,
            phone=phone,
            amount=amount,
            account_reference=reference,
            callback_url=callback_url,
        )
        self.sessions[checkout_id] = session
        evict_oldest(self.sessions, core.max_kept, lambda s: s.final)
        self._open_prompts[phone] = checkout_id
        core.spawn(self._run(session, outcome))
        return 200, {
            "MerchantRequestID": session.merchant_id,
            "CheckoutRequestID": checkout_id,
            "ResponseCode": "0",
            "ResponseDescription": daraja.STK_PUSH_ACCEPTED,
            "CustomerMessage": daraja.STK_PUSH_ACCEPTED,
        }

    async def _run(self, session: StkSession, outcome: Outcome) -> None:
        core = self.core
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
            now = core.now()
            receipt = core.ids.receipt(now)
            core.books.accounts(session.shortcode)["Utility Account"] += session.amount
            core.books.record(
                Transaction(receipt, "stk", session.amount, session.shortcode, session.phone, now)
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
        await core.send(outcome, "stk", session.callback_url, None, payload)
        session.final = True

    def query(self, body: dict[str, Any], app: str) -> tuple[int, dict[str, Any]]:
        """``POST /mpesa/stkpushquery/v1/query``: pending (500) until the customer answered."""
        del app
        core = self.core
        now = core.now()
        shortcode = v.shortcode(body.get("BusinessShortCode"), "BusinessShortCode")
        timestamp = v.timestamp(body.get("Timestamp"), now, core.config.timestamp_tolerance)
        checkout_id = body.get("CheckoutRequestID")
        if not isinstance(checkout_id, str) or not checkout_id:
            raise Refusal(daraja.bad_request("CheckoutRequestID"))
        self._check_password(body, shortcode, timestamp)
        session = self.sessions.get(checkout_id)
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
