"""What a running gateway holds (ledger, client, workers), shared by its routes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from fastapi import Request

from pesa._exceptions import PesaError
from pesa.client import Accounts, AsyncDaraja
from pesa.config import Settings
from pesa.gateway._accounts import AccountClients
from pesa.gateway._dispatcher import WebhookDispatcher
from pesa.gateway._metrics import Metrics
from pesa.gateway._payments import PaymentCreator
from pesa.gateway._reconciler import Reconciler
from pesa.gateway._transfers import InitiatorUrls, TransferChecker, TransferSender
from pesa.gateway._trust import CallbackTrust
from pesa.ledger import Ledger

if TYPE_CHECKING:
    from pesa.gateway._app import GatewayUrls
    from pesa.gateway._c2b import C2BValidatorRule
    from pesa.gateway._receipts import C2BRegistrar, ReceiptVerifier

__all__ = ["GatewayState", "gateway_state"]


@dataclass(slots=True)
class GatewayState:
    """The live objects of one gateway process, built by the app's lifespan.

    Attributes:
        settings: the settings the app was created with.
        ledger: the open ledger.
        client: the Daraja client (pointed at the mounted emulator in ``emulator``).
        creator: the payment create flow.
        reconciler: settles payments by query (``POST /v1/payments/{id}/refresh``).
        dispatcher: delivers events to webhook URLs and Python handlers.
        sender: sends payouts and refunds (paced by ``PESA_PAYOUT_RATE``).
        checker: settles payouts and refunds by Transaction Status.
        initiator_urls: where Results of B2C, reversal, status and balance requests go.
        trust: the callback trust policy.
        metrics: counters rendered by ``/metrics``.
        accounts: the named Daraja accounts (with the emulator's fallbacks in ``emulator``).
        clients: one Daraja client per account (``client`` is the default account's).
        api_key: the bearer key of the REST API; ``None`` leaves it open (emulator only).
        callback_url: the STK CallBackURL given to Daraja.
        public_url: where Daraja and users reach this gateway.
        emulator_url: where the mounted emulator answers, if there is one.
        urls: every URL of the gateway (C2B and Transaction Status ones included).
        verifier: asks Transaction Status about receipts (``POST /v1/receipts/lookup``).
        validator: answers C2B validation requests.
        registrar: registers C2B URLs at start (its ``registrations`` show how it went).
    """

    settings: Settings
    ledger: Ledger
    client: AsyncDaraja
    creator: PaymentCreator
    reconciler: Reconciler
    dispatcher: WebhookDispatcher
    sender: TransferSender
    checker: TransferChecker
    initiator_urls: InitiatorUrls
    trust: CallbackTrust
    metrics: Metrics
    accounts: Accounts
    clients: AccountClients
    api_key: str | None
    callback_url: str
    public_url: str
    emulator_url: str | None
    urls: GatewayUrls
    verifier: ReceiptVerifier
    validator: C2BValidatorRule
    registrar: C2BRegistrar


def gateway_state(request: Request) -> GatewayState:
    """FastAPI dependency: the state the lifespan stored on the app."""
    state = getattr(request.app.state, "gateway", None)
    if not isinstance(state, GatewayState):
        raise PesaError("the gateway is not started: its lifespan has not run")
    return state
