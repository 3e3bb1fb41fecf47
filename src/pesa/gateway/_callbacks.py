"""``POST /callbacks/{token}/stk``: where Daraja delivers STK push results.

The order of checks is the point of this module:

1. wrong path token → 404, nothing stored, nothing logged beyond one line (to a guesser the
   route does not exist);
2. source address not on the allowlist (``enforce`` mode) → 403, nothing stored;
3. the raw body is handed to the ledger, which stores it and applies the result in one
   transaction; Daraja's 200 is sent only after that commit;
4. a body we cannot use (not JSON, wrong shape, a CheckoutRequestID we never issued, a
   success whose amount or phone is not what we asked for under
   ``PESA_CALLBACK_ON_MISMATCH=refuse``) is still stored raw for audit, changes no payment,
   and gets a clear 4xx, never a 500.

What a callback may do is the ledger's rule, not this route's (``pesa.ledger._states``): a
success settles a payment only when it can be cross-checked against the request; anything
less is kept as evidence (answered 200, ``unverified``) and the reconciler's STK query, which
asks Daraja directly, settles the payment. A success naming an id we never recorded may give
that id, unverified, to the one ``unknown`` payment it fits (a lost push answer).
"""

from __future__ import annotations

import logging
import re

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from pesa._logging import get_logger
from pesa.daraja._trust import MAX_CALLBACK_BYTES, callback_reply
from pesa.gateway._state import gateway_state

__all__ = ["MAX_CALLBACK_BYTES", "CallbackPathFilter", "redact_callback_paths", "router"]

log = get_logger("pesa.gateway.callbacks")


router = APIRouter()

_CALLBACK_PATH = re.compile(r"/callbacks/[^/\s?\"']+/")


def redact_callback_paths(text: str) -> str:
    """Hide the token of callback URLs: ``/callbacks/<token>/stk`` → ``/callbacks/***/stk``."""
    return _CALLBACK_PATH.sub("/callbacks/***/", text)


class CallbackPathFilter(logging.Filter):
    """A logging filter for access logs (``uvicorn.access``): no callback token in a log line.

    The path of every callback carries the secret token, and access logs are not pesa's
    redacted loggers, so ``pesa serve`` installs this on them.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                redact_callback_paths(arg) if isinstance(arg, str) else arg for arg in record.args
            )
        if isinstance(record.msg, str):
            record.msg = redact_callback_paths(record.msg)
        return True


def _reply(status_code: int, result_code: int, desc: str) -> JSONResponse:
    # Daraja reads {"ResultCode", "ResultDesc"} (REFERENCE §6.3); 0 means accepted.
    return JSONResponse({"ResultCode": result_code, "ResultDesc": desc}, status_code=status_code)


async def _read_limited(request: Request) -> bytes | None:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_CALLBACK_BYTES:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_CALLBACK_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


async def stk_callback(request: Request) -> JSONResponse:
    """Store and apply one STK push result from Daraja (see the module docstring).

    A plain Starlette route (registered below with ``add_route``): this is the hot path
    under load, and it needs none of FastAPI's dependency solving or validation.
    """
    token: str = request.path_params["token"]
    state = gateway_state(request)
    if not state.trust.check_token(token):
        state.metrics.callbacks_received.inc(outcome="forbidden_token")
        log.warning("callback with a wrong path token refused (404)")
        return JSONResponse({"detail": "Not Found"}, status_code=404)
    peer = request.client.host if request.client else None
    verdict = state.trust.check_source(peer, request.headers.getlist("x-forwarded-for"))
    if not verdict.allowed:
        state.metrics.callbacks_received.inc(outcome="forbidden_source")
        log.warning("callback from %s refused: %s", verdict.client_ip, verdict.reason)
        return _reply(403, 1, "Forbidden")
    if state.trust.allowlist_mode == "log" and not verdict.listed:
        log.warning("callback from %s accepted but %s", verdict.client_ip, verdict.reason)
    body = await _read_limited(request)
    if body is None:
        state.metrics.callbacks_received.inc(outcome="too_large")
        log.warning("callback from %s refused: larger than %d bytes", peer, MAX_CALLBACK_BYTES)
        return _reply(413, 1, "Payload too large")
    try:
        # The mismatch check runs inside the ledger's transaction: no race with the update.
        outcome = await state.ledger.ingest_stk_callback(
            body, source_ip=verdict.client_ip, on_mismatch=state.settings.callback_on_mismatch
        )
    except Exception:
        # Not the caller's fault (the database is down, ...): no 200, so nothing is
        # acknowledged that was not committed; the reconciler settles the payment anyway.
        state.metrics.callbacks_received.inc(outcome="error")
        log.exception("callback could not be stored")
        return _reply(503, 1, "Temporarily unavailable")
    state.metrics.callbacks_received.inc(outcome=outcome.status)
    status_code, reply = callback_reply(outcome.status, outcome.detail)
    if status_code != 200:
        log.warning(
            "callback %s not applied (%s): %s", outcome.callback_id, outcome.status, outcome.detail
        )
    return JSONResponse(reply, status_code=status_code)


router.add_route("/callbacks/{token}/stk", stk_callback, methods=["POST"], include_in_schema=False)
