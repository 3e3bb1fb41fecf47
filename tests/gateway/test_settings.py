"""The gateway's settings: comma-separated lists from the environment, defaults."""

from __future__ import annotations

import pytest

from pesa import ConfigurationError, Settings
from pesa._constants import DEFAULT_CALLBACK_ALLOWED_IPS


def test_allowed_ips_default_to_the_reference_list() -> None:
    assert Settings(_env_file=None).callback_allowed_ips == DEFAULT_CALLBACK_ALLOWED_IPS


def test_comma_separated_lists_are_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PESA_CALLBACK_ALLOWED_IPS", "1.2.3.4, 10.0.0.0/8,")
    monkeypatch.setenv("PESA_TRUSTED_PROXIES", "127.0.0.1")
    settings = Settings(_env_file=None)
    assert settings.callback_allowed_ips == ("1.2.3.4", "10.0.0.0/8")
    assert settings.trusted_proxies == ("127.0.0.1",)


def test_allowlist_mode_is_a_closed_choice() -> None:
    with pytest.raises(ConfigurationError, match="(?i)callback_allowlist"):
        Settings(_env_file=None, callback_allowlist="sometimes")  # type: ignore[arg-type]  # the wrong value is the point
