"""The control API under ``/__emulator__/``: rules, faults, rate limit, records, reset.

Every route mirrors a method of :class:`~pesa.emulator.Emulator`; see ``docs/emulator.md``.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import pydantic
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from pesa._exceptions import ValidationError
from pesa.emulator._models import Fault, Rule

if TYPE_CHECKING:
    from pesa.emulator._emulator import Emulator

__all__ = ["control_routes", "field_errors", "json_response", "problem", "read_json"]

Endpoint = Callable[[Request], Awaitable[Response]]


def json_response(data: Any, status: int = 200) -> Response:
    """A control-API JSON answer."""
    return Response(
        json.dumps(data, default=str, separators=(",", ":")).encode(),
        status_code=status,
        media_type="application/json",
    )


def problem(status: int, detail: Any) -> Response:
    """A control-API refusal: ``{"detail": ...}``."""
    return json_response({"detail": detail}, status)


async def read_json(request: Request) -> Any:
    """The request's JSON body ({} when empty); ValueError when it is not JSON."""
    raw = await request.body()
    if not raw.strip():
        return {}
    return json.loads(raw)


def control_routes(emulator: Emulator, prefix: str) -> list[BaseRoute]:
    """The control API routes of ``emulator`` under ``prefix``."""

    async def health(_: Request) -> Response:
        return json_response({"status": "ok", "pending_tasks": emulator.pending_tasks})

    async def certificate(_: Request) -> Response:
        return Response(emulator.certificate_pem, media_type="application/x-pem-file")

    async def config(_: Request) -> Response:
        return json_response(emulator.config.model_dump(mode="json"))

    async def rules(request: Request) -> Response:
        if request.method == "GET":
            return json_response([r.model_dump(mode="json") for r in emulator.rules])
        if request.method == "DELETE":
            emulator.clear_rules()
            return json_response({"removed": "all"})
        try:
            rule = Rule.model_validate(await read_json(request))
        except ValueError as err:
            return problem(422, field_errors(err))
        try:
            emulator.add_rule(rule)
        except ValueError as err:
            return problem(422, [{"field": "operation", "rule": str(err)}])
        return json_response(rule.model_dump(mode="json"), 201)

    async def rule(request: Request) -> Response:
        if not emulator.remove_rule(request.path_params["rule_id"]):
            return problem(404, "no such rule")
        return json_response({"removed": request.path_params["rule_id"]})

    async def faults(request: Request) -> Response:
        if request.method == "GET":
            return json_response([f.model_dump(mode="json") for f in emulator.faults])
        if request.method == "DELETE":
            emulator.clear_faults()
            return json_response({"removed": "all"})
        try:
            fault = Fault.model_validate(await read_json(request))
        except ValueError as err:
            return problem(422, field_errors(err))
        return json_response(emulator.add_fault(fault).model_dump(mode="json"), 201)

    async def fault(request: Request) -> Response:
        if not emulator.remove_fault(request.path_params["fault_id"]):
            return problem(404, "no such fault")
        return json_response({"removed": request.path_params["fault_id"]})

    async def rate_limit(request: Request) -> Response:
        if request.method == "PUT":
            try:
                body = await read_json(request)
                value = body.get("requests_per_second") if isinstance(body, dict) else None
                if value is not None and (
                    isinstance(value, bool) or not isinstance(value, int | float) or value <= 0
                ):
                    raise ValidationError(
                        "requests_per_second", "must be a positive number or null"
                    )
                emulator.set_rate_limit(value)
            except ValueError as err:
                return problem(422, str(err))
        elif request.method == "DELETE":
            emulator.set_rate_limit(None)
        return json_response({"requests_per_second": emulator.rate_limit})

    async def requests(request: Request) -> Response:
        path = request.query_params.get("path")
        return json_response([r.model_dump(mode="json") for r in emulator.requests(path)])

    async def callbacks(request: Request) -> Response:
        kind = request.query_params.get("kind")
        if kind is not None and kind not in emulator.callback_kinds:
            return problem(422, f"kind must be one of {', '.join(emulator.callback_kinds)}")
        records = emulator.callbacks(kind)
        return json_response([c.model_dump(mode="json") for c in records])

    async def accounts(request: Request) -> Response:
        shortcode = request.path_params["shortcode"]
        balances = emulator.balances(shortcode)
        return json_response({name: f"{value:.2f}" for name, value in balances.items()})

    async def reset(_: Request) -> Response:
        await emulator.reset()
        return json_response({"reset": True})

    async def idle(request: Request) -> Response:
        try:
            timeout = float(request.query_params.get("timeout", "10"))
        except ValueError:
            return problem(422, "timeout must be a number of seconds")
        done = await emulator.wait_idle(min(max(timeout, 0.0), 600.0))
        return json_response({"idle": done, "pending_tasks": emulator.pending_tasks})

    table: list[tuple[str, Endpoint, list[str]]] = [
        ("/health", health, ["GET"]),
        ("/certificate", certificate, ["GET"]),
        ("/config", config, ["GET"]),
        ("/rules", rules, ["GET", "POST", "DELETE"]),
        ("/rules/{rule_id}", rule, ["DELETE"]),
        ("/faults", faults, ["GET", "POST", "DELETE"]),
        ("/faults/{fault_id}", fault, ["DELETE"]),
        ("/rate-limit", rate_limit, ["GET", "PUT", "DELETE"]),
        ("/requests", requests, ["GET"]),
        ("/callbacks", callbacks, ["GET"]),
        ("/accounts/{shortcode}", accounts, ["GET"]),
        ("/reset", reset, ["POST"]),
        ("/idle", idle, ["POST"]),
    ]
    return [Route(prefix + path, endpoint, methods=methods) for path, endpoint, methods in table]


def field_errors(err: ValueError) -> Any:
    """``[{"field": ..., "rule": ...}]`` for a validation error (its text otherwise)."""
    if isinstance(err, pydantic.ValidationError):
        return [
            {"field": ".".join(str(p) for p in e["loc"]), "rule": e["msg"]} for e in err.errors()
        ]
    return str(err)
