"""Installed without ``[server]``: the client and CLI work, server commands say what to install.

The wheel is built from this checkout and installed into a clean virtual environment
without extras, offline: ``pip wheel --no-build-isolation --no-index`` and ``pip install
--no-index --no-deps``. The core dependencies come from this environment, exposed to the
clean one through a ``.pth`` file listing only the requirement closure of ``pesa``'s core
dependencies (never fastapi, uvicorn, sqlalchemy, ...).
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
SERVER_COMMANDS = [
    ["serve"],
    ["emulator"],
    ["worker"],
    ["db", "upgrade"],
    ["demo"],
    ["operator", "list"],
]


def _core_closure() -> set[str]:
    """Distributions pesa needs without extras, transitively."""
    seen: set[str] = set()
    todo = [Requirement(r) for r in metadata.requires("pesa") or []]
    while todo:
        req = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        name = canonicalize_name(req.name)
        if name in seen:
            continue
        seen.add(name)
        todo.extend(Requirement(r) for r in metadata.requires(req.name) or [])
    return seen


def _expose(dists: set[str], target: Path) -> None:
    """Symlink the top-level modules (and metadata) of ``dists`` into ``target``."""
    target.mkdir()
    for name in dists:
        dist = metadata.distribution(name)
        base = Path(str(dist.locate_file("")))
        tops = {Path(str(f)).parts[0] for f in dist.files or [] if not str(f).startswith("..")}
        for top in tops:
            source = base / top
            link = target / top
            if source.exists() and not link.exists():
                link.symlink_to(source)


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    work = tmp_path_factory.mktemp("install")
    offline = {**os.environ, "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
        + ["--no-index", "--quiet", "-w", str(work / "dist"), str(ROOT)],
        check=True,
        env=offline,
        timeout=300,
    )
    wheel = next((work / "dist").glob("pesa-*.whl"))
    env_dir = work / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    closure = _core_closure()
    assert not closure & {"fastapi", "uvicorn", "sqlalchemy", "alembic", "starlette"}
    _expose(closure, work / "deps")
    Path(site, "_pesa_core_deps.pth").write_text(f"{work / 'deps'}\n")
    subprocess.run(
        [str(python), "-m", "pip", "install", "--no-index", "--no-deps", "--quiet", str(wheel)],
        check=True,
        env=offline,
        timeout=300,
    )
    yield env_dir


def _run(env_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PESA_", "PYTHON"))}
    env["COLUMNS"] = "200"
    return subprocess.run(
        [str(env_dir / "bin" / args[0]), *args[1:]],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=env_dir,
    )


def test_the_clean_environment_has_no_server_dependencies(clean: Path) -> None:
    result = _run(clean, "python", "-c", "import fastapi")
    assert result.returncode != 0 and "No module named 'fastapi'" in result.stderr


@pytest.mark.parametrize("command", SERVER_COMMANDS, ids=" ".join)
def test_a_server_command_without_the_extra_is_one_line_and_exit_1(
    clean: Path, command: list[str]
) -> None:
    result = _run(clean, "pesa", *command)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert len(lines) == 1, result.stdout + result.stderr
    assert "pip install 'pesa[server]'" in lines[0]
    assert "Traceback" not in result.stderr


def test_the_client_and_the_client_side_testing_helpers_import_without_the_extra(
    clean: Path,
) -> None:
    code = (
        "import pesa\n"
        "from pesa import Daraja, AsyncDaraja, verify_webhook\n"
        "from pesa.testing import FrozenClock, signed_webhook, stk_callback_payload\n"
        "from pesa.gateway_client import GatewayClient\n"
        "body, headers = signed_webhook({'type': 'payment.succeeded'}, 'whsec')\n"
        "print(verify_webhook(body, headers['Pesa-Signature'], 'whsec')['type'])\n"
        "try:\n"
        "    from pesa.testing import run_emulator\n"
        "except ImportError as err:\n"
        "    print('server helper:', err)\n"
        "try:\n"
        "    AsyncDaraja(async_http='aiohttp')\n"
        "except pesa.ConfigurationError as err:\n"
        "    print('aiohttp pool:', err)\n"
    )
    result = _run(clean, "python", "-c", code)
    assert result.returncode == 0, result.stderr
    assert "payment.succeeded" in result.stdout
    assert "pip install 'pesa[server]'" in result.stdout
    assert "aiohttp pool: PESA_ASYNC_HTTP=aiohttp needs aiohttp" in result.stdout


def test_the_cli_client_commands_work_without_the_extra(clean: Path) -> None:
    assert _run(clean, "pesa", "--version").returncode == 0
    assert _run(clean, "pesa", "stk", "push", "--help").returncode == 0
