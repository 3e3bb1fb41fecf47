"""Reversal: give a customer's payment back (all of it, or part), by Result callback."""

from __future__ import annotations

from typing import Any

from pesa.emulator import _daraja as daraja
from pesa.emulator import _validate as v
from pesa.emulator._books import Transaction, balance_field
from pesa.emulator._initiator import Decision, InitiatorJob, InitiatorProduct
from pesa.emulator._product import DarajaRoute

__all__ = ["Reversal"]

# What the Reversal API reverses: C2B payments, M-Pesa Express included (REFERENCE 8.7).
_REVERSIBLE = ("stk", "c2b")


class Reversal(InitiatorProduct):
    """``/mpesa/reversal/v1/request``.

    Whether a partial amount may be reversed is undocumented: by default
    (``reversal_partial``) any amount up to what remains unreversed is, and the receipt
    reads ``Reversed`` once nothing remains. B2C receipts are not reversible by the API
    (REFERENCE 8.1) unless ``reversal_of_b2c``.
    """

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
            cfg = core.config
            books = core.books
            txn = books.find(receipt)
            reversible = (*_REVERSIBLE, "b2c") if cfg.reversal_of_b2c else _REVERSIBLE
            if txn is None or txn.kind not in reversible or txn.shortcode != receiver:
                return "R000002", daraja.RESULT_DESCRIPTIONS["R000002"], "", []
            remaining = txn.amount - txn.reversed_amount
            if remaining <= 0:
                return "R000001", daraja.RESULT_DESCRIPTIONS["R000001"], "", []
            if amount > remaining or (not cfg.reversal_partial and amount != txn.amount):
                # More than remains (or a part, when parts are refused): undocumented [U].
                return "2006", daraja.RESULT_DESCRIPTIONS["2006"], "", []
            accounts = books.accounts(receiver)
            if txn.incoming:
                # The business gives the customer's money back from its Utility account.
                if accounts["Utility Account"] < amount:
                    return "1", daraja.RESULT_DESCRIPTIONS["1"], "", []
                accounts["Utility Account"] -= amount
            else:
                accounts["Utility Account"] += amount  # a B2C payment comes back
            txn.reversed_amount += amount
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
                        balance_field("Utility Account", accounts["Utility Account"]),
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
