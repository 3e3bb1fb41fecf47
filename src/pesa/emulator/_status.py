"""Transaction Status: M-Pesa's record of a receipt (or of a B2C request), by Result callback."""

from __future__ import annotations

from typing import Any

from pesa.emulator import _daraja as daraja
from pesa.emulator import _validate as v
from pesa.emulator._initiator import Decision, InitiatorJob, InitiatorProduct
from pesa.emulator._product import DarajaRoute
from pesa.emulator._validate import Refusal

__all__ = ["TransactionStatus"]


class TransactionStatus(InitiatorProduct):
    """``/mpesa/transactionstatus/v1/query``: finds any transaction in the books."""

    operations = ("transaction_status",)

    def routes(self) -> list[DarajaRoute]:
        return [DarajaRoute("/mpesa/transactionstatus/v1/query", self.query)]

    def query(self, body: dict[str, Any], app: str) -> tuple[int, dict[str, Any]]:
        """``POST /mpesa/transactionstatus/v1/query`` by TransactionID or OriginalConversationID."""
        del app
        core = self.core
        initiator, credential, result_url, timeout_url = self.initiator_fields(body, "Initiator")
        v.choice(body.get("CommandID"), "CommandID", ("TransactionStatusQuery",))
        receipt = body.get("TransactionID")
        original = body.get("OriginalConversationID")
        if not (isinstance(receipt, str) and receipt) and not (
            isinstance(original, str) and original
        ):
            raise Refusal(daraja.bad_request("TransactionID"))
        party = v.required_text(body.get("PartyA"), "PartyA", max_length=12)
        if not party.isdigit():
            raise Refusal(daraja.bad_request("PartyA"))
        v.choice(body.get("IdentifierType"), "IdentifierType", ("1", "2", "4"))
        v.optional_text(body.get("Remarks"), "Remarks", max_length=100)
        originator_id = core.ids.originator_conversation_id()
        conversation_id = core.ids.conversation_id(core.now())
        outcome = core.rules.outcome(
            "transaction_status", None, None, None, core.config.result_delay
        )

        def decide() -> Decision:
            books = core.books
            if isinstance(receipt, str) and receipt:
                txn = books.find(receipt)
            else:
                txn = books.find_by_originator(original) if isinstance(original, str) else None
            if txn is None:
                return "2032", daraja.RESULT_DESCRIPTIONS["2032"], "", []
            stamp = f"{txn.completed_at:%Y%m%d%H%M%S}"
            incoming = txn.incoming
            return (
                "0",
                daraja.RESULT_DESCRIPTIONS["0"],
                txn.receipt,
                [
                    ("DebitPartyName", f"{txn.party} - John Doe" if incoming else txn.shortcode),
                    ("CreditPartyName", txn.shortcode if incoming else f"{txn.party} - John Doe"),
                    ("OriginatorConversationID", txn.originator_conversation_id),
                    ("InitiatedTime", int(stamp)),
                    ("DebitAccountType", "MMF Account" if incoming else "Utility Account"),
                    ("DebitPartyCharges", ""),
                    ("TransactionReason", ""),
                    ("ReasonType", "Pay Bill Online" if incoming else "Business Payment"),
                    ("TransactionStatus", "Reversed" if txn.reversed else "Completed"),
                    ("FinalisedTime", int(stamp)),
                    ("Amount", float(txn.amount)),
                    ("ConversationID", txn.conversation_id),
                    ("ReceiptNo", txn.receipt),
                ],
            )

        return self.accept(
            InitiatorJob(
                "transaction_status",
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
