"""The two clients have one surface: same methods, signatures and docstrings; one options type."""

from __future__ import annotations

import dataclasses
import inspect
import typing

import pytest

from pesa.client import AsyncDaraja, Daraja, DarajaOptionFields, DarajaOptions


def _public(cls: type) -> dict[str, object]:
    return {
        name: member
        for name, member in inspect.getmembers(cls)
        if not name.startswith("_") and (callable(member) or isinstance(member, property))
    }


def test_both_clients_have_the_same_public_methods() -> None:
    # Only the lifecycle is named differently: close()/aclose().
    sync = set(_public(Daraja)) - {"close"}
    async_ = set(_public(AsyncDaraja)) - {"aclose"}
    assert sync == async_


@pytest.mark.parametrize("name", sorted(set(_public(Daraja)) - {"close"}))
def test_each_method_has_the_same_signature_and_docstring(name: str) -> None:
    sync = getattr(Daraja, name)
    async_ = getattr(AsyncDaraja, name)
    assert inspect.getdoc(sync), f"Daraja.{name} has no docstring"
    assert inspect.getdoc(sync) == inspect.getdoc(async_), name
    if isinstance(sync, property):
        return
    assert inspect.signature(sync) == inspect.signature(async_), name
    if inspect.iscoroutinefunction(async_):
        assert not inspect.iscoroutinefunction(sync)


def test_operations_are_async_on_async_daraja() -> None:
    for name in ("stk_push", "stk_query", "b2c_payment", "access_token", "reversal"):
        assert inspect.iscoroutinefunction(getattr(AsyncDaraja, name)), name


def test_options_fields_and_keyword_arguments_agree() -> None:
    """Adding an option is one place: the dataclass field and its keyword mirror."""
    fields = {f.name: f.type for f in dataclasses.fields(DarajaOptions)}
    keywords = typing.get_type_hints(DarajaOptionFields)
    assert set(fields) == set(keywords)
    hints = typing.get_type_hints(DarajaOptions)
    for name in fields:
        assert hints[name] == keywords[name], name


def test_every_option_is_documented() -> None:
    doc = inspect.getdoc(DarajaOptions) or ""
    for f in dataclasses.fields(DarajaOptions):
        assert f"    {f.name}:" in doc, f.name


def test_options_object_and_keywords_build_the_same_client() -> None:
    options = DarajaOptions(environment="sandbox", shortcode=174379, timeout=7)
    a = Daraja(options)
    b = Daraja(environment="sandbox", shortcode="174379", timeout=7)
    c = Daraja(options, timeout=9)  # a keyword replaces the option's field
    try:
        assert a.options == b.options
        assert a.shortcode == "174379" and a.base_url == "https://sandbox.safaricom.co.ke"
        assert c.timeout == 9 and c.options.shortcode == "174379"
        assert options.timeout == 7  # options are immutable
    finally:
        for client in (a, b, c):
            client.close()


def test_secrets_stay_out_of_the_options_repr() -> None:
    options = DarajaOptions(consumer_secret="s3cret", passkey="pk-x", initiator_password="pw-y")
    text = repr(options)
    assert "s3cret" not in text and "pk-x" not in text and "pw-y" not in text
