"""B2C payments (v1 legacy and v3): pay a customer from a shortcode's Utility account."""

from __future__ import annotations

from typing import Any

from pesa.emulator import _daraja as daraja
from pesa.emulator import _validate as v
from pesa.emulator._books import Transaction
from pesa.emulator._core import Core
from pesa.emulator._initiator import Decision, InitiatorJob, InitiatorProduct
from pesa.emulator._product import DarajaRoute
from pesa.emulator._validate import Refusal

__all__ = ["BusinessToCustomer"]


class BusinessToCustomer(InitiatorProduct):
    """``/mpesa/b2c/v1/paymentrequest`` and ``/mpesa/b2c/v3/paymentrequest``."""

    operations = ("b2c",)

    def __init__(self, core: Core) -> None:
        super().__init__(core)
        self._originator_ids: set[str] = set()

    def reset(self) -> None:
        self._originator_ids = set()

    def routes(self) -> list[DarajaRoute]:
        return [
            DarajaRoute("/mpesa/b2c/v1/paymentrequest", self.pay_v1),
            DarajaRoute("/mpesa/b2c/v3/paymentrequest", self.pay_v3),
        ]

    def pay_v1(self, body: dict[str, Any], app: str) -> tuple[int, dict[str, Any]]:
        """``POST /mpesa/b2c/v1/paymentrequest``: Daraja makes the OriginatorConversationID."""
        del app
        return self._pay(body, v3=False)

    def pay_v3(self, body: dict[str, Any], app: str) -> tuple[int, dict[str, Any]]:
        """``POST /mpesa/b2c/v3/paymentrequest``: the caller's OriginatorConversationID."""
        del app
        return self._pay(body, v3=True)

    def _pay(self, body: dict[str, Any], *, v3: bool) -> tuple[int, dict[str, Any]]:
        core = self.core
        cfg = core.config
        originator_id = ""
        if v3:
            originator_id = v.required_text(
                body.get("OriginatorConversationID"), "OriginatorConversationID"
            )
        initiator, credential, result_url, timeout_url = self.initiator_fields(
            body, "InitiatorName"
        )
        v.choice(
            body.get("CommandID"),
            "CommandID",
            ("SalaryPayment", "BusinessPayment", "PromotionPayment"),
        )
        amount = v.amount(body.get("Amount"), cfg.b2c_min_amount, cfg.b2c_max_amount)
        shortcode = core.org_shortcode(body.get("PartyA"), "PartyA")
        phone = v.msisdn(body.get("PartyB"), "PartyB")
        v.required_text(body.get("Remarks"), "Remarks", min_length=2, max_length=100)
        occasion = body.get("Occassion", body.get("Occasion"))
        v.optional_text(occasion, "Occassion", max_length=100)
        if v3 and originator_id in self._originator_ids:
            raise Refusal(daraja.DUPLICATE_ORIGINATOR)
        originator_id = originator_id or core.ids.originator_conversation_id()
        self._originator_ids.add(originator_id)
        conversation_id = core.ids.conversation_id(core.now())
        outcome = core.rules.outcome("b2c", phone, amount, None, cfg.result_delay)

        def decide() -> Decision:
            books = core.books
            accounts = books.accounts(shortcode)
            if accounts["Utility Account"] < amount:
                return "1", daraja.RESULT_DESCRIPTIONS["1"], "", []
            accounts["Utility Account"] -= amount
            now = core.now()
            receipt = core.ids.receipt(now)
            books.record(
                Transaction(
                    receipt, "b2c", amount, shortcode, phone, now, originator_id, conversation_id
                )
            )
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

        return self.accept(
            InitiatorJob(
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
