"""Dashboard operators, their sessions and the audit log, stored in the ledger database.

Who may sign in to ``/dashboard`` lives next to the payments they look at, so that every
gateway process behind a load balancer sees the same operators, sessions and audit trail.
Passwords are stored as scrypt hashes (``hashlib``: no extra dependency), each with its own
salt and cost parameters, so the cost can be raised later without invalidating old hashes::

    store = OperatorStore(ledger.engine)
    await store.add_operator("amina", "operator", "correct horse battery")
    operator = await store.authenticate("amina", "correct horse battery")
    token, session = await store.create_session(operator, ttl=timedelta(hours=8))
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any, Final, Literal, TypeAlias, get_args

import anyio.to_thread
from sqlalchemy import Row, delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from pesa._clock import SYSTEM_CLOCK, Clock
from pesa._exceptions import ValidationError
from pesa._logging import get_logger
from pesa.ledger._engine import BEGIN_MODE
from pesa.ledger._errors import LedgerError
from pesa.ledger._ids import new_id
from pesa.ledger._schema import audit_log, operator_sessions, operators
from pesa.ledger._types import Page

__all__ = [
    "AUDIT_ACTIONS",
    "MIN_PASSWORD_LENGTH",
    "AuditAction",
    "AuditEntry",
    "Operator",
    "OperatorExistsError",
    "OperatorSession",
    "OperatorStore",
    "Role",
    "hash_password",
    "verify_password",
]

log = get_logger("pesa.ledger")

Role: TypeAlias = Literal["viewer", "operator"]
"""A viewer reads the dashboard; an operator also acts (ask Daraja, resolve, redeliver)."""

AuditAction: TypeAlias = Literal[
    "sign_in",
    "sign_in_failed",
    "sign_out",
    "refresh",
    "resolve_flag",
    "redeliver",
    "export_csv",
    "refund",
]
AUDIT_ACTIONS: Final[tuple[str, ...]] = get_args(AuditAction)

MIN_PASSWORD_LENGTH: Final = 10
_MAX_PASSWORD_LENGTH: Final = 1024
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
# Refresh a session's last_seen_at at most this often: a dashboard polls every few
# seconds, and a write per poll would queue behind callbacks on SQLite for nothing.
_TOUCH_EVERY: Final = timedelta(minutes=5)

# scrypt cost: N=2^15, r=8, p=1 uses 32 MiB and about 0.1 s per hash on one core, the
# interactive-login setting of the scrypt paper. Stored in each hash, so it can grow.
_SCRYPT_N: Final = 2**15
_SCRYPT_R: Final = 8
_SCRYPT_P: Final = 1
_SCRYPT_MAXMEM: Final = 256 * 1024 * 1024
_SALT_BYTES: Final = 16
_KEY_BYTES: Final = 32


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_password(password: str) -> str:
    """Hash a password with scrypt and a random salt.

    Returns:
        ``scrypt$<n>$<r>$<p>$<salt>$<key>`` (base64): everything needed to verify it.

    Raises:
        ValidationError: shorter than :data:`MIN_PASSWORD_LENGTH` or absurdly long.
    """
    _check_password(password)
    salt = secrets.token_bytes(_SALT_BYTES)
    key = hashlib.scrypt(
        password.encode("utf-8"),
        salt=salt,
        n=_SCRYPT_N,
        r=_SCRYPT_R,
        p=_SCRYPT_P,
        maxmem=_SCRYPT_MAXMEM,
        dklen=_KEY_BYTES,
    )
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${_b64(salt)}${_b64(key)}"


def verify_password(password: str, encoded: str) -> bool:
    """Whether ``password`` matches a hash from :func:`hash_password` (constant-time compare).

    A malformed hash never matches.
    """
    try:
        scheme, n, r, p, salt, key = encoded.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(key, validate=True)
        derived = hashlib.scrypt(
            password.encode("utf-8"),
            salt=base64.b64decode(salt, validate=True),
            n=int(n),
            r=int(r),
            p=int(p),
            maxmem=_SCRYPT_MAXMEM,
            dklen=len(expected),
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(derived, expected)


@lru_cache(maxsize=1)
def _dummy_hash() -> str:
    # Checked against when the name is unknown, so that a wrong name takes as long as a
    # wrong password: response times do not tell which operator names exist.
    return hash_password(secrets.token_urlsafe(16))


def _check_password(password: object) -> None:
    if not isinstance(password, str):
        raise ValidationError("password", "must be a string")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValidationError(
            "password", f"must be at least {MIN_PASSWORD_LENGTH} characters", len(password)
        )
    if len(password) > _MAX_PASSWORD_LENGTH:
        raise ValidationError(
            "password", f"must be at most {_MAX_PASSWORD_LENGTH} characters", len(password)
        )


def _check_name(name: object) -> str:
    if not isinstance(name, str) or _NAME.fullmatch(name) is None:
        raise ValidationError(
            "name",
            "must be 1 to 64 letters, digits or . _ @ - (starting with a letter or digit)",
        )
    return name


def _check_role(role: object) -> Role:
    if role == "viewer":
        return "viewer"
    if role == "operator":
        return "operator"
    raise ValidationError("role", 'must be "viewer" or "operator"', role)


def _storable(text: str, max_length: int) -> str:
    # What anyone typed is recorded as typed, but bounded and without what PostgreSQL's
    # text type refuses (NUL, unpaired surrogates): those are escaped.
    text = text[:max_length].replace("\x00", "\\x00")
    return text.encode("utf-8", "backslashreplace").decode("utf-8")[:max_length]


def _token_id(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class OperatorExistsError(LedgerError):
    """An operator with this name already exists."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"an operator named {name!r} already exists")


@dataclass(frozen=True, slots=True)
class Operator:
    """Someone who may sign in to the dashboard (never carries the password hash)."""

    id: str
    name: str
    role: Role
    disabled: bool
    created_at: datetime
    updated_at: datetime

    @property
    def can_act(self) -> bool:
        """Operators act (ask Daraja, resolve flags, redeliver); viewers only read."""
        return self.role == "operator" and not self.disabled


@dataclass(frozen=True, slots=True)
class OperatorSession:
    """A signed-in dashboard session.

    Attributes:
        id: the SHA-256 of the cookie's token (the token itself is never stored).
        csrf_token: the token every form of this session must carry.
    """

    id: str
    operator: Operator
    csrf_token: str
    created_at: datetime
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One line of the audit trail: who did what, when, to what, why, and how it went."""

    seq: int
    at: datetime
    operator_id: str | None
    operator_name: str
    action: str
    target: str | None
    note: str | None
    outcome: str
    detail: str | None
    source_ip: str | None


def _row_to_operator(row: Row[Any]) -> Operator:
    m = row._mapping
    return Operator(
        id=m["id"],
        name=m["name"],
        role=_check_role(m["role"]),
        disabled=bool(m["disabled"]),
        created_at=m["created_at"],
        updated_at=m["updated_at"],
    )


def _row_to_audit(row: Row[Any]) -> AuditEntry:
    m = row._mapping
    return AuditEntry(
        seq=int(m["seq"]),
        at=m["at"],
        operator_id=m["operator_id"],
        operator_name=m["operator_name"],
        action=m["action"],
        target=m["target"],
        note=m["note"],
        outcome=m["outcome"],
        detail=m["detail"],
        source_ip=m["source_ip"],
    )


class OperatorStore:
    """Operators, sessions and the audit log in the ledger's database.

    Args:
        engine: the ledger's engine (``ledger.engine``); the tables come with
            :meth:`pesa.ledger.Ledger.migrate`.
        clock: where the time is read (``ledger.clock``, so sessions and the ledger agree).
    """

    def __init__(self, engine: AsyncEngine, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self._engine = engine
        self._clock = clock
        self._postgres = engine.dialect.name == "postgresql"

    async def _rows(self, query: Any) -> list[Row[Any]]:
        async with self._engine.connect() as conn:
            if not self._postgres:
                conn = await conn.execution_options(**{BEGIN_MODE: "DEFERRED"})
            return list((await conn.execute(query)).all())

    # -- operators ------------------------------------------------------------------------

    async def add_operator(
        self, name: str, role: Role, password: str, *, replace: bool = False
    ) -> Operator:
        """Create an operator (or, with ``replace``, reset an existing one's role and password).

        Replacing signs the operator out everywhere (their sessions are deleted).

        Raises:
            ValidationError: a bad name, role or password (names the field and the rule).
            OperatorExistsError: the name is taken and ``replace`` is false.
        """
        name = _check_name(name)
        role = _check_role(role)
        _check_password(password)
        hashed = await anyio.to_thread.run_sync(hash_password, password)
        now = self._clock.now()
        async with self._engine.begin() as conn:
            existing = (
                await conn.execute(select(operators.c.id).where(operators.c.name == name))
            ).first()
            if existing is not None:
                if not replace:
                    raise OperatorExistsError(name)
                await conn.execute(
                    update(operators)
                    .where(operators.c.id == existing[0])
                    .values(role=role, password_hash=hashed, disabled=False, updated_at=now)
                )
                await conn.execute(
                    delete(operator_sessions).where(operator_sessions.c.operator_id == existing[0])
                )
                operator_id = existing[0]
            else:
                operator_id = new_id("op", now_ms=int(now.timestamp() * 1000))
                try:
                    await conn.execute(
                        insert(operators).values(
                            id=operator_id,
                            name=name,
                            role=role,
                            password_hash=hashed,
                            disabled=False,
                            created_at=now,
                            updated_at=now,
                        )
                    )
                except IntegrityError as err:
                    raise OperatorExistsError(name) from err
            row = (await conn.execute(select(operators).where(operators.c.id == operator_id))).one()
        log.info("dashboard operator %s saved (role %s)", name, role)
        return _row_to_operator(row)

    async def remove_operator(self, name: str) -> bool:
        """Delete an operator and their sessions; ``False`` if there was none."""
        async with self._engine.begin() as conn:
            result = await conn.execute(delete(operators).where(operators.c.name == name))
            # SQLite enforces ON DELETE CASCADE only with foreign_keys=ON, which our engine
            # sets; delete explicitly anyway so that no session outlives its operator.
            await conn.execute(
                delete(operator_sessions).where(
                    operator_sessions.c.operator_id.not_in(select(operators.c.id))
                )
            )
        return bool(result.rowcount)

    async def list_operators(self) -> list[Operator]:
        """Every operator, by name."""
        rows = await self._rows(select(operators).order_by(operators.c.name))
        return [_row_to_operator(row) for row in rows]

    async def get_operator(self, name: str) -> Operator | None:
        """The operator with this name, or ``None``."""
        rows = await self._rows(select(operators).where(operators.c.name == name))
        return _row_to_operator(rows[0]) if rows else None

    async def authenticate(self, name: str, password: str) -> Operator | None:
        """The operator if ``password`` is theirs and they are not disabled, else ``None``.

        Takes as long for an unknown name as for a wrong password. Hashing runs in a
        worker thread (it is deliberately slow).
        """
        rows: list[Row[Any]] = []
        if isinstance(name, str) and _NAME.fullmatch(name):
            rows = await self._rows(select(operators).where(operators.c.name == name))
        encoded = rows[0]._mapping["password_hash"] if rows else _dummy_hash()
        given = password if isinstance(password, str) else ""
        ok = await anyio.to_thread.run_sync(verify_password, given[:_MAX_PASSWORD_LENGTH], encoded)
        if not ok or not rows:
            return None
        operator = _row_to_operator(rows[0])
        return None if operator.disabled else operator

    # -- sessions -------------------------------------------------------------------------

    async def create_session(
        self, operator: Operator, *, ttl: timedelta, source_ip: str | None = None
    ) -> tuple[str, OperatorSession]:
        """Open a session; returns the cookie token (shown once, stored only as a hash)."""
        token = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)
        now = self._clock.now()
        session = OperatorSession(_token_id(token), operator, csrf, now, now + ttl)
        async with self._engine.begin() as conn:
            # Housekeeping on the rare path: expired sessions go when someone signs in.
            await conn.execute(
                delete(operator_sessions).where(operator_sessions.c.expires_at <= now)
            )
            await conn.execute(
                insert(operator_sessions).values(
                    id=session.id,
                    operator_id=operator.id,
                    csrf_token=csrf,
                    source_ip=source_ip,
                    created_at=now,
                    last_seen_at=now,
                    expires_at=session.expires_at,
                )
            )
        return token, session

    async def get_session(self, token: str) -> OperatorSession | None:
        """The live session of a cookie token, with its operator; ``None`` if unknown,
        expired, or its operator is disabled or gone."""
        if not isinstance(token, str) or not 20 <= len(token) <= 100:
            return None
        session_id = _token_id(token)
        query = (
            select(operator_sessions, *[c.label(f"op_{c.name}") for c in operators.c])
            .join(operators, operators.c.id == operator_sessions.c.operator_id)
            .where(operator_sessions.c.id == session_id)
        )
        rows = await self._rows(query)
        if not rows:
            return None
        m = rows[0]._mapping
        now = self._clock.now()
        if m["expires_at"] <= now or m["op_disabled"]:
            return None
        operator = Operator(
            id=m["op_id"],
            name=m["op_name"],
            role=_check_role(m["op_role"]),
            disabled=bool(m["op_disabled"]),
            created_at=m["op_created_at"],
            updated_at=m["op_updated_at"],
        )
        if now - m["last_seen_at"] >= _TOUCH_EVERY:
            async with self._engine.begin() as conn:
                await conn.execute(
                    update(operator_sessions)
                    .where(operator_sessions.c.id == session_id)
                    .values(last_seen_at=now)
                )
        return OperatorSession(
            session_id, operator, m["csrf_token"], m["created_at"], m["expires_at"]
        )

    async def end_session(self, token: str) -> None:
        """Sign out: delete the session of this cookie token (a no-op if there is none)."""
        async with self._engine.begin() as conn:
            await conn.execute(
                delete(operator_sessions).where(operator_sessions.c.id == _token_id(token))
            )

    # -- audit ----------------------------------------------------------------------------

    async def record(
        self,
        action: AuditAction,
        *,
        operator: Operator | None = None,
        operator_name: str | None = None,
        target: str | None = None,
        note: str | None = None,
        outcome: str = "ok",
        detail: str | None = None,
        source_ip: str | None = None,
    ) -> AuditEntry:
        """Append one line to the audit trail.

        Args:
            action: what was done (``refresh``, ``resolve_flag``, ``sign_in_failed``, ...).
            operator: who did it (``None`` for a failed sign-in).
            operator_name: the name to record when there is no operator (the name typed
                at a failed sign-in, truncated to 64 characters).
            target: what it was done to (a payment or delivery id).
            note: the operator's note.
            outcome: ``ok``, ``refused`` or ``error``.
            detail: what happened (an error message, the resulting status).
        """
        if action not in AUDIT_ACTIONS:
            raise ValidationError("action", f"must be one of {', '.join(AUDIT_ACTIONS)}", action)
        name = operator.name if operator is not None else (operator_name or "")
        values: dict[str, Any] = {
            "at": self._clock.now(),
            "operator_id": None if operator is None else operator.id,
            "operator_name": _storable(name, 64),
            "action": action,
            "target": None if target is None else _storable(target, 64),
            "note": None if note is None else _storable(note, 2000),
            "outcome": _storable(outcome, 16),
            "detail": None if detail is None else _storable(detail, 2000),
            "source_ip": None if source_ip is None else _storable(source_ip, 64),
        }
        async with self._engine.begin() as conn:
            result = await conn.execute(insert(audit_log).values(values))
            seq = result.inserted_primary_key[0] if result.inserted_primary_key else 0
        return AuditEntry(seq=int(seq), **values)

    async def audit_entries(
        self,
        *,
        target: str | None = None,
        operator_name: str | None = None,
        before: int | None = None,
        limit: int = 50,
    ) -> Page[AuditEntry]:
        """The audit trail, newest first; pass ``page.next_cursor`` as ``before``."""
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 500:
            raise ValidationError("limit", "must be an integer from 1 to 500", limit)
        query = select(audit_log)
        if target is not None:
            query = query.where(audit_log.c.target == target)
        if operator_name is not None:
            query = query.where(audit_log.c.operator_name == operator_name)
        if before is not None:
            query = query.where(audit_log.c.seq < before)
        rows = await self._rows(query.order_by(audit_log.c.seq.desc()).limit(limit + 1))
        items = [_row_to_audit(row) for row in rows[:limit]]
        more = len(rows) > limit
        return Page(items, str(items[-1].seq) if more else None, more)

    async def sign_in_blocked_until(
        self,
        name: str,
        source_ip: str | None,
        *,
        max_failures: int,
        window: timedelta,
    ) -> datetime | None:
        """When a throttled sign-in may be tried again, or ``None`` if it is not throttled.

        Sign-ins are throttled for a name, and for a source address, that had
        ``max_failures`` failed sign-ins within ``window``: until enough of them are older
        than ``window``.
        """
        now = self._clock.now()
        since = now - window
        blocked: datetime | None = None
        keys: list[Any] = [audit_log.c.operator_name == name[:64]]
        if source_ip is not None:
            keys.append(audit_log.c.source_ip == source_ip[:64])
        for key in keys:
            rows = await self._rows(
                select(audit_log.c.at)
                .where(
                    audit_log.c.action == "sign_in_failed",
                    audit_log.c.at > since,
                    key,
                )
                .order_by(audit_log.c.at.desc())
                .limit(max_failures)
            )
            if len(rows) >= max_failures:
                until: datetime = rows[max_failures - 1][0] + window
                blocked = until if blocked is None else max(blocked, until)
        return blocked
