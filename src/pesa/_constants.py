"""Defaults shared by every layer of pesa, in one place."""

from __future__ import annotations

from typing import Final, Literal

Environment = Literal["emulator", "sandbox", "production"]

DEFAULT_ENVIRONMENT: Final[Environment] = "emulator"
DEFAULT_EMULATOR_HOST: Final = "127.0.0.1"
DEFAULT_EMULATOR_PORT: Final = 8100
DEFAULT_GATEWAY_HOST: Final = "127.0.0.1"
DEFAULT_GATEWAY_PORT: Final = 8000

BASE_URLS: Final[dict[str, str]] = {
    "emulator": f"http://{DEFAULT_EMULATOR_HOST}:{DEFAULT_EMULATOR_PORT}",
    "sandbox": "https://sandbox.safaricom.co.ke",
    "production": "https://api.safaricom.co.ke",
}

DEFAULT_TIMEOUT: Final = 30.0
DEFAULT_CONNECT_TIMEOUT: Final = 10.0
DEFAULT_MAX_RETRIES: Final = 2
DEFAULT_MAX_CONNECTIONS: Final = 100

# Daraja client: a cached token is dropped this many seconds before its expires_in (libraries
# use 60 s to 10 min, REFERENCE §3); retries back off from the base delay, doubling, capped.
DEFAULT_TOKEN_MARGIN: Final = 120.0
# Seconds the one process fetching a shared token holds the lease (others wait meanwhile).
DEFAULT_TOKEN_FETCH_LEASE: Final = 30.0
DEFAULT_RETRY_BASE_DELAY: Final = 0.5
DEFAULT_RETRY_MAX_DELAY: Final = 30.0

# Daraja time is East Africa Time (UTC+3, no daylight saving) whatever the host's zone.
NAIROBI_TZ: Final = "Africa/Nairobi"

# Amount limits in whole shillings (REFERENCE §11); configurable per client.
DEFAULT_STK_MIN_AMOUNT: Final = 1
DEFAULT_STK_MAX_AMOUNT: Final = 250_000
DEFAULT_B2C_MIN_AMOUNT: Final = 10
DEFAULT_B2C_MAX_AMOUNT: Final = 250_000
# B2B, tax and B2B Express Checkout limits are not in the reference [U]: the general
# per-transaction cap is the default, configurable (DarajaOptions.b2b_amount_limits).
DEFAULT_B2B_MIN_AMOUNT: Final = 1
DEFAULT_B2B_MAX_AMOUNT: Final = 250_000
# Pull Transactions reaches back this far (REFERENCE §8.9: "last 48 h").
PULL_TRANSACTIONS_MAX_HOURS: Final = 48
# The Ratiba till TransactionType: the docs spell it "Marchant", an SDK "Merchant"
# (REFERENCE §9, §14.13 [U]); the docs' spelling is the default, configurable.
DEFAULT_RATIBA_TILL_TRANSACTION_TYPE: Final = "Standing Order Customer Pay Marchant"
RATIBA_PAYBILL_TRANSACTION_TYPE: Final = "Standing Order Customer Pay Bill"

DEFAULT_DATABASE_URL: Final = "sqlite:///pesa.db"

# Addresses Daraja delivers callbacks from (REFERENCE §11): the 12 most SDKs publish plus the
# two mpesakit adds. Community knowledge, not an official list, hence configurable.
DEFAULT_CALLBACK_ALLOWED_IPS: Final[tuple[str, ...]] = (
    "196.201.214.200",
    "196.201.214.206",
    "196.201.213.114",
    "196.201.214.207",
    "196.201.214.208",
    "196.201.213.44",
    "196.201.212.127",
    "196.201.212.138",
    "196.201.212.129",
    "196.201.212.136",
    "196.201.212.74",
    "196.201.212.69",
    "196.201.212.128",
    "196.201.212.132",
)
