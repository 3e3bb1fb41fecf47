"""docs/django.md's walk-through, done as a new user would, in a temporary directory.

The steps are read from the page itself (blocks marked ``<!-- walkthrough: ... -->``): a
fresh ``django-admin startproject``, the two lines, a view calling ``request_payment``,
``migrate``; then ``pesa emulator`` and ``runserver`` as two real processes, a browser-like
client fills in the form, and the payment turns paid.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from conftest import wait_for

pytestmark = pytest.mark.slow

DOC = Path(__file__).parents[2] / "docs" / "django.md"
STEP = re.compile(r"<!-- walkthrough: (\w+)(?: (\S+))? -->\n```\w+\n(.*?)```", re.DOTALL)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _env(**extra: str) -> dict[str, str]:
    bin_dir = str(Path(sys.executable).parent)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PESA_", "DJANGO_"))}
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    env.pop("PYTHONPATH", None)
    return {**env, **extra}


def _up(url: str) -> bool:
    try:
        httpx.get(url, timeout=2)
    except httpx.TransportError:
        return False
    return True


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:  # servers under test: no graceful shutdown to wait for
        process.kill()
    for process in started:
        process.wait(timeout=15)


def test_the_walkthrough_takes_a_payment_in_a_fresh_project(
    tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    steps = STEP.findall(DOC.read_text())
    assert [kind for kind, _, _ in steps] == ["run", "append", "write", "write", "run"]
    for kind, target, body in steps:
        if kind == "run":
            for line in body.splitlines():
                command = line.removeprefix("$ ")
                done = subprocess.run(
                    command,
                    shell=True,
                    cwd=tmp_path,
                    env=_env(),
                    capture_output=True,
                    text=True,
                    timeout=120,
                    check=False,
                )
                assert done.returncode == 0, (command, done.stdout, done.stderr)
        elif kind == "append":
            with (tmp_path / target).open("a") as file:
                file.write("\n" + body)
        else:
            (tmp_path / target).write_text(body)

    emulator_port, site_port = _free_port(), _free_port()
    emulator_url = f"http://127.0.0.1:{emulator_port}"
    site_url = f"http://127.0.0.1:{site_port}"
    env = _env(PESA_BASE_URL=emulator_url, PESA_PUBLIC_URL=site_url)
    logs = tmp_path / "logs"
    logs.mkdir()
    commands = {
        "emulator": ["pesa", "emulator", "--port", str(emulator_port), "--stk-delay", "0.5"],
        "site": [sys.executable, "manage.py", "runserver", f"127.0.0.1:{site_port}", "--noreload"],
    }
    for name, command in commands.items():
        with (logs / f"{name}.log").open("wb") as out:
            processes.append(
                subprocess.Popen(command, cwd=tmp_path, env=env, stdout=out, stderr=out)
            )

    wait_for(lambda: _up(emulator_url) and _up(site_url), timeout=60, what="both servers")
    with httpx.Client(base_url=site_url, timeout=30) as browser:
        form = browser.get("/pay/")
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text)
        assert token, form.text
        data = {"csrfmiddlewaretoken": token.group(1), "order": "order-1", "phone": "0708374149"}
        sent = browser.post("/pay/", data=data)
        assert sent.status_code == 302, sent.text
        status_url = sent.headers["location"]
        assert browser.get(status_url).json()["status"] in ("pending", "succeeded")

        def paid() -> dict[str, str] | None:
            payment: dict[str, str] = browser.get(status_url).json()
            return payment if payment["status"] == "succeeded" else None

        try:
            payment = wait_for(paid, timeout=30, what="the payment to turn paid")
        except AssertionError:
            raise AssertionError("\n".join(p.read_text() for p in logs.iterdir())) from None
        assert payment["receipt"]
        # A double click: the same order key gives the same payment, no second push.
        again = browser.post("/pay/", data=data)
        assert again.headers["location"] == status_url


EXAMPLE = Path(__file__).parents[2] / "examples" / "django_shop"


def test_the_example_shop_runs_in_its_two_commands_and_an_order_turns_paid(
    tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    readme = (EXAMPLE / "README.md").read_text()
    block = re.search(
        r"## Run it against the emulator: two commands.*?```console\n(.*?)```", readme, re.DOTALL
    )
    assert block
    commands = [
        line.removeprefix("$ ").split("#")[0].strip() for line in block.group(1).splitlines()
    ]
    assert commands == [
        "pesa emulator",
        "python manage.py migrate && python manage.py runserver",
    ]
    shop = tmp_path / "django_shop"
    shutil.copytree(EXAMPLE, shop, ignore=shutil.ignore_patterns("*.sqlite3", "__pycache__"))
    emulator_port, site_port = _free_port(), _free_port()
    emulator_url = f"http://127.0.0.1:{emulator_port}"
    site_url = f"http://127.0.0.1:{site_port}"
    env = _env(PESA_BASE_URL=emulator_url, PESA_PUBLIC_URL=site_url)
    # The README's two commands, on free ports (and runserver without its reloader).
    migrate = subprocess.run(
        [sys.executable, "manage.py", "migrate"],
        cwd=shop,
        env=env,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert migrate.returncode == 0, migrate.stderr
    logs = tmp_path / "logs"
    logs.mkdir()
    for name, command in {
        "emulator": ["pesa", "emulator", "--port", str(emulator_port), "--stk-delay", "0.5"],
        "site": [sys.executable, "manage.py", "runserver", f"127.0.0.1:{site_port}", "--noreload"],
    }.items():
        with (logs / f"{name}.log").open("wb") as out:
            processes.append(subprocess.Popen(command, cwd=shop, env=env, stdout=out, stderr=out))
    wait_for(lambda: _up(emulator_url) and _up(site_url), timeout=60, what="both servers")
    with httpx.Client(base_url=site_url, timeout=30) as browser:
        assert "Kikoi beach wrap" in browser.get("/").text
        form = browser.get("/checkout/kikoi/")
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text)
        assert token, form.text
        bad = browser.post(
            "/checkout/kikoi/", data={"csrfmiddlewaretoken": token.group(1), "phone": "12"}
        )
        assert bad.status_code == 200 and "Safaricom" in bad.text  # the form names the rule
        sent = browser.post(
            "/checkout/kikoi/",
            data={"csrfmiddlewaretoken": token.group(1), "phone": "0708 374 149"},
        )
        assert sent.status_code == 302, sent.text
        order_url = sent.headers["location"]
        try:
            wait_for(
                lambda: "Paid." in browser.get(order_url).text,
                timeout=30,
                what="the order to turn paid",
            )
        except AssertionError:
            raise AssertionError("\n".join(p.read_text() for p in logs.iterdir())) from None
