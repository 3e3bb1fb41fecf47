"""The ``pesa`` script itself, started as a real subprocess."""

import subprocess
import sys

import pesa


def test_version_prints_the_package_version() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "pesa", "version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == pesa.__version__
