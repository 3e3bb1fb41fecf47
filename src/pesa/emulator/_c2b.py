"""C2B: URL registration (v1, v2), simulated customer payments, validation and confirmation."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from hashlib import sha256
from typing import Any

from pesa._logging import get_logger
from pesa.emulator import _daraja as daraja
from pesa.emulator import _validate as v
from pesa.emulator._books import Transaction
from pesa.emulator._core import Core
from pesa.emulator._product import DarajaRoute, Product
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

    def reset(self) -> None:
        self.registrations = {}

    def routes(self) -> list[DarajaRoute]:
        token_error = daraja.TOKEN_INVALID_C2B
        return [
            DarajaRoute("/mpesa/c2b/v1/registerurl", self.register_v1, token_error),
            DarajaRoute("/mpesa/c2b/v2/registerurl", self.register_v2, token_error),
            DarajaRoute("/mpesa/c2b/v1/simulate", self.simulate),
            DarajaRoute("/mpesa/c2b/v2/simulate", self.simulate),
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
        shortcode = v.shortcode(body.get("ShortCode"), "ShortCode")
        if shortcode not in self.core.config.shortcodes:
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
        shortcode = v.shortcode(body.get("ShortCode"), "ShortCode")
        if not core.known_shortcode(shortcode):
            raise Refusal(daraja.bad_request("ShortCode"))
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
            core.spawn(
                self._run(registration, shortcode, command, amount, phone, bill_ref, outcome)
            )
        return 200, {
            "OriginatorCoversationID": core.ids.request_id(),
            "ResponseCode": "0",
            "ResponseDescription": daraja.C2B_SIMULATE_ACCEPTED,
        }

    async def _run(
        self,
        registration: Registration,
        shortcode: str,
        command: str,
        amount: int,
        phone: str,
        bill_ref: str,
        outcome: Outcome | None,
    ) -> None:
        core = self.core
        cfg = core.config
        delay = cfg.result_delay if outcome is None else outcome.delay
        if delay > 0:
            await asyncio.sleep(delay)
        if outcome is not None and str(outcome.result_code) != "0":
            # The customer's payment failed in M-Pesa (a rule said so): nothing is notified.
            _log.info("C2B payment on %s failed with %s", shortcode, outcome.result_code)
            return
        now = core.now()
        receipt = core.ids.receipt(now)
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
        if cfg.c2b_validation:
            record = await core.delivery.post(
                "c2b_validation",
                registration.validation_url,
                payload,
                timeout=cfg.c2b_validation_timeout,
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
        accounts = core.books.accounts(shortcode)
        accounts["Utility Account"] += amount
        payload["OrgAccountBalance"] = f"{accounts['Utility Account']:.2f}"
        core.books.record(Transaction(receipt, "c2b", amount, shortcode, phone, now))
        await core.send(outcome, "c2b_confirmation", registration.confirmation_url, None, payload)
