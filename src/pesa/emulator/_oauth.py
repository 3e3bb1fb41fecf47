"""OAuth: access tokens issued for Basic credentials, and the app each bearer token belongs to."""

from __future__ import annotations

import base64
import binascii
import hmac
from typing import Any

from pesa._clock import SYSTEM_CLOCK, Clock
from pesa.emulator import _daraja as daraja
from pesa.emulator._faults import RateLimiter
from pesa.emulator._models import EmulatorConfig
from pesa.emulator._validate import Refusal

__all__ = ["OAUTH_PATH", "OAuth"]

OAUTH_PATH = "/oauth/v1/generate"


class OAuth:
    """Daraja's token endpoint rules: Basic credentials in, a bearer token per app out.

    Tokens survive :meth:`Emulator.reset <pesa.emulator.Emulator.reset>`: a client holding
    one keeps working across test cases.
    """

    def __init__(
        self,
        config: EmulatorConfig,
        ids: daraja.IdFactory,
        rate: RateLimiter,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._clock = clock
        self._config = config
        self._ids = ids
        self._rate = rate
        self._tokens: dict[str, tuple[str, float]] = {}
        self._app_tokens: dict[str, set[str]] = {}

    def issue(self, header: str, grant_type: str | None) -> tuple[int, Any]:
        """Answer ``GET /oauth/v1/generate`` for this Authorization header and grant type."""
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic" or not encoded:
            raise Refusal(daraja.OAUTH_INVALID_AUTHENTICATION)
        try:
            key, sep, secret = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, ValueError):
            raise Refusal(daraja.OAUTH_INVALID_AUTHENTICATION) from None
        if not sep or not key:
            raise Refusal(daraja.OAUTH_INVALID_AUTHENTICATION)
        if grant_type != "client_credentials":
            raise Refusal(daraja.OAUTH_INVALID_GRANT)
        config = self._config
        if config.strict:
            good = hmac.compare_digest(
                key.encode(), (config.consumer_key or "").encode()
            ) & hmac.compare_digest(secret.encode(), (config.consumer_secret or "").encode())
            if not good:
                if config.oauth_bad_credentials == "empty":
                    return 400, None
                raise Refusal(daraja.OAUTH_INVALID_AUTHENTICATION)
        if not self._rate.take(key):
            raise Refusal(daraja.SPIKE_ARREST)
        token = self._ids.token()
        while token in self._tokens:
            token = self._ids.token()
        now = self._clock.monotonic()
        issued = self._app_tokens.setdefault(key, set())
        for old in list(issued):
            # Forget expired tokens (and, when configured, every older one) as we go.
            entry = self._tokens.get(old)
            if entry is None or entry[1] <= now or config.invalidate_old_tokens:
                issued.discard(old)
                self._tokens.pop(old, None)
        self._tokens[token] = (key, now + config.token_lifetime)
        issued.add(token)
        return 200, {"access_token": token, "expires_in": str(config.token_lifetime)}

    def issue_token(self, consumer_key: str) -> str:
        """Mint a token for ``consumer_key`` (strict mode: the configured credentials)."""
        credentials = base64.b64encode(f"{consumer_key}:x".encode()).decode()
        if self._config.strict:
            key, secret = self._config.consumer_key or "", self._config.consumer_secret or ""
            credentials = base64.b64encode(f"{key}:{secret}".encode()).decode()
        _, payload = self.issue(f"Basic {credentials}", "client_credentials")
        return str(payload["access_token"])

    def app_for(self, header: str) -> str | None:
        """The app (consumer key) whose valid bearer token is in this Authorization header."""
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return None
        entry = self._tokens.get(token.strip())
        if entry is None:
            return None
        app, expires = entry
        if self._clock.monotonic() >= expires:
            del self._tokens[token.strip()]
            return None
        return app
