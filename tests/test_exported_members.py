"""The public surface of pesa is curated: ``__all__`` is sorted and every name exists."""

import pesa


def test_all_is_sorted() -> None:
    assert pesa.__all__ == sorted(pesa.__all__)


def test_every_exported_name_exists() -> None:
    for name in pesa.__all__:
        assert hasattr(pesa, name), name


def test_every_public_name_is_exported() -> None:
    public = {
        name
        for name, value in vars(pesa).items()
        if not name.startswith("_") and not getattr(value, "__name__", "").startswith("pesa.")
    }
    assert public <= set(pesa.__all__), sorted(public - set(pesa.__all__))
