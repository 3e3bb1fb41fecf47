"""Where Daraja tells the gateway about C2B payments (money in from the phone's menu).

Routes, all under the secret callback token, checked in the order of
:mod:`pesa.gateway._callbacks` (wrong token → 404 with nothing stored; a source outside an
enforced allowlist → 403; a body over ``PESA_CALLBACK_MAX_BODY_BYTES`` → 413):

- ``POST /callbacks/{token}/c2b/confirmation``: a completed payment. The raw body is stored
  and applied in one transaction (``ledger.receipts.ingest_confirmation``), once per
  ``TransID``; Daraja's ``{"ResultCode": 0, "ResultDesc": "Success"}`` is sent only after
  the commit. A body that is not a confirmation is stored and answered 400.
- ``POST /callbacks/{token}/c2b/validation``: Daraja asks whether to accept a payment
  (only when external validation is enabled for the shortcode). Off by default (every
  payment accepted); otherwise the merchant's rule decides (:class:`C2BValidatorRule`),
  within ``PESA_C2B_VALIDATION_TIMEOUT``, else ``PESA_C2B_VALIDATION_FALLBACK`` answers.
  Answers use Daraja's C2B result codes (``C2B00011``..``C2B00016``, REFERENCE §7.3).
- ``POST /callbacks/{token}/c2b/status/{secret}`` (and ``.../timeout``): the Result of one
  Transaction Status query; ``secret`` is that query's own, never shown in a registration.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Final, Literal, TypeAlias

import anyio
import httpx
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.background import BackgroundTask
from starlette.requests import ClientDisconnect

from pesa._exceptions import ConfigurationError, InvalidCallbackError, ValidationError
from pesa._logging import get_logger
from pesa._webhooks import sign_webhook
from pesa.daraja import c2b_confirmation_reply
from pesa.gateway._callbacks import admit, read_limited, reply
from pesa.gateway._receipts import receipt_account_resolver
from pesa.gateway._state import GatewayState, gateway_state
from pesa.ledger import parse_confirmation
from pesa.ledger._c2b_validation import (
    INVALID_ACCOUNT,
    INVALID_SHORTCODE,
    OTHER_ERROR,
    C2BValidation,
    ValidationVerdict,
    fallback_verdict,
    verdict_of,
)

if TYPE_CHECKING:
    from pesa.config import Settings
    from pesa.ledger import Ledger

__all__ = [
    "C2BValidation",
    "C2BValidator",
    "C2BValidatorRule",
    "ValidationVerdict",
    "router",
]

log = get_logger("pesa.gateway.c2b")

router = APIRouter()

# The raw-callback kinds of the three routes (callbacks.kind).
_KINDS: Final = {
    "confirmation": "c2b_confirm",
    "validation": "c2b_validate",
    "status": "c2b_status",
}
C2BValidator: TypeAlias = Callable[
    [C2BValidation],
    ValidationVerdict | bool | Awaitable[ValidationVerdict | bool],
]
"""A Python validation rule: sync or async, returns a verdict (or ``True``/``False``)."""


class C2BValidatorRule:
    """Decides C2B validation requests the way ``PESA_C2B_VALIDATION`` says.

    ``off`` accepts everything; ``handler`` asks the Python function given to
    ``create_app(c2b_validator=...)``; ``http`` POSTs the request (signed like webhooks when
    ``PESA_WEBHOOK_SECRET`` is set) to ``PESA_C2B_VALIDATION_URL`` and reads
    ``{"accept": bool, "result_code": "C2B000xx", "third_party_trans_id": "..."}``;
    ``expected`` accepts account numbers of open expected payments only (``C2B00012``
    otherwise). A rule that does not answer within ``PESA_C2B_VALIDATION_TIMEOUT``, fails,
    or answers nonsense gets ``PESA_C2B_VALIDATION_FALLBACK`` instead.
    """

    def __init__(
        self,
        settings: Settings,
        ledger: Ledger,
        *,
        handler: C2BValidator | None = None,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.mode = settings.c2b_validation
        self.url = settings.c2b_validation_url
        self.timeout = settings.c2b_validation_timeout
        self.fallback = settings.c2b_validation_fallback
        secret = settings.webhook_secret
        self._secrets = [secret.get_secret_value()] if secret is not None else []
        self.ledger = ledger
        self.handler = handler
        self._http = http
        if self.mode == "handler" and handler is None:
            raise ConfigurationError(
                "c2b_validation is 'handler' (PESA_C2B_VALIDATION) but no c2b_validator was "
                "given to create_app"
            )

    def _fallback(self, why: str) -> tuple[ValidationVerdict, Literal["fallback"]]:
        return fallback_verdict(self.fallback, why), "fallback"

    async def decide(
        self, request: C2BValidation
    ) -> tuple[ValidationVerdict, Literal["rule", "fallback", "off"]]:
        """The answer to one validation request, within the time budget."""
        if self.mode == "off":
            return ValidationVerdict.accepted(), "off"
        try:
            with anyio.fail_after(self.timeout):
                verdict = await self._ask(request)
        except TimeoutError:
            log.warning(
                "C2B validation of %s: the %s rule did not answer within %g s (fallback: %s)",
                request.trans_id,
                self.mode,
                self.timeout,
                self.fallback,
            )
            return self._fallback(f"the {self.mode} rule did not answer within {self.timeout:g} s")
        except Exception as err:
            log.warning(
                "C2B validation of %s: the %s rule failed (%s); fallback: %s",
                request.trans_id,
                self.mode,
                type(err).__name__,
                self.fallback,
            )
            return self._fallback(f"the {self.mode} rule failed: {type(err).__name__}")
        return verdict, "rule"

    async def _ask(self, request: C2BValidation) -> ValidationVerdict:
        if self.mode == "expected":
            return await self._expected(request)
        if self.mode == "handler":
            assert self.handler is not None
            return await self._handler(request)
        return await self._http_rule(request)

    async def _expected(self, request: C2BValidation) -> ValidationVerdict:
        if request.account is None:
            return ValidationVerdict.reject(INVALID_SHORTCODE, "not a configured account")
        if not request.account_reference:
            return ValidationVerdict.reject(INVALID_ACCOUNT, "no account number")
        found = await self.ledger.receipts.find_open_expected(
            request.account, request.account_reference
        )
        if found is None:
            return ValidationVerdict.reject(INVALID_ACCOUNT, "no open expected payment")
        return ValidationVerdict(True, "0", None, f"expected payment {found.id}")

    async def _handler(self, request: C2BValidation) -> ValidationVerdict:
        handler = self.handler
        assert handler is not None
        if inspect.iscoroutinefunction(handler):
            answer = await handler(request)
        else:
            # A sync rule runs in a thread; if it overruns, the answer goes without it.
            answer = await anyio.to_thread.run_sync(handler, request, abandon_on_cancel=True)
            if inspect.isawaitable(answer):
                answer = await answer
        return verdict_of(answer)

    async def _http_rule(self, request: C2BValidation) -> ValidationVerdict:
        assert self.url is not None and self._http is not None
        body = json.dumps(request.to_dict(), separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json"}
        if self._secrets:
            headers["Pesa-Signature"] = sign_webhook(body, self._secrets)
        response = await self._http.post(self.url, content=body, headers=headers)
        response.raise_for_status()
        data = response.json()
        if not isinstance(data, dict) or not isinstance(data.get("accept"), bool):
            raise ValidationError(
                "accept", "the merchant's answer must be a JSON object with a boolean"
            )
        if data["accept"]:
            third = data.get("third_party_trans_id")
            return ValidationVerdict.accepted(third if isinstance(third, str) else None)
        code = data.get("result_code", INVALID_ACCOUNT)
        return ValidationVerdict.reject(code if isinstance(code, str) else OTHER_ERROR)


# -- routes ---------------------------------------------------------------------------------


async def _body(
    request: Request, state: GatewayState, kind: str
) -> tuple[bytes, str | None] | JSONResponse:
    """Admit a C2B callback and read its body within the cap (or the answer to send)."""
    admitted = admit(
        request, state, lambda outcome: state.metrics.c2b_received.inc(kind=kind, outcome=outcome)
    )
    if isinstance(admitted, JSONResponse):
        return admitted
    limit = state.settings.callback_max_body_bytes
    try:
        body, complete = await read_limited(request, limit)
    except ClientDisconnect:
        state.metrics.c2b_received.inc(kind=kind, outcome="disconnected")
        return reply(400, 1, "Incomplete body")
    if not complete:
        state.metrics.c2b_received.inc(kind=kind, outcome="too_large")
        try:
            await state.ledger.receipts.record_refused(
                _KINDS[kind],
                body,
                source_ip=admitted,
                detail=f"body larger than {limit} bytes: only its first {len(body)} are kept",
            )
        except Exception:
            log.exception("an oversized C2B callback could not be stored")
        return reply(413, 1, "Payload too large", close=True)
    return body, admitted


async def confirmation(request: Request) -> JSONResponse:
    """Store and apply one C2B confirmation (see the module docstring)."""
    state = gateway_state(request)
    read = await _body(request, state, "confirmation")
    if isinstance(read, JSONResponse):
        return read
    body, client_ip = read
    resolve = receipt_account_resolver(state.accounts, state.settings.c2b_verify)
    try:
        outcome = await state.ledger.receipts.ingest_confirmation(
            body, source_ip=client_ip, account_for=resolve
        )
    except Exception:
        # Not committed: no acknowledgement (Daraja may retry; a lookup recovers it).
        state.metrics.c2b_received.inc(kind="confirmation", outcome="error")
        log.exception("C2B confirmation could not be stored")
        return reply(503, 1, "Temporarily unavailable")
    state.metrics.c2b_received.inc(kind="confirmation", outcome=outcome.status)
    if outcome.status == "invalid":
        return reply(400, 1, f"Rejected: {outcome.detail}")
    # Applied, a duplicate, or a disagreeing repeat (flagged): stored and committed.
    return JSONResponse(c2b_confirmation_reply())


async def validation(request: Request) -> JSONResponse:
    """Answer one C2B validation request within Daraja's time budget."""
    state = gateway_state(request)
    read = await _body(request, state, "validation")
    if isinstance(read, JSONResponse):
        return read
    body, client_ip = read
    try:
        parsed = parse_confirmation(body)
    except (InvalidCallbackError, ValueError, TypeError, KeyError) as err:
        state.metrics.c2b_received.inc(kind="validation", outcome="invalid")
        verdict = ValidationVerdict.reject(OTHER_ERROR, f"not a C2B validation request: {err}")
        return JSONResponse(
            verdict.reply(),
            status_code=400,
            background=_store_validation(state, body, client_ip, "invalid", verdict.reason),
        )
    account = state.accounts.for_shortcode(parsed.shortcode)
    question = C2BValidation.of(parsed, None if account is None else account.name)
    verdict, by = await state.validator.decide(question)
    answer = "accepted" if verdict.accept else "rejected"
    state.metrics.c2b_validations.inc(answer=answer, by=by)
    outcome = answer if by != "fallback" else f"fallback_{'accept' if verdict.accept else 'reject'}"
    detail = f"{verdict.result_code} {verdict.reason}".strip()
    if verdict.accept:
        log.info("C2B %s validated: accepted (%s)", parsed.trans_id, by)
    else:
        log.info("C2B %s validated: rejected %s (%s)", parsed.trans_id, verdict.result_code, by)
    # Stored after the answer is sent: no money moved yet, and Daraja's clock is running.
    return JSONResponse(
        verdict.reply(), background=_store_validation(state, body, client_ip, outcome, detail)
    )


def _store_validation(
    state: GatewayState, body: bytes, client_ip: str | None, outcome: str, detail: str
) -> BackgroundTask:
    async def store() -> None:
        try:
            await state.ledger.receipts.record_validation(
                body, source_ip=client_ip, outcome=outcome, detail=detail
            )
        except Exception:
            log.exception("a C2B validation request could not be stored")

    return BackgroundTask(store)


async def _status(request: Request, *, timeout: bool) -> JSONResponse:
    state = gateway_state(request)
    read = await _body(request, state, "status")
    if isinstance(read, JSONResponse):
        return read
    body, client_ip = read
    nonce: str = request.path_params["nonce"]
    try:
        outcome = await state.ledger.receipts.ingest_status_result(
            nonce, body, source_ip=client_ip, timeout=timeout
        )
    except Exception:
        state.metrics.c2b_received.inc(kind="status", outcome="error")
        log.exception("a Transaction Status result could not be stored")
        return reply(503, 1, "Temporarily unavailable")
    state.metrics.c2b_received.inc(kind="status", outcome=outcome.status)
    if outcome.status == "unknown_query":
        log.warning("a Transaction Status result for no query was refused (404)")
        return reply(404, 1, "Rejected: no such query")
    if outcome.status == "invalid":
        return reply(400, 1, f"Rejected: {outcome.detail}")
    return reply(200, 0, "Accepted")


async def status_result(request: Request) -> JSONResponse:
    """The Result of one Transaction Status query about a receipt."""
    return await _status(request, timeout=False)


async def status_timeout(request: Request) -> JSONResponse:
    """Daraja's queue timed out one Transaction Status query (it is asked again)."""
    return await _status(request, timeout=True)


for _path, _endpoint in (
    ("/callbacks/{token}/c2b/confirmation", confirmation),
    ("/callbacks/{token}/c2b/validation", validation),
    ("/callbacks/{token}/c2b/status/{nonce}", status_result),
    ("/callbacks/{token}/c2b/status/{nonce}/timeout", status_timeout),
):
    router.add_route(_path, _endpoint, methods=["POST"], include_in_schema=False)
