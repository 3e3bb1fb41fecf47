"""What :class:`Daraja` and :class:`AsyncDaraja` share: configuration, request building, answers.

Everything here is pure; only the send/sleep loops in ``_client.py`` exist twice.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import ssl
import threading
import uuid
from pathlib import Path
from typing import Any, Final, Literal, Self, TypeVar, get_args

import httpx

from pesa._constants import (
    BASE_URLS,
    DEFAULT_B2C_MAX_AMOUNT,
    DEFAULT_B2C_MIN_AMOUNT,
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_ENVIRONMENT,
    DEFAULT_MAX_RETRIES,
    DEFAULT_STK_MAX_AMOUNT,
    DEFAULT_STK_MIN_AMOUNT,
    DEFAULT_TIMEOUT,
    Environment,
)
from pesa._exceptions import (
    ConfigurationError,
    DarajaError,
    OutcomeUnknownError,
    ServerError,
    ValidationError,
)
from pesa._logging import get_logger
from pesa.client._pacing import RateLimiter
from pesa.client._retry import RetryPolicy
from pesa.client._token import DarajaAuth, InMemoryTokenStore, TokenStore
from pesa.daraja._credential import bundled_certificate, load_certificate, security_credential
from pesa.daraja._errors import error_from_response, is_stk_pending
from pesa.daraja._models import (
    AccountBalanceRequest,
    B2CCommand,
    B2CPaymentRequest,
    C2BRegisterUrlRequest,
    C2BSimulateRequest,
    DarajaRequest,
    DarajaResponse,
    ReversalRequest,
    StkPushRequest,
    StkQueryRequest,
    StkQueryResponse,
    TransactionStatusRequest,
)
from pesa.daraja._operations import (
    C2B_REGISTER_URL,
    C2B_REGISTER_URL_V2,
    C2B_SIMULATE,
    C2B_SIMULATE_V2,
    Operation,
)
from pesa.daraja._time import Clock, SystemClock, daraja_timestamp, stk_password
from pesa.daraja._validation import (
    ORIGINATOR_CONVERSATION_ID_MAX,
    normalize_msisdn,
    validate_account_reference,
    validate_amount,
    validate_c2b_url,
    validate_occasion,
    validate_remarks,
    validate_shortcode,
    validate_text,
    validate_transaction_desc,
    validate_url,
)

__all__ = ["BaseDaraja", "redact_body", "tls_verify"]

log = get_logger("pesa.client")

ResponseT = TypeVar("ResponseT", bound=DarajaResponse)

_SECRET_FIELDS: Final = frozenset({"Password", "SecurityCredential"})
DEFAULT_DESCRIPTION: Final = "Payment"
_ENVIRONMENTS: Final = get_args(Environment)


def tls_verify(verify: bool | str | Path | ssl.SSLContext) -> bool | ssl.SSLContext:
    """httpx's ``verify=``: a CA bundle path becomes an SSL context trusting that CA.

    Raises:
        ConfigurationError: the CA bundle cannot be read.
    """
    if isinstance(verify, bool | ssl.SSLContext):
        return verify
    try:
        return ssl.create_default_context(cafile=str(verify))
    except (OSError, ssl.SSLError) as err:
        raise ConfigurationError(f"cannot load the CA bundle {verify} (verify=): {err}") from err


def redact_body(body: dict[str, Any]) -> dict[str, Any]:
    """A copy of a request body with ``Password`` and ``SecurityCredential`` removed."""
    return {k: ("[redacted]" if k in _SECRET_FIELDS else v) for k, v in body.items()}


class BaseDaraja:
    """Configuration and pure logic shared by the sync and async clients."""

    def __init__(
        self,
        *,
        environment: Environment | str = DEFAULT_ENVIRONMENT,
        base_url: str | None = None,
        consumer_key: str | None = None,
        consumer_secret: str | None = None,
        shortcode: str | int | None = None,
        passkey: str | None = None,
        till: str | int | None = None,
        initiator_name: str | None = None,
        initiator_password: str | None = None,
        security_credential: str | None = None,
        certificate_path: str | Path | None = None,
        callback_url: str | None = None,
        result_url: str | None = None,
        timeout_url: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        retry_policy: RetryPolicy | None = None,
        rate_limit: float | None = None,
        clock: Clock | None = None,
        token_store: TokenStore | None = None,
        verify: bool | str | Path | ssl.SSLContext = True,
        stk_amount_limits: tuple[int, int] = (DEFAULT_STK_MIN_AMOUNT, DEFAULT_STK_MAX_AMOUNT),
        b2c_amount_limits: tuple[int, int] = (DEFAULT_B2C_MIN_AMOUNT, DEFAULT_B2C_MAX_AMOUNT),
    ) -> None:
        if environment not in _ENVIRONMENTS:
            raise ConfigurationError(
                f"PESA_ENV must be one of {', '.join(_ENVIRONMENTS)} (got {environment!r})"
            )
        self.environment: Environment = environment  # type: ignore[assignment]  # checked above
        url = (base_url or BASE_URLS[self.environment]).strip().rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise ConfigurationError(f"PESA_BASE_URL must be an http(s) URL (got {url!r})")
        self.base_url = url
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise ConfigurationError(f"PESA_TIMEOUT must be a positive number (got {timeout!r})")
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ConfigurationError(f"PESA_MAX_RETRIES must be >= 0 (got {max_retries!r})")
        self.timeout = float(timeout)
        self.retry_policy = retry_policy or RetryPolicy(max_retries=max_retries)
        self.consumer_key = consumer_key or None
        self._consumer_secret = consumer_secret or None
        self.shortcode = str(shortcode) if shortcode not in (None, "") else None
        self._passkey = passkey or None
        self.till = str(till) if till not in (None, "") else None
        self.initiator_name = initiator_name or None
        self._initiator_password = initiator_password or None
        self._security_credential = security_credential or None
        self.certificate_path = Path(certificate_path) if certificate_path else None
        self.callback_url = callback_url or None
        self.result_url = result_url or None
        self.timeout_url = timeout_url or None
        self.clock: Clock = clock or SystemClock()
        self.token_store: TokenStore = token_store or InMemoryTokenStore()
        self.rate_limiter = RateLimiter(rate_limit) if rate_limit is not None else None
        self.verify = tls_verify(verify)
        self.stk_amount_limits = stk_amount_limits
        self.b2c_amount_limits = b2c_amount_limits
        # A list so that copies made by with_options() share one auth (one token lock).
        self._auth_holder: list[DarajaAuth] = []
        self._auth_lock = threading.Lock()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(environment={self.environment!r}, base_url={self.base_url!r})"
        )

    # -- configuration ------------------------------------------------------------------

    def _timeout(self, timeout: float | None) -> httpx.Timeout:
        total = self.timeout if timeout is None else timeout
        return httpx.Timeout(total, connect=min(DEFAULT_CONNECT_TIMEOUT, total))

    @staticmethod
    def _required(value: str | None, name: str) -> str:
        if not value:
            raise ConfigurationError(
                f"{name} is required: set PESA_{name.upper()} or pass {name}=..."
            )
        return value

    @property
    def auth(self) -> DarajaAuth:
        """The client's token authentication (built on first use, no I/O)."""
        # Under a lock: two threads building two DarajaAuth would fetch two tokens.
        with self._auth_lock:
            if not self._auth_holder:
                self._auth_holder.append(
                    DarajaAuth(
                        self._required(self.consumer_key, "consumer_key"),
                        self._required(self._consumer_secret, "consumer_secret"),
                        base_url=self.base_url,
                        clock=self.clock,
                        store=self.token_store,
                    )
                )
            return self._auth_holder[0]

    def with_options(self, *, timeout: float | None = None, max_retries: int | None = None) -> Self:
        """A copy with another timeout or retry count, sharing the pool, token and pacing.

        Example:
            >>> mpesa.with_options(timeout=5).stk_query(checkout_id)

        Close the original client, not the copy: they share one connection pool.
        """
        clone = copy.copy(self)
        if timeout is not None:
            if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
                raise ValidationError("timeout", "must be a positive number of seconds", timeout)
            clone.timeout = float(timeout)
        if max_retries is not None:
            if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
                raise ValidationError("max_retries", "must be an int >= 0", max_retries)
            clone.retry_policy = dataclasses.replace(self.retry_policy, max_retries=max_retries)
        return clone

    def _credential(self) -> str:
        """The ``SecurityCredential``, encrypted once and reused (any encryption is valid)."""
        if self._security_credential is None:
            password = self._required(self._initiator_password, "initiator_password")
            if self.certificate_path is not None:
                certificate = load_certificate(self.certificate_path)
            elif self.environment == "emulator":
                raise ConfigurationError(
                    "certificate_path is required in the emulator environment: set "
                    "PESA_CERTIFICATE_PATH to the emulator's certificate (or pass "
                    "security_credential=...)"
                )
            else:
                certificate = bundled_certificate(self.environment)
            self._security_credential = security_credential(password, certificate)
        return self._security_credential

    def _url(self, given: str | None, default: str | None, name: str, field: str) -> str:
        return validate_url(self._required(given or default, name), field=field)

    # -- request builders ---------------------------------------------------------------

    def _stk_password(self) -> tuple[str, str, str]:
        shortcode = validate_shortcode(self._required(self.shortcode, "shortcode"))
        passkey = self._required(self._passkey, "passkey")
        # One timestamp for both the body and the password (else "Wrong credentials").
        timestamp = daraja_timestamp(self.clock)
        return shortcode, timestamp, stk_password(shortcode, passkey, timestamp)

    def _build_stk_push(
        self,
        phone: str | int,
        amount: Any,
        account_reference: str,
        description: str | None,
        callback_url: str | None,
        till: str | int | None,
    ) -> StkPushRequest:
        msisdn = normalize_msisdn(phone)
        low, high = self.stk_amount_limits
        whole = validate_amount(amount, minimum=low, maximum=high)
        reference = validate_account_reference(account_reference)
        desc = validate_transaction_desc(description or DEFAULT_DESCRIPTION)
        url = self._url(callback_url, self.callback_url, "callback_url", "callback_url")
        till_number = till if till not in (None, "") else self.till
        party_b = validate_shortcode(till_number, field="till") if till_number else None
        shortcode, timestamp, password = self._stk_password()
        return StkPushRequest(
            business_short_code=shortcode,
            password=password,
            timestamp=timestamp,
            transaction_type="CustomerBuyGoodsOnline" if party_b else "CustomerPayBillOnline",
            amount=whole,
            party_a=msisdn,
            party_b=party_b or shortcode,
            phone_number=msisdn,
            callback_url=url,
            account_reference=reference,
            transaction_desc=desc,
        )

    def _build_stk_query(self, checkout_request_id: str) -> StkQueryRequest:
        checkout = validate_text(
            checkout_request_id,
            field="checkout_request_id",
            max_length=ORIGINATOR_CONVERSATION_ID_MAX,
        )
        shortcode, timestamp, password = self._stk_password()
        return StkQueryRequest(
            business_short_code=shortcode,
            password=password,
            timestamp=timestamp,
            checkout_request_id=checkout,
        )

    @staticmethod
    def _c2b_operation(kind: Literal["register", "simulate"], version: int) -> Operation[Any, Any]:
        if version not in (1, 2):
            raise ValidationError("version", "must be 1 or 2", version)
        if kind == "register":
            return C2B_REGISTER_URL if version == 1 else C2B_REGISTER_URL_V2
        return C2B_SIMULATE if version == 1 else C2B_SIMULATE_V2

    def _build_c2b_register(
        self,
        confirmation_url: str,
        validation_url: str,
        shortcode: str | int | None,
        response_type: str,
    ) -> C2BRegisterUrlRequest:
        if response_type not in ("Completed", "Cancelled"):
            raise ValidationError(
                "response_type", "must be 'Completed' or 'Cancelled'", response_type
            )
        return C2BRegisterUrlRequest(
            short_code=validate_shortcode(shortcode or self._required(self.shortcode, "shortcode")),
            response_type=response_type,
            confirmation_url=validate_c2b_url(confirmation_url, field="confirmation_url"),
            validation_url=validate_c2b_url(validation_url, field="validation_url"),
        )

    def _build_c2b_simulate(
        self,
        phone: str | int,
        amount: Any,
        bill_ref_number: str | None,
        shortcode: str | int | None,
        command_id: str,
    ) -> C2BSimulateRequest:
        if self.environment == "production":
            raise ConfigurationError("c2b_simulate exists only in the sandbox and the emulator")
        if command_id not in ("CustomerPayBillOnline", "CustomerBuyGoodsOnline"):
            raise ValidationError(
                "command_id", "must be CustomerPayBillOnline or CustomerBuyGoodsOnline", command_id
            )
        low, high = self.stk_amount_limits
        return C2BSimulateRequest(
            short_code=validate_shortcode(shortcode or self._required(self.shortcode, "shortcode")),
            command_id=command_id,
            amount=validate_amount(amount, minimum=low, maximum=high),
            msisdn=normalize_msisdn(phone),
            bill_ref_number=(
                None
                if bill_ref_number is None
                else validate_text(bill_ref_number, field="bill_ref_number", max_length=20)
            ),
        )

    def _initiator(self) -> str:
        return self._required(self.initiator_name, "initiator_name")

    def _build_b2c(
        self,
        phone: str | int,
        amount: Any,
        remarks: str,
        originator_conversation_id: str | None,
        command_id: str,
        occasion: str | None,
        shortcode: str | int | None,
        result_url: str | None,
        timeout_url: str | None,
    ) -> B2CPaymentRequest:
        if command_id not in get_args(B2CCommand):
            raise ValidationError(
                "command_id", f"must be one of {', '.join(get_args(B2CCommand))}", command_id
            )
        low, high = self.b2c_amount_limits
        ocid = originator_conversation_id or uuid.uuid4().hex
        return B2CPaymentRequest(
            originator_conversation_id=validate_text(
                ocid, field="originator_conversation_id", max_length=ORIGINATOR_CONVERSATION_ID_MAX
            ),
            initiator_name=self._initiator(),
            security_credential=self._credential(),
            command_id=command_id,
            amount=validate_amount(amount, minimum=low, maximum=high),
            party_a=validate_shortcode(shortcode or self._required(self.shortcode, "shortcode")),
            party_b=normalize_msisdn(phone),
            remarks=validate_remarks(remarks),
            queue_timeout_url=self._url(
                timeout_url, self.timeout_url, "timeout_url", "timeout_url"
            ),
            result_url=self._url(result_url, self.result_url, "result_url", "result_url"),
            occasion=None if occasion is None else validate_occasion(occasion),
        )

    def _build_transaction_status(
        self,
        transaction_id: str | None,
        original_conversation_id: str | None,
        remarks: str,
        occasion: str | None,
        shortcode: str | int | None,
        identifier_type: str,
        result_url: str | None,
        timeout_url: str | None,
    ) -> TransactionStatusRequest:
        if not transaction_id and not original_conversation_id:
            raise ValidationError(
                "transaction_id", "give transaction_id or original_conversation_id (or both)"
            )
        if identifier_type not in ("1", "2", "4"):
            raise ValidationError("identifier_type", "must be '1', '2' or '4'", identifier_type)
        return TransactionStatusRequest(
            initiator=self._initiator(),
            security_credential=self._credential(),
            transaction_id=transaction_id or None,
            original_conversation_id=original_conversation_id or None,
            party_a=validate_shortcode(shortcode or self._required(self.shortcode, "shortcode")),
            identifier_type=identifier_type,
            result_url=self._url(result_url, self.result_url, "result_url", "result_url"),
            queue_timeout_url=self._url(
                timeout_url, self.timeout_url, "timeout_url", "timeout_url"
            ),
            remarks=validate_remarks(remarks),
            occasion=None if occasion is None else validate_occasion(occasion),
        )

    def _build_account_balance(
        self,
        remarks: str,
        shortcode: str | int | None,
        identifier_type: str,
        result_url: str | None,
        timeout_url: str | None,
    ) -> AccountBalanceRequest:
        if identifier_type not in ("1", "2", "4"):
            raise ValidationError("identifier_type", "must be '1', '2' or '4'", identifier_type)
        return AccountBalanceRequest(
            initiator=self._initiator(),
            security_credential=self._credential(),
            party_a=validate_shortcode(shortcode or self._required(self.shortcode, "shortcode")),
            identifier_type=identifier_type,
            remarks=validate_remarks(remarks),
            queue_timeout_url=self._url(
                timeout_url, self.timeout_url, "timeout_url", "timeout_url"
            ),
            result_url=self._url(result_url, self.result_url, "result_url", "result_url"),
        )

    def _build_reversal(
        self,
        transaction_id: str,
        amount: Any,
        receiver_party: str | int | None,
        receiver_identifier_type: str,
        remarks: str,
        occasion: str | None,
        result_url: str | None,
        timeout_url: str | None,
    ) -> ReversalRequest:
        low, high = self.stk_amount_limits
        return ReversalRequest(
            initiator=self._initiator(),
            security_credential=self._credential(),
            transaction_id=validate_text(transaction_id, field="transaction_id", max_length=40),
            amount=str(validate_amount(amount, minimum=low, maximum=high)),
            receiver_party=validate_shortcode(
                receiver_party or self._required(self.shortcode, "shortcode"),
                field="receiver_party",
            ),
            receiver_identifier_type=validate_text(
                receiver_identifier_type, field="receiver_identifier_type", max_length=2
            ),
            result_url=self._url(result_url, self.result_url, "result_url", "result_url"),
            queue_timeout_url=self._url(
                timeout_url, self.timeout_url, "timeout_url", "timeout_url"
            ),
            remarks=validate_remarks(remarks),
            occasion=None if occasion is None else validate_occasion(occasion),
        )

    # -- answers ------------------------------------------------------------------------

    def _request(
        self,
        client: httpx.Client | httpx.AsyncClient,
        op: Operation[Any, Any],
        body: dict[str, Any],
        timeout: float | None,
    ) -> httpx.Request:
        return client.build_request(op.method, op.path, json=body, timeout=self._timeout(timeout))

    @staticmethod
    def _interpret(
        op: Operation[DarajaRequest, ResponseT], request: DarajaRequest, response: httpx.Response
    ) -> ResponseT | DarajaError:
        """The response model, or the error to raise or retry on."""
        content = response.content
        if not response.is_success:
            error = error_from_response(response.status_code, content)
            if isinstance(request, StkQueryRequest) and is_stk_pending(error):
                # The prompt is still open: a status, not a failure (REFERENCE §6.4).
                pending = StkQueryResponse(
                    checkout_request_id=request.checkout_request_id,
                    result_desc=error.error_message,
                    pending=True,
                )
                return pending  # type: ignore[return-value]  # op is STK_QUERY here
            return error
        try:
            data = json.loads(content)
        except ValueError:
            # A 2xx that is not JSON (a proxy page, an empty body): not Daraja's answer.
            text = content.decode("utf-8", errors="replace")
            what = "an empty body" if not text.strip() else "a non-JSON body"
            return ServerError(response.status_code, None, f"{op.name}: {what}", None, text)
        try:
            return op.decode(response.status_code, data, content.decode("utf-8", errors="replace"))
        except DarajaError as err:
            return err

    @staticmethod
    def _outcome_unknown(
        op: Operation[Any, Any], body: dict[str, Any], error: Exception
    ) -> OutcomeUnknownError:
        return OutcomeUnknownError(
            op.name, redact_body(body), f"{type(error).__name__} after the request was sent"
        )
