"""Callback delivery: POSTs to CallBackURL / ResultURL through one pooled async client.

Each delivery is recorded with every attempt (status or error, duration); a failed delivery
is retried ``callback_retries`` times when configured (Daraja itself documents no retries).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from datetime import UTC, datetime
from itertools import count
from typing import Any

import httpx

from pesa._logging import get_logger
from pesa.emulator._models import CallbackKind, DeliveryAttempt, SentCallback

__all__ = ["CallbackDelivery"]

_log = get_logger("pesa.emulator")


class CallbackDelivery:
    """Delivers callbacks and keeps the record of what was sent (bounded)."""

    def __init__(
        self,
        *,
        timeout: float,
        retries: int,
        retry_delay: float,
        max_records: int,
        verify: bool | ssl.SSLContext = True,
    ) -> None:
        self._timeout = timeout
        self._retries = retries
        self._retry_delay = retry_delay
        self._verify = verify
        self._client: httpx.AsyncClient | None = None
        self._ids = count(1)
        self.records: deque[SentCallback] = deque(maxlen=max_records)

    def open(self) -> httpx.AsyncClient:
        """The pooled client, created on first use."""
        if self._client is None:
            # Created lazily inside the running loop: the emulator may be mounted in another
            # app whose lifespan starts it, or used before start() in a quick test.
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self._timeout),
                limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
                verify=self._verify,
                trust_env=False,
            )
        return self._client

    async def aclose(self) -> None:
        """Close the pooled client."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def clear(self) -> None:
        """Forget every record."""
        self.records.clear()

    async def post(
        self,
        kind: CallbackKind,
        url: str,
        payload: Any,
        *,
        timeout: float | None = None,
        retries: int | None = None,
    ) -> SentCallback:
        """POST ``payload`` to ``url``, retrying on failure; return the record."""
        record = SentCallback(id=next(self._ids), kind=kind, url=url, payload=payload)
        self.records.append(record)
        attempts = 1 + (self._retries if retries is None else retries)
        client = self.open()
        for attempt in range(attempts):
            if attempt:
                await asyncio.sleep(self._retry_delay)
            started = time.perf_counter()
            at = datetime.now(UTC)
            try:
                response = await client.post(
                    url, json=payload, timeout=self._timeout if timeout is None else timeout
                )
            except httpx.HTTPError as err:
                error = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
                record.attempts.append(
                    DeliveryAttempt(
                        at=at, status_code=None, error=error, duration=time.perf_counter() - started
                    )
                )
                _log.info("callback %s to %s failed: %s", kind, url, error)
                continue
            record.attempts.append(
                DeliveryAttempt(
                    at=at,
                    status_code=response.status_code,
                    error=None,
                    duration=time.perf_counter() - started,
                )
            )
            try:
                record.response = response.json()
            except ValueError:
                record.response = response.text
            if response.is_success:
                record.delivered = True
                return record
            _log.info("callback %s to %s answered HTTP %s", kind, url, response.status_code)
        return record
