"""The token bucket that bounds how fast the gateway queries Daraja and sends payouts.

It is pesa's one token bucket (:mod:`pesa._bucket`); the gateway shares its state between
processes through the database or Redis (``PESA_SHARED_STATE``).
"""

from __future__ import annotations

from pesa._bucket import TokenBucket

__all__ = ["TokenBucket"]
