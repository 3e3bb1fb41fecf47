"""Dashboard operators, sessions and the audit log, in the ledger database."""

from __future__ import annotations

from datetime import timedelta

import pytest

from pesa import ValidationError
from pesa.ledger import (
    Ledger,
    OperatorExistsError,
    OperatorStore,
    hash_password,
    verify_password,
)

from .conftest import ManualClock

PASSWORD = "correct horse battery"


@pytest.fixture
def store(ledger: Ledger, clock: ManualClock) -> OperatorStore:
    return OperatorStore(ledger.engine, clock=clock)


def test_password_hashes_are_salted_scrypt_and_verify() -> None:
    first, second = hash_password(PASSWORD), hash_password(PASSWORD)
    assert first.startswith("scrypt$") and first != second
    assert PASSWORD not in first
    assert verify_password(PASSWORD, first) and verify_password(PASSWORD, second)
    assert not verify_password(PASSWORD + "!", first)
    assert not verify_password(PASSWORD, "scrypt$garbage")
    assert not verify_password(PASSWORD, "md5$abc")


@pytest.mark.parametrize("password", ["short", "x" * 9, "y" * 1025])
def test_a_password_outside_the_length_rule_is_refused(password: str) -> None:
    with pytest.raises(ValidationError) as caught:
        hash_password(password)
    assert caught.value.field == "password"


async def test_add_then_authenticate(store: OperatorStore) -> None:
    added = await store.add_operator("amina", "operator", PASSWORD)
    assert added.role == "operator" and added.can_act
    assert await store.authenticate("amina", PASSWORD) == added
    assert await store.authenticate("amina", "wrong password!") is None
    assert await store.authenticate("nobody", PASSWORD) is None
    assert await store.authenticate("not a valid name!", PASSWORD) is None
    viewer = await store.add_operator("otieno", "viewer", PASSWORD)
    assert not viewer.can_act
    assert [o.name for o in await store.list_operators()] == ["amina", "otieno"]


async def test_a_taken_name_is_refused_unless_replacing(store: OperatorStore) -> None:
    await store.add_operator("amina", "viewer", PASSWORD)
    with pytest.raises(OperatorExistsError):
        await store.add_operator("amina", "operator", "another password")
    replaced = await store.add_operator("amina", "operator", "another password", replace=True)
    assert replaced.role == "operator"
    assert await store.authenticate("amina", PASSWORD) is None
    assert await store.authenticate("amina", "another password") == replaced


@pytest.mark.parametrize(
    ("name", "role", "field"),
    [
        ("", "viewer", "name"),
        ("a b", "viewer", "name"),
        ("x" * 65, "viewer", "name"),
        ("amina", "admin", "role"),
    ],
)
async def test_bad_names_and_roles_name_the_field(
    store: OperatorStore, name: str, role: str, field: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        await store.add_operator(name, role, PASSWORD)  # type: ignore[arg-type]  # a bad role on purpose
    assert caught.value.field == field
    assert await store.list_operators() == []


async def test_sessions_open_expire_and_close(store: OperatorStore, clock: ManualClock) -> None:
    operator = await store.add_operator("amina", "operator", PASSWORD)
    token, session = await store.create_session(operator, ttl=timedelta(hours=1))
    assert session.id != token and len(token) >= 40
    found = await store.get_session(token)
    assert found is not None and found.operator == operator
    assert found.csrf_token == session.csrf_token
    assert await store.get_session(token + "x") is None
    assert await store.get_session("") is None
    clock.advance(minutes=59)
    assert await store.get_session(token) is not None
    clock.advance(minutes=2)
    assert await store.get_session(token) is None
    token2, _ = await store.create_session(operator, ttl=timedelta(hours=1))
    await store.end_session(token2)
    assert await store.get_session(token2) is None


async def test_replacing_or_removing_an_operator_ends_their_sessions(
    store: OperatorStore,
) -> None:
    operator = await store.add_operator("amina", "operator", PASSWORD)
    token, _ = await store.create_session(operator, ttl=timedelta(hours=1))
    await store.add_operator("amina", "viewer", PASSWORD, replace=True)
    assert await store.get_session(token) is None
    operator = await store.add_operator("otieno", "operator", PASSWORD)
    token, _ = await store.create_session(operator, ttl=timedelta(hours=1))
    assert await store.remove_operator("otieno")
    assert await store.get_session(token) is None
    assert not await store.remove_operator("otieno")


async def test_the_audit_log_records_who_what_when_and_why(
    store: OperatorStore, clock: ManualClock
) -> None:
    operator = await store.add_operator("amina", "operator", PASSWORD)
    entry = await store.record(
        "resolve_flag", operator=operator, target="pay_1", note="refunded", source_ip="10.0.0.1"
    )
    assert entry.at == clock.now() and entry.operator_name == "amina"
    await store.record("refresh", operator=operator, target="pay_2", outcome="error", detail="x")
    page = await store.audit_entries(limit=1)
    assert [e.action for e in page.items] == ["refresh"]
    assert page.next_cursor is not None
    rest = await store.audit_entries(before=int(page.next_cursor))
    assert [e.action for e in rest.items] == ["resolve_flag"]
    assert rest.items[0].note == "refunded" and rest.items[0].operator_id == operator.id
    only = await store.audit_entries(target="pay_1")
    assert [e.seq for e in only.items] == [entry.seq]
    with pytest.raises(ValidationError):
        await store.record("drop_tables", operator=operator)  # type: ignore[arg-type]  # on purpose


async def test_failed_sign_ins_throttle_a_name_and_an_address(
    store: OperatorStore, clock: ManualClock
) -> None:
    window = timedelta(minutes=15)

    async def blocked(name: str, ip: str) -> object:
        return await store.sign_in_blocked_until(name, ip, max_failures=3, window=window)

    for _ in range(2):
        await store.record("sign_in_failed", operator_name="amina", source_ip="10.0.0.1")
        clock.advance(minutes=1)
    assert await blocked("amina", "10.0.0.9") is None
    await store.record("sign_in_failed", operator_name="amina", source_ip="10.0.0.2")
    first_failure = clock.now() - timedelta(minutes=2)
    assert await blocked("amina", "10.0.0.9") == first_failure + window
    assert await blocked("otieno", "10.0.0.9") is None
    # One address trying many names is throttled too.
    for name in ("a1", "a2"):
        await store.record("sign_in_failed", operator_name=name, source_ip="10.0.0.2")
    assert await blocked("someone", "10.0.0.2") is not None
    clock.advance(minutes=16)
    assert await blocked("amina", "10.0.0.2") is None
