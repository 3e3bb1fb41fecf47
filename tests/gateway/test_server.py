"""The gateway's edge (pesa.gateway._server): what is guarded, and what access logs show."""

from __future__ import annotations

import logging

import pytest
from fastapi.routing import APIRoute

from pesa import Settings
from pesa.gateway import _api, _callbacks, create_app
from pesa.gateway._api import require_api_key
from pesa.gateway._callbacks import CallbackPathFilter, redact_access_line
from pesa.gateway._server import PROTECTED_PREFIXES, raise_open_file_limit, server_config


def _needs_key(route: APIRoute) -> bool:
    return any(dep.dependency is require_api_key for dep in route.dependencies)


def test_every_route_that_needs_the_key_is_guarded_before_its_body_is_read() -> None:
    """A new authenticated route outside PROTECTED_PREFIXES would parse bodies before 401."""
    routes = [*_api.router.routes, *_callbacks.router.routes]
    guarded = [r for r in routes if isinstance(r, APIRoute) and _needs_key(r)]
    assert guarded, "no authenticated route found: the check proves nothing"
    for route in guarded:
        assert route.path.startswith(PROTECTED_PREFIXES), route.path


@pytest.mark.parametrize(
    ("line", "shown"),
    [
        ("GET /v1/payments?phone=254708374149 HTTP/1.1", "phone=2547****149"),
        ("GET /v1/payments?limit=5&phone=0708374149", "phone=0708****149"),
        ("GET /v1/payments?phone=%2B254708374149", "phone=2547****149"),
        ("GET /v1/payments?phone=0708%20374%20149", "phone=0708****149"),
        ("GET /v1/payments?PHONE=0708-374-149", "PHONE=0708****149"),
        ("POST /callbacks/s3cr3t-token/stk", "/callbacks/***/stk"),
    ],
)
def test_access_lines_show_no_phone_and_no_callback_token(line: str, shown: str) -> None:
    """Issue 8 finding 10 (the process test is tests/gateway/test_edges.py)."""
    redacted = redact_access_line(line)
    assert shown in redacted
    assert "374149" not in redacted and "374%20149" not in redacted
    assert "s3cr3t" not in redacted


def test_the_access_log_filter_rewrites_uvicorn_records() -> None:
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", "/v1/payments?phone=254708374149", "1.1", 200),
        None,
    )
    assert CallbackPathFilter().filter(record)
    assert "2547****149" in record.getMessage()
    assert "254708374149" not in record.getMessage()


def test_server_config_carries_the_bounds() -> None:
    settings = Settings(
        _env_file=None, env="emulator", max_connections=77, read_timeout=4, keep_alive_timeout=3
    )
    config = server_config(create_app(settings), settings)
    assert config.limit_concurrency == 77
    assert config.timeout_keep_alive == 3
    assert config.h11_max_incomplete_event_size == 16 * 1024
    assert config.proxy_headers is False


def test_the_open_file_limit_is_raised_not_lowered() -> None:
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert (raise_open_file_limit(16) or soft) >= soft
