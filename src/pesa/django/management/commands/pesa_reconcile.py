"""``manage.py pesa_reconcile``: settle late and lost payments by STK query.

One round by default (for cron), or ``--loop`` until stopped (a long-running worker). Any
number of processes can run at once on PostgreSQL: payments are claimed with ``FOR UPDATE
SKIP LOCKED`` and a lease, so no payment is ever queried by two of them at once.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from pesa.django._services import reconciler


class Command(BaseCommand):
    help = (
        "Settle pending and unknown M-Pesa payments by STK query, and payouts by Transaction "
        "Status (one round, or --loop)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--loop",
            action="store_true",
            help="keep reconciling until SIGINT/SIGTERM (every PESA_RECONCILE_INTERVAL s)",
        )

    def handle(self, *args: Any, **options: Any) -> None:  # noqa: ARG002 - Django API
        worker = reconciler()
        if not options["loop"]:
            report = worker.run_once()
            self.stdout.write(
                f"claimed {report.claimed}, queried {report.queried}, "
                f"succeeded {report.succeeded}, failed {report.failed}, "
                f"pending {report.still_pending}, expired {report.expired}, "
                f"errors {report.errors}; payouts: claimed {report.payouts_claimed}, "
                f"queried {report.payouts_queried}, expired {report.payouts_expired}"
            )
            return
        stop = threading.Event()

        def _stop(signum: int, frame: Any) -> None:  # noqa: ARG001 - signal API
            stop.set()

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        self.stdout.write("pesa_reconcile: reconciling until stopped (Ctrl+C)")
        self.stdout.flush()
        worker.run(stop)
        self.stdout.write("pesa_reconcile: stopped")
