"""The callback views: where Daraja delivers STK results, C2B confirmations and validation
requests, and B2C Results, with the gateway's trust rules.

The order of checks is the point (the same as ``pesa serve``'s route):

1. a wrong path token → 404, nothing stored (compared in constant time; to a guesser the
   route does not exist);
2. a source address off the allowlist (``PESA_CALLBACK_ALLOWLIST=enforce``) → 403, nothing
   stored; proxy headers count only from ``PESA_TRUSTED_PROXIES``;
3. a body over ``PESA_CALLBACK_MAX_BODY_BYTES`` → 413, its first bytes kept as evidence;
4. the raw body is stored and applied in one transaction (the ledger's rules decide what it
   may do: a success that cannot be cross-checked is kept as evidence and settled by
   query); Daraja's 200 is sent only after that commit, and a failure to store is a 503.

Every view is CSRF-exempt (Daraja has no token) and never runs inside ``ATOMIC_REQUESTS``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from pesa._exceptions import InvalidCallbackError
from pesa._logging import get_logger
from pesa.daraja import c2b_confirmation_reply
from pesa.daraja._trust import callback_reply
from pesa.django import conf
from pesa.django._services import decide_validation, payout_store, receipt_store, store
from pesa.ledger import parse_confirmation
from pesa.ledger._c2b_validation import OTHER_ERROR, C2BValidation, ValidationVerdict

__all__ = [
    "b2c_result",
    "b2c_timeout",
    "c2b_confirmation",
    "c2b_validation",
    "status_result",
    "status_timeout",
    "stk_callback",
]

log = get_logger("pesa.django.callbacks")


def _reply(status: int, result_code: int, desc: str) -> JsonResponse:
    return JsonResponse({"ResultCode": result_code, "ResultDesc": desc}, status=status)


def _read_limited(request: HttpRequest, limit: int) -> tuple[bytes, bool]:
    """The body, at most ``limit`` bytes of it, and whether that is all of it."""
    declared = request.META.get("CONTENT_LENGTH") or ""
    body = request.read(limit + 1)
    complete = len(body) <= limit and not (declared.isdigit() and int(declared) > limit)
    return body[:limit], complete


def _admit(
    request: HttpRequest,
    token: str,
    kind: str,
    store_refused: Callable[[bytes, str | None, str], Any],
) -> tuple[bytes, str | None] | HttpResponse:
    """The trust checks every callback route runs, in order (see the module docstring):
    the body and the caller's address, or the answer to send."""
    trust = conf.callback_trust()
    if not trust.check_token(token):
        log.warning("%s callback with a wrong path token refused (404)", kind)
        return JsonResponse({"detail": "Not Found"}, status=404)
    peer = request.META.get("REMOTE_ADDR")
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR")
    verdict = trust.check_source(peer, [forwarded] if forwarded else [])
    if not verdict.allowed:
        log.warning("%s callback from %s refused: %s", kind, verdict.client_ip, verdict.reason)
        return _reply(403, 1, "Forbidden")
    if trust.allowlist_mode == "log" and not verdict.listed:
        log.warning("%s callback from %s accepted but %s", kind, verdict.client_ip, verdict.reason)
    limit = conf.pesa_settings().callback_max_body_bytes
    body, complete = _read_limited(request, limit)
    if not complete:
        log.warning(
            "%s callback from %s refused: larger than %d bytes", kind, verdict.client_ip, limit
        )
        try:
            # Evidence even so: the first `limit` bytes, kept raw like any refused callback.
            store_refused(
                body,
                verdict.client_ip,
                f"body larger than {limit} bytes: only its first {len(body)} are kept",
            )
        except Exception:
            log.exception("an oversized %s callback could not be stored", kind)
        return _reply(413, 1, "Payload too large")
    return body, verdict.client_ip


@csrf_exempt
@require_POST
@transaction.non_atomic_requests
def stk_callback(request: HttpRequest, token: str) -> HttpResponse:
    """Store and apply one STK push result from Daraja (see the module docstring)."""
    admitted = _admit(
        request,
        token,
        "STK",
        lambda body, ip, detail: store().store_refused_callback(body, source_ip=ip, detail=detail),
    )
    if isinstance(admitted, HttpResponse):
        return admitted
    body, client_ip = admitted
    try:
        outcome = store().ingest_stk_callback(body, source_ip=client_ip)
    except Exception:
        # Not the caller's fault (the database is down...): no 200, so nothing is
        # acknowledged that was not committed; pesa_reconcile settles the payment anyway.
        log.exception("callback could not be stored")
        return _reply(503, 1, "Temporarily unavailable")
    status, reply = callback_reply(outcome.status, outcome.detail)
    if status != 200:
        log.warning("callback %s not applied (%s)", outcome.callback_id, outcome.status)
    return JsonResponse(reply, status=status)


# -- C2B: money in from the phone's menu ---------------------------------------------------


def _refused_raw(kind: str) -> Callable[[bytes, str | None, str], Any]:
    def keep(body: bytes, ip: str | None, detail: str) -> Any:
        return receipt_store().store_raw(kind, body, ip, "invalid", detail)

    return keep


@csrf_exempt
@require_POST
@transaction.non_atomic_requests
def c2b_confirmation(request: HttpRequest, token: str) -> HttpResponse:
    """Store and apply one C2B confirmation: a receipt, once per ``TransID``.

    Daraja's ``{"ResultCode": 0, "ResultDesc": "Success"}`` is sent only after the commit; a
    body that is not a confirmation is stored and answered 400; a failure to store is a 503
    (Daraja may retry).
    """
    admitted = _admit(request, token, "C2B confirmation", _refused_raw("c2b_confirm"))
    if isinstance(admitted, HttpResponse):
        return admitted
    body, client_ip = admitted
    try:
        outcome = receipt_store().ingest_confirmation(body, source_ip=client_ip)
    except Exception:
        log.exception("C2B confirmation could not be stored")
        return _reply(503, 1, "Temporarily unavailable")
    if outcome.status == "invalid":
        return _reply(400, 1, f"Rejected: {outcome.detail}")
    # Applied, a duplicate, or a disagreeing repeat (flagged): stored and committed.
    return JsonResponse(c2b_confirmation_reply())


@csrf_exempt
@require_POST
@transaction.non_atomic_requests
def c2b_validation(request: HttpRequest, token: str) -> HttpResponse:
    """Answer one C2B validation request (``PESA_C2B_VALIDATION``; off by default).

    ``off`` accepts every payment; ``handler`` asks the function named by the Django setting
    ``PESA_C2B_VALIDATOR``; ``http`` POSTs the request to ``PESA_C2B_VALIDATION_URL``. A rule
    that does not answer within ``PESA_C2B_VALIDATION_TIMEOUT``, fails or answers nonsense
    gets ``PESA_C2B_VALIDATION_FALLBACK``. Answers use Daraja's C2B codes (``C2B00011`` to
    ``C2B00016``). The request is kept raw with the answer given.
    """
    admitted = _admit(request, token, "C2B validation", _refused_raw("c2b_validate"))
    if isinstance(admitted, HttpResponse):
        return admitted
    body, client_ip = admitted
    try:
        parsed = parse_confirmation(body)
    except (InvalidCallbackError, ValueError, TypeError, KeyError) as err:
        verdict = ValidationVerdict.reject(OTHER_ERROR, f"not a C2B validation request: {err}")
        _keep_validation(body, client_ip, "invalid", verdict.reason)
        return JsonResponse(verdict.reply(), status=400)
    verdict, by = decide_validation(C2BValidation.of(parsed, None))
    answer = "accepted" if verdict.accept else "rejected"
    outcome = answer if by != "fallback" else f"fallback_{'accept' if verdict.accept else 'reject'}"
    log.info("C2B %s validated: %s %s (%s)", parsed.trans_id, answer, verdict.result_code, by)
    _keep_validation(body, client_ip, outcome, f"{verdict.result_code} {verdict.reason}".strip())
    return JsonResponse(verdict.reply())


def _keep_validation(body: bytes, client_ip: str | None, outcome: str, detail: str) -> None:
    try:
        receipt_store().store_raw("c2b_validate", body, client_ip, outcome, detail)
    except Exception:
        # No money moved yet and Daraja's clock is running: the answer goes regardless.
        log.exception("a C2B validation request could not be stored")


# -- B2C: Results of payouts and of their Transaction Status queries -------------------------


def _result_view(
    kind: str, ingest: Callable[[bytes, str | None], Any]
) -> Callable[[HttpRequest, str], HttpResponse]:
    @csrf_exempt
    @require_POST
    @transaction.non_atomic_requests
    def view(request: HttpRequest, token: str) -> HttpResponse:
        admitted = _admit(request, token, kind, _refused_raw(kind))
        if isinstance(admitted, HttpResponse):
            return admitted
        body, client_ip = admitted
        try:
            outcome = ingest(body, client_ip)
        except Exception:
            log.exception("a %s could not be stored", kind)
            return _reply(503, 1, "Temporarily unavailable")
        if outcome.status == "invalid":
            return _reply(400, 1, f"Rejected: {outcome.detail}")
        return _reply(200, 0, "Accepted")

    view.__name__ = view.__qualname__ = kind
    view.__doc__ = f"Store and apply one {kind} (see :mod:`pesa.django._payouts`)."
    return view


b2c_result = _result_view(
    "b2c_result", lambda body, ip: payout_store().ingest_result(body, source_ip=ip)
)
b2c_timeout = _result_view(
    "b2c_timeout", lambda body, ip: payout_store().ingest_timeout(body, source_ip=ip)
)
status_result = _result_view(
    "status_result", lambda body, ip: payout_store().ingest_status_result(body, source_ip=ip)
)
status_timeout = _result_view(
    "status_timeout", lambda body, ip: payout_store().ingest_status_timeout(body, source_ip=ip)
)
