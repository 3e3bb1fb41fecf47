"""The extension point: an emulated Daraja product is a :class:`Product` registered once.

A product owns its Daraja paths (each a :class:`DarajaRoute`: the request pipeline in front
of it checks the verb, the token, the rate limit, faults and the JSON body, and records the
request), its own state, optionally control-API routes, and the ``operation`` names its
rules match and the callback kinds it sends. Everything shared (configuration, clock, ids,
rules, accounts and transactions, callback delivery, background tasks) comes from the
:class:`~pesa.emulator._core.Core` it is built with. See docs/emulator.md, "Adding a product".
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from starlette.requests import Request
from starlette.responses import Response

from pesa.emulator import _daraja as daraja
from pesa.emulator._core import Core

__all__ = ["ControlRoute", "DarajaRoute", "Handler", "Product"]

# A Daraja request handler: the decoded JSON object and the caller's app (consumer key) in,
# (HTTP status, JSON payload) out; it raises Refusal for Daraja's error envelope.
Handler = Callable[[dict[str, Any], str], tuple[int, dict[str, Any]]]
Endpoint = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True)
class DarajaRoute:
    """One Daraja path of a product and the error its gateway gives a bad token."""

    path: str
    handler: Handler
    token_error: daraja.ErrorSpec = daraja.TOKEN_INVALID_404


@dataclass(frozen=True)
class ControlRoute:
    """One control-API route (under ``/__emulator__``) a product adds."""

    path: str
    endpoint: Endpoint
    methods: Sequence[str] = field(default=("GET",))


class Product:
    """Base class of an emulated Daraja product.

    Subclasses set :attr:`operations` and :attr:`callback_kinds`, and override
    :meth:`routes` (and, when they have any, :meth:`control_routes` and :meth:`reset`).
    """

    #: Rule ``operation`` values this product honours (``Rule(operation="b2c")``).
    operations: ClassVar[tuple[str, ...]] = ()
    #: Callback kinds this product sends (``GET /__emulator__/callbacks?kind=...``).
    callback_kinds: ClassVar[tuple[str, ...]] = ()

    def __init__(self, core: Core) -> None:
        self.core = core

    def routes(self) -> list[DarajaRoute]:
        """The Daraja paths this product serves."""
        return []

    def control_routes(self) -> list[ControlRoute]:
        """Control-API routes this product adds under ``/__emulator__``."""
        return []

    def reset(self) -> None:
        """Forget this product's state (``POST /__emulator__/reset``)."""
