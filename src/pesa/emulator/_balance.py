"""Account Balance: a shortcode's accounts, read from the books, by Result callback."""

from __future__ import annotations

from typing import Any

from pesa.emulator import _daraja as daraja
from pesa.emulator import _validate as v
from pesa.emulator._books import balance_field
from pesa.emulator._initiator import Decision, InitiatorJob, InitiatorProduct
from pesa.emulator._product import DarajaRoute

__all__ = ["AccountBalance"]


class AccountBalance(InitiatorProduct):
    """``/mpesa/accountbalance/v1/query``."""

    operations = ("account_balance",)

    def routes(self) -> list[DarajaRoute]:
        return [DarajaRoute("/mpesa/accountbalance/v1/query", self.query)]

    def query(self, body: dict[str, Any], app: str) -> tuple[int, dict[str, Any]]:
        """``POST /mpesa/accountbalance/v1/query``: the Result carries ``AccountBalance``."""
        del app
        core = self.core
        initiator, credential, result_url, timeout_url = self.initiator_fields(body, "Initiator")
        v.choice(body.get("CommandID"), "CommandID", ("AccountBalance",))
        shortcode = core.org_shortcode(body.get("PartyA"), "PartyA")
        v.choice(body.get("IdentifierType"), "IdentifierType", ("4",))
        v.optional_text(body.get("Remarks"), "Remarks", max_length=100)
        originator_id = core.ids.originator_conversation_id()
        conversation_id = core.ids.conversation_id(core.now())
        outcome = core.rules.outcome("account_balance", None, None, None, core.config.result_delay)

        def decide() -> Decision:
            accounts = core.books.accounts(shortcode)
            text = "&".join(balance_field(name, value) for name, value in accounts.items())
            stamp = int(f"{core.now():%Y%m%d%H%M%S}")
            return (
                "0",
                daraja.RESULT_DESCRIPTIONS["0"],
                "",
                [("AccountBalance", text), ("BOCompletedTime", stamp)],
            )

        return self.accept(
            InitiatorJob(
                "account_balance",
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
