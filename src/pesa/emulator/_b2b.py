"""The B2B family and tax remittance: Business PayBill, Buy Goods, B2C top-up, MMF transfer
(``/mpesa/b2b/v1/paymentrequest``) and PayTaxToKRA (``/mpesa/b2b/v1/remittax``), REFERENCE
8.3 and 8.4.

The money leaves ``PartyA``'s Working account and lands in ``PartyB``'s Utility account
(its own Utility for the MMF transfer); the Result carries B2B's parameters
(``DebitAccountBalance`` in the ``{Amount={...}}`` form, ``DebitPartyAffectedAccountBalance``,
``TransCompletedTime``, ...) and ``BillReferenceNumber`` in ``ReferenceData``.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from pesa.emulator import _daraja as daraja
from pesa.emulator import _validate as v
from pesa.emulator._books import Transaction, balance_field
from pesa.emulator._initiator import Decision, InitiatorJob, InitiatorProduct
from pesa.emulator._product import DarajaRoute
from pesa.emulator._validate import Refusal

__all__ = ["BusinessToBusiness"]


def _amount_block(value: Decimal) -> str:
    # B2B's balances read {Amount={CurrencyCode=KES, MinimumAmount=<cents>, BasicAmount=<KES>}}
    # (REFERENCE 4, "Balance strings").
    cents = int((value * 100).to_integral_value())
    return f"{{Amount={{CurrencyCode=KES, MinimumAmount={cents}, BasicAmount={value:.2f}}}}}"


class BusinessToBusiness(InitiatorProduct):
    """``/mpesa/b2b/v1/paymentrequest`` and ``/mpesa/b2b/v1/remittax``."""

    operations = ("b2b", "tax")

    def routes(self) -> list[DarajaRoute]:
        return [
            DarajaRoute("/mpesa/b2b/v1/paymentrequest", self.pay),
            DarajaRoute("/mpesa/b2b/v1/remittax", self.remit_tax),
        ]

    def pay(self, body: dict[str, Any], app: str) -> tuple[int, dict[str, Any]]:
        """``POST /mpesa/b2b/v1/paymentrequest``: one of B2B's CommandIDs."""
        del app
        command = v.choice(body.get("CommandID"), "CommandID", daraja.B2B_COMMANDS)
        return self._transfer(body, "b2b", command)

    def remit_tax(self, body: dict[str, Any], app: str) -> tuple[int, dict[str, Any]]:
        """``POST /mpesa/b2b/v1/remittax``: ``PayTaxToKRA`` to KRA's 572572 only."""
        del app
        command = v.choice(body.get("CommandID"), "CommandID", (daraja.TAX_COMMAND,))
        return self._transfer(body, "tax", command)

    def _transfer(self, body: dict[str, Any], operation: str, command: str) -> tuple[int, Any]:
        core = self.core
        cfg = core.config
        initiator, credential, result_url, timeout_url = self.initiator_fields(body, "Initiator")
        # Only 4 (a shortcode) is accepted for these APIs (REFERENCE 8.3); note Daraja's
        # "Reciever" spelling.
        v.choice(body.get("SenderIdentifierType"), "SenderIdentifierType", ("4",))
        v.choice(body.get("RecieverIdentifierType"), "RecieverIdentifierType", ("4",))
        amount = v.amount(body.get("Amount"), cfg.b2b_min_amount, cfg.b2b_max_amount)
        payer = core.org_shortcode(body.get("PartyA"), "PartyA")
        payee = v.shortcode(body.get("PartyB"), "PartyB")
        if operation == "tax" and payee != cfg.kra_shortcode:
            raise Refusal(daraja.bad_request("PartyB"))
        reference = body.get("AccountReference")
        if command in ("BusinessPayBill", daraja.TAX_COMMAND) or reference is not None:
            reference = v.required_text(reference, "AccountReference", max_length=13)
        requester = body.get("Requester")
        if requester not in (None, ""):
            v.msisdn(requester, "Requester")
        v.required_text(body.get("Remarks"), "Remarks", max_length=100)
        v.optional_text(body.get("Occassion", body.get("Occasion")), "Occassion", max_length=100)
        reference_text = reference if isinstance(reference, str) else ""
        originator_id = core.ids.originator_conversation_id()
        conversation_id = core.ids.conversation_id(core.now())
        outcome = core.rules.outcome(operation, None, amount, reference_text, cfg.result_delay)

        def decide() -> Decision:
            books = core.books
            source = books.accounts(payer)
            if source["Working Account"] < amount:
                return "1", daraja.RESULT_DESCRIPTIONS["1"], "", []
            source["Working Account"] -= amount
            if command == "BusinessTransferFromMMFToUtility":
                books.accounts(payer)["Utility Account"] += amount
            else:
                books.accounts(payee)["Utility Account"] += amount
            now = core.now()
            receipt = core.ids.receipt(now)
            books.record(
                Transaction(
                    receipt,
                    operation,
                    amount,
                    payer,
                    payee,
                    now,
                    originator_id,
                    conversation_id,
                    reference=reference_text,
                )
            )
            name = daraja.TAX_RECEIVER_NAME if operation == "tax" else "pesa emulator"
            working = source["Working Account"]
            return (
                "0",
                daraja.RESULT_DESCRIPTIONS["0"],
                receipt,
                [
                    ("DebitAccountBalance", _amount_block(working)),
                    ("Amount", f"{amount}.00"),
                    ("DebitPartyAffectedAccountBalance", balance_field("Working Account", working)),
                    ("TransCompletedTime", f"{now:%Y%m%d%H%M%S}"),
                    ("DebitPartyCharges", ""),
                    ("ReceiverPartyPublicName", f"{payee} - {name}"),
                    ("Currency", "KES"),
                    ("InitiatorAccountCurrentBalance", _amount_block(working)),
                ],
            )

        job = InitiatorJob(
            operation,
            originator_id,
            conversation_id,
            result_url,
            timeout_url,
            initiator,
            credential,
            outcome,
            decide,
        )
        if reference_text:
            job.references.append(("BillReferenceNumber", reference_text))
        return self.accept(job)
