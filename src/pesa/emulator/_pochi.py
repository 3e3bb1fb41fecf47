"""Business to Pochi: B2C v3's body paying a Pochi la Biashara wallet (REFERENCE 8.2)."""

from __future__ import annotations

from typing import Any

from pesa.emulator import _daraja as daraja
from pesa.emulator import _validate as v
from pesa.emulator._books import Transaction
from pesa.emulator._core import Core
from pesa.emulator._initiator import Decision, InitiatorJob, InitiatorProduct
from pesa.emulator._product import DarajaRoute
from pesa.emulator._validate import Refusal

__all__ = ["BusinessToPochi"]


class BusinessToPochi(InitiatorProduct):
    """``/mpesa/b2pochi/v1/paymentrequest``: from the shortcode's Utility account."""

    operations = ("b2pochi",)

    def __init__(self, core: Core) -> None:
        super().__init__(core)
        self._originator_ids: set[str] = set()

    def reset(self) -> None:
        self._originator_ids = set()

    def routes(self) -> list[DarajaRoute]:
        return [DarajaRoute("/mpesa/b2pochi/v1/paymentrequest", self.pay)]

    def pay(self, body: dict[str, Any], app: str) -> tuple[int, dict[str, Any]]:
        """``POST /mpesa/b2pochi/v1/paymentrequest``: the caller's OriginatorConversationID."""
        del app
        core = self.core
        cfg = core.config
        originator_id = v.required_text(
            body.get("OriginatorConversationID"), "OriginatorConversationID"
        )
        initiator, credential, result_url, timeout_url = self.initiator_fields(
            body, "InitiatorName"
        )
        v.choice(body.get("CommandID"), "CommandID", (daraja.POCHI_COMMAND,))
        amount = v.amount(body.get("Amount"), cfg.b2c_min_amount, cfg.b2c_max_amount)
        shortcode = core.org_shortcode(body.get("PartyA"), "PartyA")
        phone = v.msisdn(body.get("PartyB"), "PartyB")
        v.required_text(body.get("Remarks"), "Remarks", min_length=2, max_length=100)
        v.optional_text(body.get("Occassion", body.get("Occasion")), "Occassion", max_length=100)
        if originator_id in self._originator_ids:
            # As B2C v3 (same body, REFERENCE 8.2): a re-sent payment is refused, never paid.
            raise Refusal(daraja.DUPLICATE_ORIGINATOR)
        self._originator_ids.add(originator_id)
        conversation_id = core.ids.conversation_id(core.now())
        outcome = core.rules.outcome("b2pochi", phone, amount, None, cfg.result_delay)

        def decide() -> Decision:
            accounts = core.books.accounts(shortcode)
            if accounts["Utility Account"] < amount:
                return "1", daraja.RESULT_DESCRIPTIONS["1"], "", []
            accounts["Utility Account"] -= amount
            now = core.now()
            receipt = core.ids.receipt(now)
            core.books.record(
                Transaction(
                    receipt,
                    "b2pochi",
                    amount,
                    shortcode,
                    phone,
                    now,
                    originator_id,
                    conversation_id,
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
                "b2pochi",
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
