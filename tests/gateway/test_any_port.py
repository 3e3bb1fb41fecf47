"""``create_app`` served by uvicorn on a port other than PESA_GATEWAY_PORT still takes payments."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import uvicorn

from pesa._net import listen_socket
from pesa.gateway import create_app

from .conftest import API_KEY, gateway_settings


def test_a_gateway_served_on_another_port_adopts_it(tmp_path: Path) -> None:
    settings = gateway_settings(f"sqlite:///{tmp_path / 'p.db'}", gateway_port=8000)
    app = create_app(settings)
    sock = listen_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    assert port != 8000
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        headers = {"Authorization": f"Bearer {API_KEY}"}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers) as api:
            created = api.post(
                "/v1/payments",
                json={
                    "phone": "254708374149",
                    "amount": 10,
                    "account_reference": "PORT1",
                    "description": "Any port",
                },
            )
            assert created.status_code == 201, created.text
            payment = created.json()
            assert payment["status"] == "pending", payment  # not connection_error
            while payment["status"] == "pending" and time.monotonic() < deadline:
                time.sleep(0.05)
                payment = api.get(f"/v1/payments/{payment['id']}").json()
        assert payment["status"] == "succeeded", payment  # the callback found its way
        assert app.state.urls.public == f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        sock.close()
