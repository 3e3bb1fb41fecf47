"""Clients for a running emulator's control API (``/__emulator__/``), sync and async.

Only the send loop exists twice: each operation is described once as a request plus a
parser, and :class:`EmulatorControl` / :class:`AsyncEmulatorControl` execute it.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from types import TracebackType
from typing import Any, Generic, TypeVar

import anyio
import httpx

from pesa._exceptions import PesaError, ValidationError
from pesa.emulator._models import (
    C2BPay,
    C2BPayment,
    CallbackKind,
    Fault,
    FaultKind,
    ReceivedRequest,
    Rule,
    SentCallback,
)

__all__ = ["AsyncEmulatorControl", "EmulatorControl", "EmulatorControlError"]

T = TypeVar("T")
_PREFIX = "/__emulator__"


class EmulatorControlError(PesaError):
    """The emulator's control API refused a request (the message carries its detail)."""

    def __init__(self, status_code: int, detail: Any) -> None:
        self.status_code = status_code
        self.detail = detail
        super().__init__(f"emulator control API answered HTTP {status_code}: {detail}")


@dataclass(frozen=True)
class _Call(Generic[T]):
    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    json: Any = None
    params: dict[str, str] | None = None


def _checked(response: httpx.Response) -> httpx.Response:
    if response.is_success:
        return response
    try:
        detail = response.json().get("detail")
    except ValueError:
        detail = response.text
    raise EmulatorControlError(response.status_code, detail)


def _ignore(response: httpx.Response) -> None:
    _checked(response)


def _rule(response: httpx.Response) -> Rule:
    return Rule.model_validate(_checked(response).json())


def _fault(response: httpx.Response) -> Fault:
    return Fault.model_validate(_checked(response).json())


def _rules(response: httpx.Response) -> list[Rule]:
    return [Rule.model_validate(item) for item in _checked(response).json()]


def _faults(response: httpx.Response) -> list[Fault]:
    return [Fault.model_validate(item) for item in _checked(response).json()]


def _requests(response: httpx.Response) -> list[ReceivedRequest]:
    return [ReceivedRequest.model_validate(item) for item in _checked(response).json()]


def _callbacks(response: httpx.Response) -> list[SentCallback]:
    return [SentCallback.model_validate(item) for item in _checked(response).json()]


def _balances(response: httpx.Response) -> dict[str, Decimal]:
    return {k: Decimal(val) for k, val in _checked(response).json().items()}


def _payment(response: httpx.Response) -> C2BPayment:
    return C2BPayment.model_validate(_checked(response).json())


def _payments(response: httpx.Response) -> list[C2BPayment]:
    return [C2BPayment.model_validate(item) for item in _checked(response).json()]


def _idle(response: httpx.Response) -> bool:
    return bool(_checked(response).json()["idle"])


def _rate(response: httpx.Response) -> float | None:
    value = _checked(response).json()["requests_per_second"]
    return None if value is None else float(value)


def _pem(response: httpx.Response) -> bytes:
    return _checked(response).content


def _auth_headers(api_key: str | None) -> dict[str, str]:
    # The emulator mounted in `pesa serve` guards its control API with PESA_API_KEY.
    return {} if api_key is None else {"Authorization": f"Bearer {api_key}"}


class _BaseControl:
    """The control operations, each described once as a :class:`_Call`."""

    @staticmethod
    def _add_rule_call(rule: Rule | None, fields: dict[str, Any]) -> _Call[Rule]:
        body = (rule or Rule(**fields)).model_dump(mode="json")
        return _Call("POST", "/rules", _rule, json=body)

    @staticmethod
    def _add_fault_call(
        fault: Fault | None, kind: FaultKind | None, fields: dict[str, Any]
    ) -> _Call[Fault]:
        if fault is None:
            if kind is None:
                raise ValidationError("kind", "give a Fault or a fault kind")
            fault = Fault(kind=kind, **fields)
        return _Call("POST", "/faults", _fault, json=fault.model_dump(mode="json"))

    @staticmethod
    def _callbacks_call(kind: CallbackKind | None) -> _Call[list[SentCallback]]:
        return _Call("GET", "/callbacks", _callbacks, params={"kind": kind} if kind else None)

    @staticmethod
    def _requests_call(path: str | None) -> _Call[list[ReceivedRequest]]:
        return _Call("GET", "/requests", _requests, params={"path": path} if path else None)

    @staticmethod
    def _pay_call(pay: C2BPay | None, wait: float, fields: dict[str, Any]) -> _Call[C2BPayment]:
        body = (pay or C2BPay(**fields)).model_dump(mode="json", exclude_none=True)
        params = {"wait": str(wait)} if wait > 0 else None
        return _Call("POST", "/c2b/payments", _payment, json=body, params=params)

    @staticmethod
    def _payments_call(shortcode: str | None) -> _Call[list[C2BPayment]]:
        params = {"shortcode": shortcode} if shortcode else None
        return _Call("GET", "/c2b/payments", _payments, params=params)


class EmulatorControl(_BaseControl):
    """Drive a running emulator over HTTP: the same operations as :class:`Emulator`'s.

    Pass ``api_key`` (``PESA_API_KEY``) to drive the emulator mounted in a ``pesa serve``
    that has one: its control API then answers only with the key.

    Example:
        >>> with EmulatorControl("http://127.0.0.1:8100") as control:  # doctest: +SKIP
        ...     control.add_rule(phone="254711000001", result_code=1032)
        ...     control.add_fault("spike_arrest", rate=0.5)
    """

    def __init__(
        self,
        base_url: str,
        *,
        verify: bool | ssl.SSLContext = True,
        timeout: float = 30.0,
        api_key: str | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._client = httpx.Client(
            base_url=self.base_url + _PREFIX,
            verify=verify,
            timeout=timeout,
            trust_env=False,
            headers=_auth_headers(api_key),
        )

    def _run(self, call: _Call[T]) -> T:
        response = self._client.request(call.method, call.path, json=call.json, params=call.params)
        return call.parse(response)

    def close(self) -> None:
        """Close the HTTP client."""
        self._client.close()

    def __enter__(self) -> EmulatorControl:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def add_rule(self, rule: Rule | None = None, **fields: Any) -> Rule:
        """``POST /__emulator__/rules``: add a rule (a :class:`Rule` or its fields)."""
        return self._run(self._add_rule_call(rule, fields))

    def rules(self) -> list[Rule]:
        """``GET /__emulator__/rules``: the active rules, newest first."""
        return self._run(_Call("GET", "/rules", _rules))

    def remove_rule(self, rule_id: str) -> None:
        """``DELETE /__emulator__/rules/{id}``."""
        self._run(_Call("DELETE", f"/rules/{rule_id}", _ignore))

    def clear_rules(self) -> None:
        """``DELETE /__emulator__/rules``."""
        self._run(_Call("DELETE", "/rules", _ignore))

    def add_fault(
        self, kind: FaultKind | None = None, *, fault: Fault | None = None, **fields: Any
    ) -> Fault:
        """``POST /__emulator__/faults``: inject a fault (``kind`` plus fields, or a Fault)."""
        return self._run(self._add_fault_call(fault, kind, fields))

    def faults(self) -> list[Fault]:
        """``GET /__emulator__/faults``."""
        return self._run(_Call("GET", "/faults", _faults))

    def remove_fault(self, fault_id: str) -> None:
        """``DELETE /__emulator__/faults/{id}``."""
        self._run(_Call("DELETE", f"/faults/{fault_id}", _ignore))

    def clear_faults(self) -> None:
        """``DELETE /__emulator__/faults``."""
        self._run(_Call("DELETE", "/faults", _ignore))

    def set_rate_limit(self, requests_per_second: float | None) -> float | None:
        """``PUT /__emulator__/rate-limit``: requests per second per app (None: unlimited)."""
        body = {"requests_per_second": requests_per_second}
        return self._run(_Call("PUT", "/rate-limit", _rate, json=body))

    def requests(self, path: str | None = None) -> list[ReceivedRequest]:
        """``GET /__emulator__/requests``: Daraja requests received, oldest first."""
        return self._run(self._requests_call(path))

    def callbacks(self, kind: CallbackKind | None = None) -> list[SentCallback]:
        """``GET /__emulator__/callbacks``: callbacks sent, with delivery attempts."""
        return self._run(self._callbacks_call(kind))

    def balances(self, shortcode: str) -> dict[str, Decimal]:
        """``GET /__emulator__/accounts/{shortcode}``: account balances, KES."""
        return self._run(_Call("GET", f"/accounts/{shortcode}", _balances))

    def certificate(self) -> bytes:
        """``GET /__emulator__/certificate``: the PEM to encrypt SecurityCredentials with."""
        return self._run(_Call("GET", "/certificate", _pem))

    def customer_pays(
        self, pay: C2BPay | None = None, *, wait: float = 0.0, **fields: Any
    ) -> C2BPayment:
        """``POST /__emulator__/c2b/payments``: a customer pays a PayBill or Till.

        Give a :class:`C2BPay` or its fields (``shortcode``, ``amount``,
        ``account_reference``, ``phone``, ``till``, names); ``wait`` seconds for M-Pesa to
        decide (validation and confirmation included) before answering.

        Example:
            >>> payment = control.customer_pays(  # doctest: +SKIP
            ...     shortcode="600997", account_reference="INV-1", amount=150, wait=10
            ... )
        """
        return self._run(self._pay_call(pay, wait, fields))

    def c2b_payments(self, shortcode: str | None = None) -> list[C2BPayment]:
        """``GET /__emulator__/c2b/payments``: customers' C2B payments, oldest first."""
        return self._run(self._payments_call(shortcode))

    def c2b_payment(self, trans_id: str) -> C2BPayment:
        """``GET /__emulator__/c2b/payments/{trans_id}``."""
        return self._run(_Call("GET", f"/c2b/payments/{trans_id}", _payment))

    def reset(self) -> None:
        """``POST /__emulator__/reset``: forget payments, rules, faults and records."""
        self._run(_Call("POST", "/reset", _ignore))

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """``POST /__emulator__/idle``: wait until no customer or callback is pending."""
        return self._run(_Call("POST", "/idle", _idle, params={"timeout": str(timeout)}))

    def wait_for_callbacks(
        self, count: int, *, kind: CallbackKind | None = None, timeout: float = 10.0
    ) -> list[SentCallback]:
        """Poll until at least ``count`` callbacks (of ``kind``) were sent; raise on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.callbacks(kind)
            if len(found) >= count:
                return found
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{len(found)} of {count} callbacks after {timeout} s")
            time.sleep(0.02)


class AsyncEmulatorControl(_BaseControl):
    """The async twin of :class:`EmulatorControl`.

    Example:
        >>> async with AsyncEmulatorControl("http://127.0.0.1:8100") as control:  # doctest: +SKIP
        ...     await control.reset()
    """

    def __init__(
        self,
        base_url: str,
        *,
        verify: bool | ssl.SSLContext = True,
        timeout: float = 30.0,
        api_key: str | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._client = httpx.AsyncClient(
            base_url=self.base_url + _PREFIX,
            verify=verify,
            timeout=timeout,
            trust_env=False,
            headers=_auth_headers(api_key),
        )

    async def _run(self, call: _Call[T]) -> T:
        response = await self._client.request(
            call.method, call.path, json=call.json, params=call.params
        )
        return call.parse(response)

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._client.aclose()

    async def __aenter__(self) -> AsyncEmulatorControl:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def add_rule(self, rule: Rule | None = None, **fields: Any) -> Rule:
        """``POST /__emulator__/rules``: add a rule (a :class:`Rule` or its fields)."""
        return await self._run(self._add_rule_call(rule, fields))

    async def rules(self) -> list[Rule]:
        """``GET /__emulator__/rules``."""
        return await self._run(_Call("GET", "/rules", _rules))

    async def remove_rule(self, rule_id: str) -> None:
        """``DELETE /__emulator__/rules/{id}``."""
        await self._run(_Call("DELETE", f"/rules/{rule_id}", _ignore))

    async def clear_rules(self) -> None:
        """``DELETE /__emulator__/rules``."""
        await self._run(_Call("DELETE", "/rules", _ignore))

    async def add_fault(
        self, kind: FaultKind | None = None, *, fault: Fault | None = None, **fields: Any
    ) -> Fault:
        """``POST /__emulator__/faults``."""
        return await self._run(self._add_fault_call(fault, kind, fields))

    async def faults(self) -> list[Fault]:
        """``GET /__emulator__/faults``."""
        return await self._run(_Call("GET", "/faults", _faults))

    async def remove_fault(self, fault_id: str) -> None:
        """``DELETE /__emulator__/faults/{id}``."""
        await self._run(_Call("DELETE", f"/faults/{fault_id}", _ignore))

    async def clear_faults(self) -> None:
        """``DELETE /__emulator__/faults``."""
        await self._run(_Call("DELETE", "/faults", _ignore))

    async def set_rate_limit(self, requests_per_second: float | None) -> float | None:
        """``PUT /__emulator__/rate-limit``."""
        body = {"requests_per_second": requests_per_second}
        return await self._run(_Call("PUT", "/rate-limit", _rate, json=body))

    async def requests(self, path: str | None = None) -> list[ReceivedRequest]:
        """``GET /__emulator__/requests``."""
        return await self._run(self._requests_call(path))

    async def callbacks(self, kind: CallbackKind | None = None) -> list[SentCallback]:
        """``GET /__emulator__/callbacks``."""
        return await self._run(self._callbacks_call(kind))

    async def balances(self, shortcode: str) -> dict[str, Decimal]:
        """``GET /__emulator__/accounts/{shortcode}``."""
        return await self._run(_Call("GET", f"/accounts/{shortcode}", _balances))

    async def certificate(self) -> bytes:
        """``GET /__emulator__/certificate``."""
        return await self._run(_Call("GET", "/certificate", _pem))

    async def customer_pays(
        self, pay: C2BPay | None = None, *, wait: float = 0.0, **fields: Any
    ) -> C2BPayment:
        """``POST /__emulator__/c2b/payments``: a customer pays a PayBill or Till."""
        return await self._run(self._pay_call(pay, wait, fields))

    async def c2b_payments(self, shortcode: str | None = None) -> list[C2BPayment]:
        """``GET /__emulator__/c2b/payments``."""
        return await self._run(self._payments_call(shortcode))

    async def c2b_payment(self, trans_id: str) -> C2BPayment:
        """``GET /__emulator__/c2b/payments/{trans_id}``."""
        return await self._run(_Call("GET", f"/c2b/payments/{trans_id}", _payment))

    async def reset(self) -> None:
        """``POST /__emulator__/reset``."""
        await self._run(_Call("POST", "/reset", _ignore))

    async def wait_idle(self, timeout: float = 10.0) -> bool:
        """``POST /__emulator__/idle``."""
        return await self._run(_Call("POST", "/idle", _idle, params={"timeout": str(timeout)}))

    async def wait_for_callbacks(
        self, count: int, *, kind: CallbackKind | None = None, timeout: float = 10.0
    ) -> list[SentCallback]:
        """Poll until at least ``count`` callbacks (of ``kind``) were sent; raise on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            found = await self.callbacks(kind)
            if len(found) >= count:
                return found
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{len(found)} of {count} callbacks after {timeout} s")
            await anyio.sleep(0.02)
