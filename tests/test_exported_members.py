"""The public surface of pesa is curated: ``__all__`` is sorted and every name exists.

The top level and every subpackage alike: a name is public only when ``__all__`` says so.
"""

import __future__

import importlib
import inspect
from types import ModuleType

import pytest

import pesa

SUBPACKAGES = [
    "pesa.cli",
    "pesa.client",
    "pesa.config",
    "pesa.daraja",
    "pesa.emulator",
    "pesa.gateway",
    "pesa.gateway_client",
    "pesa.ledger",
    "pesa.testing",
]


def test_all_is_sorted() -> None:
    assert pesa.__all__ == sorted(pesa.__all__)


def test_every_exported_name_exists() -> None:
    for name in pesa.__all__:
        assert hasattr(pesa, name), name


def _public(module: ModuleType) -> set[str]:
    return {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and not inspect.ismodule(value)
        and not isinstance(value, __future__._Feature)
    }


def test_every_public_name_is_exported() -> None:
    public = {
        name
        for name, value in vars(pesa).items()
        if not name.startswith("_") and not getattr(value, "__name__", "").startswith("pesa.")
    }
    assert public <= set(pesa.__all__), sorted(public - set(pesa.__all__))


def _isort_key(name: str) -> tuple[int, str]:
    # CONSTANTS, then Classes, then functions (ruff's RUF022 order), each alphabetical.
    return (0 if name.isupper() else 1 if name[:1].isupper() else 2, name)


@pytest.mark.parametrize("name", SUBPACKAGES)
def test_subpackage_all_is_curated(name: str) -> None:
    module = importlib.import_module(name)
    exported = module.__all__
    assert exported == sorted(exported, key=_isort_key), "sort __all__: CONSTANTS, Classes, fns"
    assert len(exported) == len(set(exported)), "a name is listed twice"
    missing = [n for n in exported if not hasattr(module, n)]
    assert not missing, missing
    unlisted = _public(module) - set(exported)
    assert not unlisted, f"public but not in __all__ (make it private or export it): {unlisted}"


@pytest.mark.parametrize("name", SUBPACKAGES)
def test_subpackage_exports_are_documented(name: str) -> None:
    module = importlib.import_module(name)
    assert inspect.getdoc(module), f"{name} has no module docstring"
    for export in module.__all__:
        value = getattr(module, export)
        if inspect.isclass(value) or inspect.isfunction(value):
            assert inspect.getdoc(value), f"{name}.{export} has no docstring"
