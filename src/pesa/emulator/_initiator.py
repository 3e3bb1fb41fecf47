"""What every initiator API shares: initiator fields, SecurityCredential checks, the
synchronous acknowledgement and the ``{"Result": ...}`` callback to ResultURL (REFERENCE 8).

B2C, Transaction Status, Account Balance and Reversal (and the B2B family later) are each an
:class:`InitiatorProduct`: they validate their request, then hand an :class:`InitiatorJob`
whose ``decide`` moves money in the books and returns the Result.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pesa.emulator import _daraja as daraja
from pesa.emulator import _validate as v
from pesa.emulator._crypto import credential_keys, decode_block
from pesa.emulator._product import Product
from pesa.emulator._rules import Outcome

__all__ = ["Decision", "InitiatorJob", "InitiatorProduct"]

# (ResultCode, ResultDesc, TransactionID, ResultParameters as (Key, Value) pairs)
Decision = tuple[str, str, str, list[tuple[str, Any]]]


@dataclass
class InitiatorJob:
    """One accepted initiator request, waiting for M-Pesa to decide its Result."""

    operation: str
    originator_id: str
    conversation_id: str
    result_url: str
    timeout_url: str
    initiator: str
    credential: str
    outcome: Outcome | None
    decide: Callable[[], Decision]
    references: list[tuple[str, Any]] = field(default_factory=list)


class InitiatorProduct(Product):
    """Base of the initiator APIs: acknowledge now, POST ``{"Result": ...}`` later."""

    callback_kinds = ("result", "queue_timeout")

    def initiator_fields(self, body: dict[str, Any], name_field: str) -> tuple[str, str, str, str]:
        """The initiator name, SecurityCredential, ResultURL and QueueTimeOutURL, validated."""
        initiator = v.required_text(body.get(name_field), name_field)
        credential = v.required_text(
            body.get("SecurityCredential"), "SecurityCredential", max_length=4096
        )
        result_url = v.url(body.get("ResultURL"), "ResultURL")
        timeout_url = v.url(body.get("QueueTimeOutURL"), "QueueTimeOutURL")
        return initiator, credential, result_url, timeout_url

    def credential_ok(self, initiator: str, credential: str) -> bool:
        """Lenient: a known initiator and an RSA-block-shaped credential; strict: decrypted."""
        config = self.core.config
        password = config.initiators.get(initiator)
        if password is None:
            return False
        if not config.strict:
            return decode_block(credential) is not None
        plain = credential_keys(config.key_dir).decrypt(credential)
        return plain is not None and hmac.compare_digest(plain.encode(), password.encode())

    def accept(self, job: InitiatorJob) -> tuple[int, dict[str, Any]]:
        """Schedule the job's Result and answer Daraja's synchronous acknowledgement."""
        self.core.spawn(self._run(job))
        return 200, {
            "OriginatorConversationID": job.originator_id,
            "ConversationID": job.conversation_id,
            "ResponseCode": "0",
            "ResponseDescription": daraja.INITIATOR_ACCEPTED,
        }

    async def _run(self, job: InitiatorJob) -> None:
        core = self.core
        delay = job.outcome.delay if job.outcome is not None else core.config.result_delay
        if delay > 0:
            await asyncio.sleep(delay)
        references = [("QueueTimeoutURL", job.timeout_url), *job.references]
        params: list[tuple[str, Any]]
        outcome = job.outcome
        if outcome is not None and outcome.callback == "timeout":
            # Daraja's QueueTimeOutURL payload is undocumented (REFERENCE 14.5): the Result
            # envelope with a configurable code, as SDKs expect.
            if (
                outcome.processed
                and str(outcome.result_code) == "0"
                and self.credential_ok(job.initiator, job.credential)
            ):
                job.decide()  # M-Pesa went ahead anyway: the money moved
            code, desc, txn, params = (
                core.config.queue_timeout_result_code,
                core.config.queue_timeout_result_desc,
                daraja.FAILED_TRANSACTION_ID,
                [],
            )
        elif not self.credential_ok(job.initiator, job.credential):
            code, desc, txn, params = "2001", daraja.RESULT_DESCRIPTIONS["2001"], "", []
        elif job.outcome is not None and str(job.outcome.result_code) != "0":
            code = str(job.outcome.result_code)
            desc = job.outcome.result_desc or daraja.RESULT_DESCRIPTIONS.get(
                code, "The service request could not be processed."
            )
            txn, params = "", []
        else:
            code, desc, txn, params = job.decide()
        result: dict[str, Any] = {
            "ResultType": 0,
            "ResultCode": int(code) if code.isdigit() else code,
            "ResultDesc": desc,
            "OriginatorConversationID": job.originator_id,
            "ConversationID": job.conversation_id,
            "TransactionID": txn or daraja.FAILED_TRANSACTION_ID,
        }
        if params:
            result["ResultParameters"] = {
                "ResultParameter": [{"Key": k, "Value": val} for k, val in params]
            }
        items = [{"Key": k, "Value": val} for k, val in references]
        result["ReferenceData"] = {"ReferenceItem": items[0] if len(items) == 1 else items}
        await core.send(job.outcome, "result", job.result_url, job.timeout_url, {"Result": result})
