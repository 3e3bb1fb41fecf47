"""Account Balance reads: each request, its Result, and the last balance known per account.

Daraja answers ``POST /mpesa/accountbalance/v1/query`` only by a Result callback
(REFERENCE §8.6), and does not retry a failed delivery. The ledger keeps each request
(``sent``), matches its Result by the ConversationID Daraja gave the request, and stores the
parsed accounts with the time M-Pesa read them (``BOCompletedTime``). Reach it through
``ledger.balances``.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Row, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from pesa._exceptions import InvalidCallbackError, ValidationError
from pesa._logging import get_logger, redact
from pesa.daraja import parse_daraja_timestamp, parse_result
from pesa.ledger._ids import new_id
from pesa.ledger._results import parse_timeout
from pesa.ledger._schema import balance_queries, callbacks
from pesa.ledger._transfer_types import BalanceRead, OutcomeStatus

if TYPE_CHECKING:
    from pesa.ledger._ledger import Ledger

__all__ = ["BalanceBook"]

log = get_logger("pesa.ledger")

_MAX_TEXT = 1000


def _row(row: Row[Any]) -> BalanceRead:
    m = row._mapping
    return BalanceRead(
        id=m["id"],
        account=m["account"],
        shortcode=m["shortcode"],
        asked_at=m["asked_at"],
        status=m["status"],
        result_code=m["result_code"],
        result_desc=m["result_desc"],
        accounts=list(m["accounts"] or []),
        read_at=m["read_at"],
        answered_at=m["answered_at"],
        conversation_id=m["conversation_id"],
    )


class BalanceBook:
    """Balance requests and results (``ledger.balances``)."""

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger

    async def request(self, account: str, shortcode: str) -> BalanceRead:
        """Record a balance request about to be sent (status ``sent``, no ids yet)."""
        now = self._ledger._now()
        values = {
            "id": new_id("bal", now_ms=int(now.timestamp() * 1000)),
            "account": account,
            "shortcode": shortcode,
            "asked_at": now,
            "status": "sent",
        }
        async with self._ledger.engine.begin() as conn:
            await conn.execute(insert(balance_queries).values(values))
        return BalanceRead(**values)  # type: ignore[arg-type]  # a fresh row: defaults apply

    async def mark_sent(
        self, read_id: str, conversation_id: str | None, originator_conversation_id: str | None
    ) -> None:
        """Daraja accepted the request: remember the ids its Result will name."""
        async with self._ledger.engine.begin() as conn:
            await conn.execute(
                update(balance_queries)
                .where(balance_queries.c.id == read_id)
                .values(
                    conversation_id=conversation_id,
                    originator_conversation_id=originator_conversation_id,
                )
            )

    async def mark_failed(self, read_id: str, code: str | None, reason: str) -> None:
        """The request was refused or got no answer: it will never be answered."""
        async with self._ledger.engine.begin() as conn:
            await conn.execute(
                update(balance_queries)
                .where(balance_queries.c.id == read_id, balance_queries.c.status == "sent")
                .values(
                    status="failed",
                    result_code=None if code is None else code[:32],
                    result_desc=redact(reason)[:_MAX_TEXT],
                    answered_at=self._ledger._now(),
                )
            )

    async def get(self, read_id: str) -> BalanceRead | None:
        """One balance request, with its result once it came."""
        rows = await self._ledger._select(
            select(balance_queries).where(balance_queries.c.id == read_id)
        )
        return _row(rows[0]) if rows else None

    async def latest(self, account: str, *, since: datetime | None = None) -> BalanceRead | None:
        """The newest successful read of ``account`` (asked at or after ``since``)."""
        query = select(balance_queries).where(
            balance_queries.c.account == account, balance_queries.c.status == "succeeded"
        )
        if since is not None:
            query = query.where(balance_queries.c.asked_at >= since)
        rows = await self._ledger._select(
            query.order_by(balance_queries.c.asked_at.desc(), balance_queries.c.id.desc()).limit(1)
        )
        return _row(rows[0]) if rows else None

    async def in_flight(self, account: str, *, since: datetime) -> BalanceRead | None:
        """A request for ``account`` sent at or after ``since`` still waiting for its Result."""
        rows = await self._ledger._select(
            select(balance_queries)
            .where(
                balance_queries.c.account == account,
                balance_queries.c.status == "sent",
                balance_queries.c.asked_at >= since,
            )
            .order_by(balance_queries.c.asked_at.desc())
            .limit(1)
        )
        return _row(rows[0]) if rows else None

    async def ingest_result(self, body: bytes, *, source_ip: str | None) -> OutcomeStatus:
        """Store an Account Balance Result and record the balances it reports."""
        return await self._ingest(body, source_ip, "balance_result")

    async def ingest_timeout(self, body: bytes, *, source_ip: str | None) -> OutcomeStatus:
        """Store a balance request's QueueTimeOutURL call: the request failed."""
        return await self._ingest(body, source_ip, "balance_timeout")

    async def _ingest(self, body: bytes, source_ip: str | None, kind: str) -> OutcomeStatus:
        ledger = self._ledger
        received = ledger._now()
        record: dict[str, Any] = {
            "id": new_id("cb", now_ms=int(received.timestamp() * 1000)),
            "kind": kind,
            "body": bytes(body),
            "source_ip": source_ip,
            "received_at": received,
        }

        async def work(conn: AsyncConnection) -> OutcomeStatus:
            read_id: str | None = None
            conversation: str | None = None
            try:
                status, detail, read_id, conversation = await self._apply(
                    conn, body, kind, received
                )
            except (InvalidCallbackError, ValueError, TypeError, KeyError) as err:
                status, detail = "invalid", f"invalid {kind}: {err}"
            await conn.execute(
                insert(callbacks).values(
                    **record,
                    outcome=status,
                    detail=detail[:_MAX_TEXT],
                    checkout_request_id=conversation,
                    subject_id=read_id,
                )
            )
            if status != "applied":
                log.warning("%s %s: %s (%s)", kind, record["id"], status, detail)
            return status

        result: OutcomeStatus = await ledger._write(work)
        return result

    async def _apply(
        self, conn: AsyncConnection, body: bytes, kind: str, received: datetime
    ) -> tuple[OutcomeStatus, str, str | None, str | None]:
        if kind == "balance_timeout":
            conversation, _ = parse_timeout(body)
            envelope = None
        else:
            envelope = parse_result(body)
            conversation = envelope.conversation_id
        if conversation is None:
            return "unknown_payment", "no ConversationID", None, None
        row = (
            await conn.execute(
                select(balance_queries).where(balance_queries.c.conversation_id == conversation)
            )
        ).first()
        if row is None:
            return "unknown_payment", "no balance request has this ConversationID", None, None
        read = _row(row)
        if read.status != "sent":
            return "duplicate", f"already {read.status}", read.id, conversation
        values: dict[str, Any] = {"answered_at": received}
        if envelope is None:
            values.update(status="failed", result_desc="the request timed out in the queue")
        elif not envelope.succeeded:
            values.update(
                status="failed",
                result_code=envelope.result_code[:32],
                result_desc=(envelope.result_desc or "")[:_MAX_TEXT],
            )
        else:
            accounts = [
                {
                    "name": a.name[:64],
                    "currency": a.currency[:8],
                    "available": str(a.available),
                    "uncleared": None if a.uncleared is None else str(a.uncleared),
                    "reserved": None if a.reserved is None else str(a.reserved),
                }
                for a in envelope.account_balances()[:32]
            ]
            read_at = received
            stamp = envelope.parameters.get("BOCompletedTime")
            if stamp not in (None, ""):
                try:
                    read_at = parse_daraja_timestamp(
                        int(stamp) if isinstance(stamp, float) else stamp, field="BOCompletedTime"
                    )
                except (ValidationError, ValueError, TypeError):
                    read_at = received
            values.update(
                status="succeeded",
                result_code="0",
                result_desc=(envelope.result_desc or "")[:_MAX_TEXT],
                accounts=accounts,
                read_at=read_at,
            )
        await conn.execute(
            update(balance_queries).where(balance_queries.c.id == read.id).values(values)
        )
        return "applied", f"balance {values['status']}", read.id, conversation
