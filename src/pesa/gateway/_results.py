"""``POST /callbacks/{token}/<product>/result|timeout``: where Daraja delivers initiator Results.

One route per initiator product the gateway uses: ``b2c`` (payouts), ``reversal``
(refunds), ``status`` (Transaction Status) and ``balance`` (Account Balance), each with its
ResultURL (``.../result``) and QueueTimeOutURL (``.../timeout``). The checks run in the
order of the STK callback route (:mod:`pesa.gateway._callbacks`): the path token (404 and
nothing stored when wrong), the source address (403 under ``enforce``), the size cap (413),
then the ledger stores the raw body and applies it in one transaction, and Daraja's 200 is
sent only after that commit. What a Result may do is the ledger's rule
(:mod:`pesa.ledger._payout_states`): a Result is evidence, matched by the ids Daraja gave
our request; Transaction Status settles what it cannot prove.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.requests import ClientDisconnect

from pesa._logging import get_logger
from pesa.gateway._callbacks import admit, read_limited, reply
from pesa.gateway._state import GatewayState, gateway_state

__all__ = ["PRODUCTS", "router"]

log = get_logger("pesa.gateway.callbacks")

PRODUCTS = ("b2c", "reversal", "status", "balance")
"""The initiator products whose Results the gateway receives."""

router = APIRouter()

_ACCEPTED = ("applied", "unverified", "duplicate", "ignored")

Ingest = Callable[[GatewayState, bytes, str | None], Awaitable[str]]


async def _b2c_result(state: GatewayState, body: bytes, ip: str | None) -> str:
    return (await state.ledger.payouts.ingest_result(body, source_ip=ip)).status


async def _b2c_timeout(state: GatewayState, body: bytes, ip: str | None) -> str:
    return (await state.ledger.payouts.ingest_timeout(body, source_ip=ip)).status


async def _reversal_result(state: GatewayState, body: bytes, ip: str | None) -> str:
    return (await state.ledger.refunds.ingest_result(body, source_ip=ip)).status


async def _reversal_timeout(state: GatewayState, body: bytes, ip: str | None) -> str:
    return (await state.ledger.refunds.ingest_timeout(body, source_ip=ip)).status


async def _status_result(state: GatewayState, body: bytes, ip: str | None) -> str:
    outcome = await state.ledger.status_queries.ingest_result(
        body, source_ip=ip, resend=state.settings.payout_resend
    )
    return outcome.status


async def _status_timeout(state: GatewayState, body: bytes, ip: str | None) -> str:
    return (await state.ledger.status_queries.ingest_timeout(body, source_ip=ip)).status


async def _balance_result(state: GatewayState, body: bytes, ip: str | None) -> str:
    return await state.ledger.balances.ingest_result(body, source_ip=ip)


async def _balance_timeout(state: GatewayState, body: bytes, ip: str | None) -> str:
    return await state.ledger.balances.ingest_timeout(body, source_ip=ip)


_INGEST: dict[tuple[str, str], Ingest] = {
    ("b2c", "result"): _b2c_result,
    ("b2c", "timeout"): _b2c_timeout,
    ("reversal", "result"): _reversal_result,
    ("reversal", "timeout"): _reversal_timeout,
    ("status", "result"): _status_result,
    ("status", "timeout"): _status_timeout,
    ("balance", "result"): _balance_result,
    ("balance", "timeout"): _balance_timeout,
}


async def initiator_result(request: Request) -> JSONResponse:
    """Store and apply one Result (or queue timeout) of an initiator request."""
    state = gateway_state(request)
    product, what = request.path_params["product"], request.path_params["what"]
    ingest = _INGEST.get((product, what))
    if ingest is None:
        state.metrics.callbacks_received.inc(outcome="forbidden_token")
        return JSONResponse({"detail": "Not Found"}, status_code=404)
    admitted = admit(
        request, state, lambda outcome: state.metrics.callbacks_received.inc(outcome=outcome)
    )
    if isinstance(admitted, JSONResponse):
        return admitted
    peer = admitted
    limit = state.settings.callback_max_body_bytes
    try:
        body, complete = await read_limited(request, limit)
    except ClientDisconnect:
        state.metrics.callbacks_received.inc(outcome="disconnected")
        log.warning("Result from %s: the sender left before the body was complete", peer)
        return reply(400, 1, "Incomplete body")
    if not complete:
        state.metrics.callbacks_received.inc(outcome="too_large")
        log.warning("Result from %s refused: larger than %d bytes", peer, limit)
        try:
            await state.ledger.store_refused_callback(
                body,
                source_ip=peer,
                detail=f"body larger than {limit} bytes: only its first {len(body)} are kept",
                kind=f"{product}_{what}",
            )
        except Exception:
            log.exception("an oversized Result could not be stored")
        return reply(413, 1, "Payload too large", close=True)
    try:
        status = await ingest(state, body, peer)
    except Exception:
        # Not the caller's fault: no 200, so nothing is acknowledged that was not committed.
        state.metrics.callbacks_received.inc(outcome="error")
        log.exception("Result could not be stored")
        return reply(503, 1, "Temporarily unavailable")
    state.metrics.callbacks_received.inc(outcome=status)
    if status in _ACCEPTED:
        return reply(200, 0, "Accepted")
    if status == "unknown_payment":
        return reply(404, 1, "Rejected: no request has these ids")
    return reply(400, 1, "Rejected: not a valid Result")


router.add_route(
    "/callbacks/{token}/{product}/{what}",
    initiator_result,
    methods=["POST"],
    include_in_schema=False,
)
