"""Waking the webhook dispatcher when a commit put work in the outbox.

Every transition writes its event and its delivery rows in its own transaction. The
dispatcher used to find them by polling; now the ledger tells it:

- **In-process:** after a commit that inserted delivery rows (or scheduled one again), the
  ledger's :class:`OutboxSignal` fires. A dispatcher in the same process (``pesa serve``
  with workers) wakes at once.
- **Across processes (PostgreSQL):** the same transaction issues ``NOTIFY pesa_outbox``
  just before its COMMIT, so the notification goes out only if the commit succeeds, and
  only after it (PostgreSQL delivers notifications at commit). A dispatcher in another
  process (``pesa worker``) LISTENs on a connection of its own and wakes.

Polling stays as the safety net: a lost notification (listener down, NOTIFY disabled,
SQLite shared by several processes) only costs the poll interval.

The hooks are SQLAlchemy events on the ledger's engine, so every write path (payments,
receipts, payouts, refunds) is covered without each one remembering to signal: a statement
that inserts into ``webhook_deliveries`` marks its connection, the connection's commit
sends the NOTIFY, and its return to the pool (after the commit) fires the in-process signal.
On an AUTOCOMMIT connection (PostgreSQL's one-statement callback path) the statement is its
own commit: both go out as soon as it returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Any, Final

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

__all__ = ["OUTBOX_CHANNEL", "OutboxSignal", "install_outbox_hooks", "mark_outbox_written"]

OUTBOX_CHANNEL: Final = "pesa_outbox"
"""The PostgreSQL notification channel of the outbox (``LISTEN pesa_outbox``)."""

# Keys in a pooled connection's ``info``: delivery rows written in the open transaction;
# a commit of such a transaction done, its in-process signal not yet sent.
_WRITTEN: Final = "pesa_outbox_written"
_COMMITTED: Final = "pesa_outbox_committed"
_MARKER: Final = "INSERT INTO webhook_deliveries"


class OutboxSignal:
    """An in-process "the outbox has new work" signal that many waiters can share.

    A waiter takes :meth:`waiter` *before* it looks at the outbox, then waits on it: a
    :meth:`notify` in between is not lost (the event it holds is already set). Every
    :meth:`notify` sets the current event and starts a new one.

    Example:
        >>> signal = OutboxSignal()
        >>> signal.notify()
        >>> signal.notified
        1
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._event: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.notified = 0
        """How many times the signal fired (for tests and metrics)."""

    def waiter(self) -> asyncio.Event:
        """The event the next :meth:`notify` sets (call inside the event loop)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._event is None or self._loop is not loop:
                self._event, self._loop = asyncio.Event(), loop
            return self._event

    def notify(self) -> None:
        """Wake every waiter (from any thread)."""
        with self._lock:
            self.notified += 1
            waiting, loop = self._event, self._loop
            self._event = self._loop = None
        if waiting is None or loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            waiting.set()
        else:
            # A loop closed meanwhile has nobody waiting any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(waiting.set)


def install_outbox_hooks(engine: AsyncEngine, signal: OutboxSignal, *, notify: bool) -> None:
    """Make commits that wrote delivery rows fire ``signal`` (and, on PostgreSQL with
    ``notify``, ``NOTIFY pesa_outbox`` inside the committing transaction)."""
    sync_engine = engine.sync_engine
    postgres = sync_engine.dialect.name == "postgresql"

    @event.listens_for(sync_engine, "before_cursor_execute")
    def _seen(
        conn: Any, _cursor: Any, statement: str, _params: Any, _ctx: Any, _many: bool
    ) -> None:
        # A substring test on SQL compiled once per statement shape: cheap, and it catches
        # the delivery inserts however they are written (alone, or as a CTE on PostgreSQL).
        if _MARKER in statement:
            conn.info[_WRITTEN] = True

    @event.listens_for(sync_engine, "after_cursor_execute")
    def _autocommitted(
        conn: Any, _cursor: Any, statement: str, _params: Any, _ctx: Any, _many: bool
    ) -> None:
        # An AUTOCOMMIT connection (PostgreSQL's one-statement callback path) commits each
        # statement as it returns and never sends a COMMIT SQLAlchemy sees: the statement
        # that wrote deliveries is committed now, so tell both audiences now.
        if _MARKER not in statement:
            return
        if conn.get_execution_options().get("isolation_level") != "AUTOCOMMIT":
            return
        conn.info.pop(_WRITTEN, None)
        if postgres and notify:
            _send_notify(conn)
        signal.notify()

    @event.listens_for(sync_engine, "commit")
    def _commit(conn: Any) -> None:
        info = conn.info
        if not info.pop(_WRITTEN, False):
            return
        if postgres and notify:
            # Still inside the transaction: PostgreSQL sends it when (and if) COMMIT succeeds.
            _send_notify(conn)
        info[_COMMITTED] = True

    @event.listens_for(sync_engine, "rollback")
    def _rollback(conn: Any) -> None:
        try:
            info = conn.info
        except Exception:  # an invalidated connection (the database went away): its
            return  # flags go with it, and a stale one costs at most one spurious wake-up
        info.pop(_WRITTEN, None)
        info.pop(_COMMITTED, None)

    @event.listens_for(sync_engine, "checkin")
    def _checkin(_dbapi_connection: Any, record: Any) -> None:
        # The connection is back in the pool: its transaction has committed, so what the
        # signal wakes can see the rows.
        if record is not None and record.info.pop(_COMMITTED, False):
            signal.notify()


def mark_outbox_written(conn: AsyncConnection) -> None:
    """Mark ``conn``'s transaction as one that made deliveries due (a redelivery)."""
    conn.info[_WRITTEN] = True


def _send_notify(conn: Any) -> None:
    """``NOTIFY pesa_outbox`` on ``conn``'s DBAPI connection (inside its transaction, if any)."""
    cursor = conn.connection.cursor()
    try:
        cursor.execute(f"NOTIFY {OUTBOX_CHANNEL}")
    finally:
        cursor.close()
