"""``POST /callbacks/{token}/stk``: where Daraja delivers STK push results.

The order of checks is the point of this module:

1. wrong path token → 404, nothing stored, nothing logged beyond one line (to a guesser the
   route does not exist);
2. source address not on the allowlist (``enforce`` mode) → 403, nothing stored;
3. the raw body is handed to the ledger, which stores it and applies the result in one
   transaction; Daraja's 200 is sent only after that commit;
4. a body over ``PESA_CALLBACK_MAX_BODY_BYTES`` is read no further than the cap: its first
   bytes are stored raw (``invalid``) and the answer is 413;
5. a body we cannot use (not JSON, wrong shape, a CheckoutRequestID we never issued, a
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
from collections.abc import Callable
from urllib.parse import unquote_plus

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.requests import ClientDisconnect

from pesa._logging import get_logger, mask_phone, redact
from pesa.daraja._trust import callback_reply
from pesa.gateway._state import GatewayState, gateway_state

__all__ = [
    "CallbackPathFilter",
    "admit",
    "read_limited",
    "redact_access_line",
    "redact_callback_paths",
    "reply",
    "router",
]

log = get_logger("pesa.gateway.callbacks")

router = APIRouter()

_CALLBACK_PATH = re.compile(r"/callbacks/[^/\s?\"']+/")
# A Transaction Status ResultURL carries a one-time secret of its own after /c2b/status/.
_STATUS_NONCE = re.compile(r"(/c2b/status/)[^/\s?\"']+")


def redact_callback_paths(text: str) -> str:
    """Hide the secrets of callback URLs: ``/callbacks/<token>/stk`` →
    ``/callbacks/***/stk``, ``.../c2b/status/<secret>`` → ``.../c2b/status/***``."""
    return _STATUS_NONCE.sub(r"\1***", _CALLBACK_PATH.sub("/callbacks/***/", text))


# Query parameters that carry a phone number, in any spelling (?phone=0712%20345%20678).
_PHONE_PARAMS = re.compile(
    r"(?i)((?:^|[?&;])(?:phone|msisdn|phone_?number|paid_phone)=)([^&;#\s]*)"
)


def _mask_phone_params(text: str) -> str:
    def mask(match: re.Match[str]) -> str:
        value = unquote_plus(match.group(2))
        return match.group(1) + (mask_phone(value) if value else "")

    return _PHONE_PARAMS.sub(mask, text)


def redact_access_line(text: str) -> str:
    """What an access-log line may show: no callback token, no full phone number.

    ``GET /v1/payments?phone=254708374149`` becomes ``...?phone=2547****149``, and any
    other phone-like run of digits is masked as in every pesa log line.
    """
    return redact(_mask_phone_params(redact_callback_paths(text)))


class CallbackPathFilter(logging.Filter):
    """A logging filter for access logs (``uvicorn.access``): no callback token and no full
    phone number in a log line.

    The path of every callback carries the secret token, a payments query may carry a
    phone number, and access logs are not pesa's redacted loggers, so ``pesa serve``
    installs this on them (see :func:`redact_access_line`).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                redact_access_line(arg) if isinstance(arg, str) else arg for arg in record.args
            )
        if isinstance(record.msg, str):
            record.msg = redact_access_line(record.msg)
        return True


def reply(status_code: int, result_code: int, desc: str, *, close: bool = False) -> JSONResponse:
    # Daraja reads {"ResultCode", "ResultDesc"} (REFERENCE §6.3); 0 means accepted.
    # ``close``: the rest of the body was not read, so the connection cannot be reused.
    headers = {"Connection": "close"} if close else None
    return JSONResponse(
        {"ResultCode": result_code, "ResultDesc": desc}, status_code=status_code, headers=headers
    )


async def read_limited(request: Request, limit: int) -> tuple[bytes, bool]:
    """``(body, complete)``: the body, or its first ``limit`` bytes and ``False`` when it is
    larger (nothing past the cap is read)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        if size + len(chunk) > limit:
            chunks.append(chunk[: limit - size])
            return b"".join(chunks), False
        size += len(chunk)
        chunks.append(chunk)
    return b"".join(chunks), True


def admit(
    request: Request, state: GatewayState, refused: Callable[[str], None]
) -> str | None | JSONResponse:
    """Check a callback's path token and source address, before anything is read.

    Returns:
        The sender's address (``None`` when unknown) when it may be read, or the answer to
        send instead: 404 for a wrong token (the route does not exist for a guesser), 403
        for a source outside an enforced allowlist. ``refused`` is called with the reason
        (``forbidden_token``, ``forbidden_source``), for the route's metrics.
    """
    token: str = request.path_params["token"]
    if not state.trust.check_token(token):
        refused("forbidden_token")
        log.warning("callback with a wrong path token refused (404)")
        return JSONResponse({"detail": "Not Found"}, status_code=404)
    peer = request.client.host if request.client else None
    verdict = state.trust.check_source(peer, request.headers.getlist("x-forwarded-for"))
    if not verdict.allowed:
        refused("forbidden_source")
        log.warning("callback from %s refused: %s", verdict.client_ip, verdict.reason)
        return reply(403, 1, "Forbidden")
    if state.trust.allowlist_mode == "log" and not verdict.listed:
        log.warning("callback from %s accepted but %s", verdict.client_ip, verdict.reason)
    return verdict.client_ip


async def stk_callback(request: Request) -> JSONResponse:
    """Store and apply one STK push result from Daraja (see the module docstring).

    A plain Starlette route (registered below with ``add_route``): this is the hot path
    under load, and it needs none of FastAPI's dependency solving or validation.
    """
    state = gateway_state(request)
    admitted = admit(
        request, state, lambda outcome: state.metrics.callbacks_received.inc(outcome=outcome)
    )
    if isinstance(admitted, JSONResponse):
        return admitted
    client_ip = admitted
    peer = request.client.host if request.client else None
    limit = state.settings.callback_max_body_bytes
    try:
        body, complete = await read_limited(request, limit)
    except ClientDisconnect:
        # The sender left (or missed PESA_READ_TIMEOUT) before the body was complete:
        # there is nothing to store and nobody to answer.
        state.metrics.callbacks_received.inc(outcome="disconnected")
        log.warning("callback from %s: the sender left before the body was complete", peer)
        return reply(400, 1, "Incomplete body")
    if not complete:
        state.metrics.callbacks_received.inc(outcome="too_large")
        log.warning("callback from %s refused: larger than %d bytes", peer, limit)
        try:
            # Evidence even so: the first `limit` bytes, kept raw like any refused callback.
            await state.ledger.store_refused_callback(
                body,
                source_ip=client_ip,
                detail=f"body larger than {limit} bytes: only its first {len(body)} are kept",
            )
        except Exception:
            log.exception("an oversized callback could not be stored")
        return reply(413, 1, "Payload too large", close=True)
    try:
        # The mismatch check runs inside the ledger's transaction: no race with the update.
        outcome = await state.ledger.ingest_stk_callback(
            body, source_ip=client_ip, on_mismatch=state.settings.callback_on_mismatch
        )
    except Exception:
        # Not the caller's fault (the database is down, ...): no 200, so nothing is
        # acknowledged that was not committed; the reconciler settles the payment anyway.
        state.metrics.callbacks_received.inc(outcome="error")
        log.exception("callback could not be stored")
        return reply(503, 1, "Temporarily unavailable")
    state.metrics.callbacks_received.inc(outcome=outcome.status)
    status_code, answer = callback_reply(outcome.status, outcome.detail)
    if status_code != 200:
        log.warning(
            "callback %s not applied (%s): %s", outcome.callback_id, outcome.status, outcome.detail
        )
    return JSONResponse(answer, status_code=status_code)


router.add_route("/callbacks/{token}/stk", stk_callback, methods=["POST"], include_in_schema=False)
