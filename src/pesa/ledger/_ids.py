"""Public ids: a prefix plus a time-ordered, random suffix (``pay_01HZX...``).

The suffix is a ULID (48-bit millisecond time + 80 random bits, Crockford base32), so ids
sort by creation time, which is what cursor pagination relies on, and cannot be guessed.
"""

from __future__ import annotations

import secrets
import time

__all__ = ["new_id"]

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def _encode(value: int, length: int) -> str:
    chars = []
    for _ in range(length):
        value, rem = divmod(value, 32)
        chars.append(_ALPHABET[rem])
    return "".join(reversed(chars))


def new_id(prefix: str, *, now_ms: int | None = None) -> str:
    """Return ``"<prefix>_<26-char ULID>"``; ``now_ms`` overrides the clock (tests)."""
    ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    return f"{prefix}_{_encode(ms, 10)}{_encode(secrets.randbits(80), 16)}"
