"""Callback delivery: POSTs to CallBackURL / ResultURL through one pooled client.

Each delivery is recorded with every attempt (status or error, duration); a failed delivery
is retried ``callback_retries`` times when configured (Daraja itself documents no retries).
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections import deque
from datetime import UTC, datetime
from itertools import count
from typing import Any

from pesa._logging import get_logger
from pesa.emulator._http1 import DeliveryError, Http1Pool
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
        self._pool: Http1Pool | None = None
        self._ids = count(1)
        self.records: deque[SentCallback] = deque(maxlen=max_records)

    def open(self) -> Http1Pool:
        """The connection pool, created on first use."""
        if self._pool is None:
            # Created lazily: the emulator may be mounted in another app whose lifespan
            # starts it, or used before start() in a quick test.
            self._pool = Http1Pool(verify=self._verify)
        return self._pool

    async def aclose(self) -> None:
        """Close the pooled connections."""
        if self._pool is not None:
            await self._pool.aclose()
            self._pool = None

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
        """POST ``payload`` as JSON to ``url``, retrying on failure; return the record."""
        record = SentCallback.model_construct(
            id=next(self._ids),
            kind=kind,
            url=url,
            payload=payload,
            attempts=[],
            delivered=False,
            response=None,
        )
        self.records.append(record)
        body = json.dumps(payload, separators=(",", ":")).encode()
        attempts = 1 + (self._retries if retries is None else retries)
        pool = self.open()
        for attempt in range(attempts):
            if attempt:
                await asyncio.sleep(self._retry_delay)
            started = time.perf_counter()
            at = datetime.now(UTC)
            try:
                status, data = await pool.post(
                    url, body, self._timeout if timeout is None else timeout
                )
            except DeliveryError as err:
                record.attempts.append(
                    DeliveryAttempt.model_construct(
                        at=at,
                        status_code=None,
                        error=str(err),
                        duration=time.perf_counter() - started,
                    )
                )
                _log.info("callback %s to %s failed: %s", kind, url, err)
                continue
            record.attempts.append(
                DeliveryAttempt.model_construct(
                    at=at, status_code=status, error=None, duration=time.perf_counter() - started
                )
            )
            try:
                record.response = json.loads(data)
            except ValueError:
                record.response = data.decode("utf-8", "replace")
            if 200 <= status < 300:
                record.delivered = True
                return record
            _log.info("callback %s to %s answered HTTP %s", kind, url, status)
        return record
