"""The callback view: where Daraja delivers STK push results, with the gateway's trust rules.

The order of checks is the point (the same as ``pesa serve``'s route):

1. a wrong path token → 404, nothing stored (compared in constant time; to a guesser the
   route does not exist);
2. a source address off the allowlist (``PESA_CALLBACK_ALLOWLIST=enforce``) → 403, nothing
   stored; proxy headers count only from ``PESA_TRUSTED_PROXIES``;
3. a body over ``PESA_CALLBACK_MAX_BODY_BYTES`` → 413, its first bytes kept as evidence;
4. the raw body is stored and applied in one transaction (the ledger's rules decide what it
   may do: a success that cannot be cross-checked is kept as evidence and settled by
   query); Daraja's 200 is sent only after that commit, and a failure to store is a 503.

The view is CSRF-exempt (Daraja has no token) and never runs inside ``ATOMIC_REQUESTS``.
"""

from __future__ import annotations

from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from pesa._logging import get_logger
from pesa.daraja._trust import callback_reply
from pesa.django import conf
from pesa.django._services import store

__all__ = ["stk_callback"]

log = get_logger("pesa.django.callbacks")


def _reply(status: int, result_code: int, desc: str) -> JsonResponse:
    return JsonResponse({"ResultCode": result_code, "ResultDesc": desc}, status=status)


def _read_limited(request: HttpRequest, limit: int) -> tuple[bytes, bool]:
    """The body, at most ``limit`` bytes of it, and whether that is all of it."""
    declared = request.META.get("CONTENT_LENGTH") or ""
    body = request.read(limit + 1)
    complete = len(body) <= limit and not (declared.isdigit() and int(declared) > limit)
    return body[:limit], complete


@csrf_exempt
@require_POST
@transaction.non_atomic_requests
def stk_callback(request: HttpRequest, token: str) -> HttpResponse:
    """Store and apply one STK push result from Daraja (see the module docstring)."""
    trust = conf.callback_trust()
    if not trust.check_token(token):
        log.warning("callback with a wrong path token refused (404)")
        return JsonResponse({"detail": "Not Found"}, status=404)
    peer = request.META.get("REMOTE_ADDR")
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR")
    verdict = trust.check_source(peer, [forwarded] if forwarded else [])
    if not verdict.allowed:
        log.warning("callback from %s refused: %s", verdict.client_ip, verdict.reason)
        return _reply(403, 1, "Forbidden")
    if trust.allowlist_mode == "log" and not verdict.listed:
        log.warning("callback from %s accepted but %s", verdict.client_ip, verdict.reason)
    limit = conf.pesa_settings().callback_max_body_bytes
    body, complete = _read_limited(request, limit)
    if not complete:
        log.warning("callback from %s refused: larger than %d bytes", verdict.client_ip, limit)
        try:
            # Evidence even so: the first `limit` bytes, kept raw like any refused callback.
            store().store_refused_callback(
                body,
                source_ip=verdict.client_ip,
                detail=f"body larger than {limit} bytes: only its first {len(body)} are kept",
            )
        except Exception:
            log.exception("an oversized callback could not be stored")
        return _reply(413, 1, "Payload too large")
    try:
        outcome = store().ingest_stk_callback(body, source_ip=verdict.client_ip)
    except Exception:
        # Not the caller's fault (the database is down...): no 200, so nothing is
        # acknowledged that was not committed; pesa_reconcile settles the payment anyway.
        log.exception("callback could not be stored")
        return _reply(503, 1, "Temporarily unavailable")
    status, reply = callback_reply(outcome.status, outcome.detail)
    if status != 200:
        log.warning("callback %s not applied (%s)", outcome.callback_id, outcome.status)
    return JsonResponse(reply, status=status)
