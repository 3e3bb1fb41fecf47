"""Two ``manage.py pesa_reconcile --loop`` processes on one PostgreSQL database never query
one payment at once, and both do work.

Prompts are held open (the emulator's customer does not answer for a while) and every STK
query is slowed down, so both processes keep re-querying the same pending payments for
seconds: each query's [asked, answered] interval is logged with the process that asked
(``StkQuery``), and no two intervals of one payment may overlap.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from conftest import CALLBACK_TOKEN, HERE, fresh_phone, wait_for
from pesa.django import request_payment
from pesa.django.models import Payment, StkQuery

pytestmark = [
    pytest.mark.django_db(transaction=True, databases="__all__"),
    pytest.mark.postgres,
    pytest.mark.slow,
]

PAYMENTS = 12


@pytest.fixture(scope="module")
def pesa_db() -> Any:
    """PostgreSQL only: SQLite has no SKIP LOCKED (one writer at a time anyway)."""
    if not os.environ.get("PESA_TEST_DATABASE_URL"):
        pytest.skip("PESA_TEST_DATABASE_URL is not set: no PostgreSQL server to test against")
    from djproject import routers

    routers.current = "pg"
    yield "pg"
    routers.current = "default"


def _reconciler(emulator: Any, site: Any, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
        "DJANGO_SETTINGS_MODULE": "djproject.settings",
        "PESA_DJANGO_USE_TEST_DATABASES": "1",
        "PESA_DJANGO_ALIAS": "pg",
        # Configured through the environment alone (no PESA dict in these processes).
        "PESA_ENV": "emulator",
        "PESA_BASE_URL": emulator.base_url,
        "PESA_PUBLIC_URL": site.url,
        "PESA_CALLBACK_TOKEN": CALLBACK_TOKEN,
        "PESA_RECONCILE_INTERVAL": "0.05",
        "PESA_RECONCILE_MIN_AGE": "0",
        "PESA_RECONCILE_RECHECK_INTERVAL": "0.05",
        "PESA_RECONCILE_RECHECK_CAP": "0.05",
        "PESA_RECONCILE_QUERY_RATE": "200",
        "PESA_RECONCILE_BATCH_SIZE": "3",
        "PESA_RECONCILE_LEASE": "8",
        "PESA_TIMEOUT": "5",
        "PESA_MAX_RETRIES": "0",
    }
    with log.open("wb") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "django", "pesa_reconcile", "--loop"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def test_two_reconcile_loops_never_query_one_payment_at_once(
    site: Any, emulator: Any, tmp_path: Path
) -> None:
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    workers = [_reconciler(emulator, site, log) for log in logs]
    wait_for(
        lambda: all("until stopped" in log.read_text() for log in logs),
        timeout=60,
        what="both pesa_reconcile processes to start",
    )
    emulator.control.add_fault(kind="slow", delay=0.05, path="/mpesa/stkpushquery")
    ids = []
    for _ in range(PAYMENTS):
        phone = fresh_phone()
        emulator.control.add_rule(phone=phone, delay=4.0, callback="drop")
        ids.append(request_payment(phone=phone, amount=10, account_reference="LOOP").id)
    try:
        settled = wait_for(
            lambda: Payment.objects.filter(id__in=ids, status="succeeded").count() == PAYMENTS,
            timeout=60,
            what="both loops to settle every payment",
        )
        assert settled
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        for worker in workers:
            try:
                worker.wait(timeout=20)
            except subprocess.TimeoutExpired:  # pragma: no cover - diagnostic
                worker.kill()
        emulator.control.clear_faults()
    for worker, log in zip(workers, logs, strict=True):
        assert worker.returncode == 0, log.read_text()

    queries = list(StkQuery.objects.filter(payment_id__in=ids).order_by("asked_at"))
    by_payment: dict[str, list[StkQuery]] = defaultdict(list)
    for query in queries:
        by_payment[query.payment.id].append(query)
    workers_seen = {q.worker.rsplit(":", 1)[0] for q in queries}
    assert len(workers_seen) == 2, workers_seen  # both processes did work
    assert len(queries) > 2 * PAYMENTS  # each payment was asked about several times
    for payment_id, asked in by_payment.items():
        for earlier, later in zip(asked, asked[1:], strict=False):
            assert earlier.answered_at <= later.asked_at, (payment_id, earlier.worker, later.worker)
    assert all(q.outcome in ("pending", "succeeded") for q in queries)
