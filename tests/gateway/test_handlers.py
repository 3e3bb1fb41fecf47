"""Python event handlers registered on the app receive each event at least once."""

from __future__ import annotations

import threading

import anyio
import httpx

from pesa.emulator import Emulator
from pesa.ledger import Event
from pesa.testing import run_gateway

from .conftest import API_KEY, gateway_settings
from .helpers import create, wait_for

received: list[tuple[str, str]] = []
lock = threading.Lock()


def on_paid(event: Event) -> None:
    """A sync handler (run in a worker thread by the dispatcher)."""
    with lock:
        received.append((event.type, event.payment_id))


async def test_handlers_registered_on_the_app_get_the_events(
    database_url: str, emulator: Emulator
) -> None:
    received.clear()
    settings = gateway_settings(database_url)
    with run_gateway(settings, emulator=emulator, handlers={"payment.succeeded": on_paid}) as gw:
        headers = {"Authorization": f"Bearer {API_KEY}"}
        async with httpx.AsyncClient(base_url=gw.url, headers=headers, timeout=10) as api:
            paid = await create(api, "254711333001")
            cancelled = await create(api, "254700001032")
            await wait_for(api, paid["id"], {"succeeded"})
            await wait_for(api, cancelled["id"], {"failed"})
            with anyio.fail_after(15):
                while ("payment.succeeded", paid["id"]) not in received:
                    await anyio.sleep(0.05)
    assert all(kind == "payment.succeeded" for kind, _ in received)
    assert cancelled["id"] not in {payment_id for _, payment_id in received}
