"""``pesa serve --no-workers`` and ``pesa worker`` as separate processes on one PostgreSQL:
the worker's dispatcher is woken by the API process's NOTIFY, and falls back on polling when
no notification comes.

The worker polls the outbox once an hour in the wake-up test, so a webhook that arrives
within the test's (generous) timeout was sent because the notification woke it.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import httpx
import psycopg
import pytest

from pesa.gateway._wake import LISTENER_APPLICATION_NAME

from .processes import WebhookReceiver, free_port, pesa_process, wait_healthy, webhook_receiver

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

API_KEY = "wake-test-key-0123456789"
PATIENCE = 60.0


def _env(database_url: str, port: int, receiver: WebhookReceiver, **extra: str) -> dict[str, str]:
    env = {
        "PESA_DATABASE_URL": database_url,
        "PESA_API_KEY": API_KEY,
        "PESA_GATEWAY_HOST": "127.0.0.1",
        "PESA_GATEWAY_PORT": str(port),
        "PESA_CALLBACK_TOKEN": "wake-callback-token-0123456789",
        "PESA_EMULATOR_STK_DELAY": "0.1",
        "PESA_WEBHOOK_URLS": receiver.url,
        "PESA_WEBHOOK_SECRET": "whsec_wake_test_0123456789",
        "PESA_LOG": "info",
    }
    env.update(extra)
    return env


def _listening(admin_url: str, name: str) -> bool:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s "
            "AND query LIKE 'LISTEN%%'",
            (name,),
        ).fetchone()
    return row is not None and row[0] > 0


@contextmanager
def serve_and_worker(
    pg_schema_url: str, serve_extra: dict[str, str], worker_extra: dict[str, str]
) -> Iterator[tuple[str, WebhookReceiver]]:
    """Start both processes; yield the API's URL and the webhook receiver once the worker's
    dispatcher is running (and, when it listens, LISTENing)."""
    name = f"{LISTENER_APPLICATION_NAME}-{secrets.token_hex(4)}"
    database_url = f"{pg_schema_url}&application_name={name}"
    admin_url = pg_schema_url.split("?")[0]
    port = free_port()
    with ExitStack() as stack:
        receiver = stack.enter_context(webhook_receiver())
        serve = stack.enter_context(
            pesa_process(
                ["serve", "--no-workers", "--host", "127.0.0.1", "--port", str(port)],
                _env(database_url, port, receiver, **serve_extra),
            )
        )
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, serve)
        worker = stack.enter_context(
            pesa_process(["worker"], _env(database_url, port, receiver, **worker_extra))
        )
        worker.wait_for_line(r"public:")
        if worker_extra.get("PESA_WEBHOOK_NOTIFY") != "false":
            deadline = time.monotonic() + PATIENCE
            while not _listening(admin_url, name):
                assert time.monotonic() < deadline, worker.output()
                time.sleep(0.05)
        try:
            yield url, receiver
        finally:
            worker.stop()
            serve.stop()


def _pay_and_wait(api: httpx.Client, receiver: WebhookReceiver, n: int) -> None:
    created = api.post(
        "/v1/payments",
        json={
            "phone": "254708374149",
            "amount": 10,
            "account_reference": f"WAKE{n}",
            "description": "Wake-up",
        },
        headers={"Idempotency-Key": f"wake-{n}-{secrets.token_hex(4)}"},
    )
    assert created.status_code == 201, created.text
    payment_id = created.json()["id"]
    deadline = time.monotonic() + PATIENCE
    while True:
        types = {e["type"] for e in receiver.events() if e["data"]["payment"]["id"] == payment_id}
        if {"payment.pending", "payment.succeeded"} <= types:
            return
        assert time.monotonic() < deadline, f"webhooks for {payment_id}: {sorted(types)}"
        time.sleep(0.02)


def test_a_worker_is_woken_by_the_api_process_commits(pg_schema_url: str) -> None:
    hourly = {"PESA_WEBHOOK_INTERVAL": "3600"}
    with (
        serve_and_worker(pg_schema_url, {}, hourly) as (url, receiver),
        httpx.Client(base_url=url, headers={"Authorization": f"Bearer {API_KEY}"}) as api,
    ):
        for n in range(3):
            _pay_and_wait(api, receiver, n)


def test_without_notifications_the_worker_delivers_by_polling(pg_schema_url: str) -> None:
    # The API process sends no NOTIFY (as if the notification were lost): the worker still
    # listens, hears nothing, and finds the deliveries at its next poll.
    with (
        serve_and_worker(
            pg_schema_url, {"PESA_WEBHOOK_NOTIFY": "false"}, {"PESA_WEBHOOK_INTERVAL": "1"}
        ) as (url, receiver),
        httpx.Client(base_url=url, headers={"Authorization": f"Bearer {API_KEY}"}) as api,
    ):
        for n in range(2):
            _pay_and_wait(api, receiver, n)
