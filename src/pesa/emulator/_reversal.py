"""Reversal: give a customer's payment back, by Result callback."""

from __future__ import annotations

from typing import Any

from pesa.emulator import _daraja as daraja
from pesa.emulator import _validate as v
from pesa.emulator._books import Transaction
from pesa.emulator._initiator import Decision, InitiatorJob, InitiatorProduct
from pesa.emulator._product import DarajaRoute

__all__ = ["Reversal"]


class Reversal(InitiatorProduct):
    """``/mpesa/reversal/v1/request``."""

    operations = ("reversal",)

    def routes(self) -> list[DarajaRoute]:
        return [DarajaRoute("/mpesa/reversal/v1/request", self.request)]

    def request(self, body: dict[str, Any], app: str) -> tuple[int, dict[str, Any]]:
        """``POST /mpesa/reversal/v1/request``."""
        del app
        core = self.core
        initiator, credential, result_url, timeout_url = self.initiator_fields(body, "Initiator")
        v.choice(body.get("CommandID"), "CommandID", ("TransactionReversal",))
        receipt = v.required_text(body.get("TransactionID"), "TransactionID", max_length=20)
        amount = v.amount(body.get("Amount"), 1, 10**9)
        receiver = v.shortcode(body.get("ReceiverParty"), "ReceiverParty")
        # Daraja insists on its misspelling: the correct spelling reads as a missing field.
        v.choice(body.get("RecieverIdentifierType"), "RecieverIdentifierType", ("11", "4"))
        v.optional_text(body.get("Remarks"), "Remarks", max_length=100)
        v.optional_text(body.get("Occasion"), "Occasion", max_length=100)
        originator_id = core.ids.originator_conversation_id()
        conversation_id = core.ids.conversation_id(core.now())
        outcome = core.rules.outcome("reversal", None, amount, None, core.config.result_delay)

        def decide() -> Decision:
            books = core.books
            txn = books.find(receipt)
            # The Reversal API reverses C2B (including M-Pesa Express) only, not B2C.
            if txn is None or txn.kind not in ("stk", "c2b") or txn.shortcode != receiver:
                return "R000002", daraja.RESULT_DESCRIPTIONS["R000002"], "", []
            if txn.reversed:
                return "R000001", daraja.RESULT_DESCRIPTIONS["R000001"], "", []
            if amount != txn.amount:
                return "2006", daraja.RESULT_DESCRIPTIONS["2006"], "", []
            accounts = books.accounts(receiver)
            accounts["Utility Account"] -= amount
            txn.reversed = True
            now = core.now()
            new_receipt = core.ids.receipt(now)
            books.record(
                Transaction(
                    new_receipt,
                    "reversal",
                    amount,
                    receiver,
                    txn.party,
                    now,
                    originator_id,
                    conversation_id,
                )
            )
            return (
                "0",
                daraja.RESULT_DESCRIPTIONS["0"],
                new_receipt,
                [
                    (
                        "DebitAccountBalance",
                        f"Utility Account|KES|{accounts['Utility Account']:.2f}",
                    ),
                    ("Amount", float(amount)),
                    ("TransCompletedTime", int(f"{now:%Y%m%d%H%M%S}")),
                    ("OriginalTransactionID", receipt),
                    ("Charge", 0.0),
                    ("CreditPartyPublicName", f"{txn.party} - John Doe"),
                    ("DebitPartyPublicName", f"{receiver} - pesa emulator"),
                ],
            )

        return self.accept(
            InitiatorJob(
                "reversal",
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
