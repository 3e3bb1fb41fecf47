"""The workers' settings: webhook URLs from the environment and cross-field rules."""

from __future__ import annotations

import pytest

from pesa import ConfigurationError, Settings


def test_webhook_urls_accept_a_comma_separated_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PESA_WEBHOOK_URLS", "http://127.0.0.1:9000/hook , https://shop.example/h")
    monkeypatch.setenv("PESA_WEBHOOK_SECRET", "whsec_x")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]  # pydantic-settings init option
    assert settings.webhook_urls == ["http://127.0.0.1:9000/hook", "https://shop.example/h"]


def test_webhook_urls_accept_a_json_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PESA_WEBHOOK_URLS", '["https://shop.example/h"]')
    monkeypatch.setenv("PESA_WEBHOOK_SECRET", "whsec_x")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]  # pydantic-settings init option
    assert settings.webhook_urls == ["https://shop.example/h"]


def test_empty_variable_means_no_webhooks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PESA_WEBHOOK_URLS", "")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]  # pydantic-settings init option
    assert settings.webhook_urls == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"webhook_urls": ["ftp://x/y"], "webhook_secret": "s"}, "absolute http"),
        ({"webhook_urls": ["/relative"], "webhook_secret": "s"}, "absolute http"),
        ({"webhook_urls": ["https://shop.example/h"]}, "webhook_secret is required"),
        ({"webhook_lease": 5, "webhook_timeout": 10}, "webhook_lease must be longer"),
        ({"reconcile_lease": 20, "timeout": 30}, "reconcile_lease must be longer"),
        ({"webhook_backoff_base": 100, "webhook_backoff_cap": 10}, "webhook_backoff_cap"),
        ({"reconcile_backoff_base": 100, "reconcile_backoff_cap": 10}, "reconcile_backoff_cap"),
        ({"reconcile_query_rate": 0}, "reconcile_query_rate"),
        ({"reconcile_recheck_cap": 1}, "reconcile_recheck_cap"),
        ({"webhook_max_attempts": 0}, "webhook_max_attempts"),
    ],
)
def test_bad_worker_settings_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigurationError, match=f"(?i){message}"):
        Settings(_env_file=None, **kwargs)  # type: ignore[arg-type]  # values are deliberately mixed
