"""What :class:`Daraja` and :class:`AsyncDaraja` share: configuration, request building, answers.

Everything here is pure; only the send/sleep loops in ``_client.py`` exist twice.
"""

from __future__ import annotations

import copy
import dataclasses
import ssl
import threading
import uuid
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Generic, Literal, Self, TypeVar, Unpack, get_args

import httpx

from pesa._constants import DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_CONNECTIONS, Environment
from pesa._exceptions import (
    ConfigurationError,
    DarajaError,
    OutcomeUnknownError,
    RedactedRequest,
    TransportError,
    UnexpectedResponseError,
    ValidationError,
)
from pesa._logging import get_logger
from pesa.client._evidence import describe_request
from pesa.client._options import DarajaOptionFields, DarajaOptions, _text
from pesa.client._pacing import RateLimiter
from pesa.client._retry import (
    RetryPolicy,
    classify_transport_error,
    parse_retry_after,
    should_retry,
)
from pesa.client._token import DarajaAuth, InMemoryTokenStore, TokenFetchError, TokenStore
from pesa.daraja._credential import bundled_certificate, load_certificate, security_credential
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
    TransactionStatusRequest,
    redact_secrets,
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

if TYPE_CHECKING:
    from pesa.config import Settings

__all__ = ["BaseDaraja", "redact_body", "tls_verify"]

log = get_logger("pesa.client")

ResponseT = TypeVar("ResponseT", bound=DarajaResponse)
HttpT = TypeVar("HttpT", httpx.Client, httpx.AsyncClient)
TransportT = TypeVar("TransportT", httpx.BaseTransport, httpx.AsyncBaseTransport)

DEFAULT_DESCRIPTION: Final = "Payment"


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
    return redact_secrets(body)


class BaseDaraja(ABC, Generic[HttpT, TransportT]):
    """Configuration and pure logic shared by the sync and async clients.

    The constructor is written once, here: ``options`` (a :class:`DarajaOptions`) and/or
    its fields as keyword arguments (they replace the options' fields), and ``transport``
    (an httpx transport; ``httpx.MockTransport`` in tests). Subclasses only open their
    pool (:meth:`_open`) and run the send loop.
    """

    def __init__(
        self,
        options: DarajaOptions | None = None,
        /,
        *,
        transport: TransportT | None = None,
        **fields: Unpack[DarajaOptionFields],
    ) -> None:
        if options is None:
            options = DarajaOptions(**fields)
        elif fields:
            options = options.replace(**fields)
        self.options = options
        self.environment: Environment = options.environment  # type: ignore[assignment]  # checked
        self.base_url = options.url
        self.timeout = float(options.timeout)
        self.retry_policy = options.retry_policy or RetryPolicy(max_retries=options.max_retries)
        self.clock: Clock = options.clock or SystemClock()
        self.token_store: TokenStore = options.token_store or InMemoryTokenStore()
        self.rate_limiter = (
            RateLimiter(options.rate_limit) if options.rate_limit is not None else None
        )
        self.verify = tls_verify(options.verify)
        self._security_credential = options.security_credential
        # A list so that copies made by with_options() share one auth (one token lock).
        self._auth_holder: list[DarajaAuth] = []
        self._auth_lock = threading.Lock()
        self._http: HttpT = self._open(transport)

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        transport: TransportT | None = None,
        **overrides: Unpack[DarajaOptionFields],
    ) -> Self:
        """Build a client from a :class:`pesa.Settings`; keyword arguments win.

        Example:
            >>> Daraja.from_settings(Settings(), timeout=10)  # doctest: +SKIP
        """
        return cls(DarajaOptions.from_settings(settings, **overrides), transport=transport)

    @classmethod
    def from_env(
        cls, *, transport: TransportT | None = None, **overrides: Unpack[DarajaOptionFields]
    ) -> Self:
        """Build a client from ``PESA_*`` variables (and ``.env``); keyword arguments win.

        Raises:
            ConfigurationError: a ``PESA_*`` variable is invalid (all of them named).
        """
        from pesa.config import Settings

        return cls.from_settings(Settings(), transport=transport, **overrides)

    def _rebase(self, base_url: str) -> None:
        """Point this client (and its copies' shared auth) at another base URL.

        Internal: the gateway uses it when it learns the port it is really served on,
        before which its mounted emulator's URL was a guess.
        """
        self.options = self.options.replace(base_url=base_url)
        self.base_url = self.options.url
        self._http.base_url = httpx.URL(self.base_url)
        with self._auth_lock:
            self._auth_holder.clear()  # the OAuth URL and token key follow the base URL

    @abstractmethod
    def _open(self, transport: TransportT | None) -> HttpT:
        """The pooled httpx client this Daraja client sends through."""

    def _pool_options(self) -> dict[str, Any]:
        return {
            "base_url": self.base_url,
            "timeout": self._timeout(None),
            "verify": self.verify,
            "limits": httpx.Limits(max_connections=DEFAULT_MAX_CONNECTIONS),
            "headers": {"Accept": "application/json"},
        }

    # The options most code reads, as attributes (read-only views of ``self.options``).

    @property
    def consumer_key(self) -> str | None:
        """The Daraja app's consumer key."""
        return self.options.consumer_key

    @property
    def shortcode(self) -> str | None:
        """The PayBill / HO number."""
        return _text(self.options.shortcode)

    @property
    def till(self) -> str | None:
        """The till number of Buy Goods pushes, if any."""
        return _text(self.options.till)

    @property
    def initiator_name(self) -> str | None:
        """The API operator of the initiator APIs."""
        return self.options.initiator_name

    @property
    def certificate_path(self) -> Path | None:
        """The certificate the security credential is encrypted with."""
        path = self.options.certificate_path
        return Path(path) if path else None

    @property
    def callback_url(self) -> str | None:
        """The default STK ``CallBackURL``."""
        return self.options.callback_url

    @property
    def result_url(self) -> str | None:
        """The default ``ResultURL``."""
        return self.options.result_url

    @property
    def timeout_url(self) -> str | None:
        """The default ``QueueTimeOutURL``."""
        return self.options.timeout_url

    @property
    def stk_amount_limits(self) -> tuple[int, int]:
        """``(minimum, maximum)`` whole shillings of STK, C2B and reversal amounts."""
        return self.options.stk_amount_limits

    @property
    def b2c_amount_limits(self) -> tuple[int, int]:
        """``(minimum, maximum)`` whole shillings of B2C amounts."""
        return self.options.b2c_amount_limits

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
                        self._required(self.options.consumer_secret, "consumer_secret"),
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
            clone.options = clone.options.replace(timeout=float(timeout))
        if max_retries is not None:
            if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
                raise ValidationError("max_retries", "must be an int >= 0", max_retries)
            clone.retry_policy = dataclasses.replace(self.retry_policy, max_retries=max_retries)
            clone.options = clone.options.replace(
                max_retries=max_retries, retry_policy=clone.retry_policy
            )
        return clone

    def _credential(self) -> str:
        """The ``SecurityCredential``, encrypted once and reused (any encryption is valid)."""
        if self._security_credential is None:
            password = self._required(self.options.initiator_password, "initiator_password")
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
        passkey = self._required(self.options.passkey, "passkey")
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
    def _outcome_unknown(
        op: Operation[Any, Any], sent: RedactedRequest, error: Exception
    ) -> OutcomeUnknownError:
        if isinstance(error, DarajaError):
            unknown = OutcomeUnknownError(
                op.name,
                sent,
                f"HTTP {error.status_code} answer that cannot be read: {error.error_message}",
                status_code=error.status_code,
                headers=error.headers,
                request_id=error.request_id,
            )
        else:
            unknown = OutcomeUnknownError(
                op.name, sent, f"{type(error).__name__} after the request was sent"
            )
        unknown.__cause__ = error
        return unknown

    # -- the decision half of the send loop ------------------------------------------

    def _after_exception(
        self, op: Operation[Any, Any], sent: httpx.Request, exc: Exception, attempt: int
    ) -> _Step:
        if isinstance(exc, TokenFetchError):
            # The operation itself was never sent: retry OAuth's transient failures.
            failure: Any = exc.error
            moves_money = False
            final: BaseException = exc.error
        elif isinstance(exc, httpx.RequestError):
            failure = classify_transport_error(exc)
            moves_money = op.moves_money
            evidence = describe_request(sent)
            if failure == "maybe_sent" and op.moves_money:
                log.warning("%s: %s after sending; outcome unknown", op.name, type(exc).__name__)
                return _Step(error=self._outcome_unknown(op, evidence, exc))
            hint = ""
            if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
                hint = f" (is Daraja reachable at {self.base_url}? check PESA_BASE_URL)"
            final = TransportError(
                f"{op.name}: {type(exc).__name__} from {evidence}: {exc or 'no answer'}{hint}",
                operation=op.name,
                request=evidence,
            )
            final.__cause__ = exc
        else:
            return _Step(error=exc)
        decision = should_retry(
            operation=op.name,
            moves_money=moves_money,
            failure=failure,
            attempt=attempt,
            policy=self.retry_policy,
        )
        if not decision.retry:
            return _Step(error=final)
        delay = self.retry_policy.delay(attempt)
        log.info(
            "retrying %s (attempt %d) in %.2fs: %s", op.name, attempt + 1, delay, decision.reason
        )
        return _Step(delay=delay)

    def _after_response(
        self,
        op: Operation[Any, Any],
        request: DarajaRequest,
        sent: httpx.Request,
        response: httpx.Response,
        attempt: int,
    ) -> _Step:
        outcome = op.interpret(request, response.status_code, response.content, response.headers)
        if not isinstance(outcome, DarajaError):
            log.debug("%s answered %d", op.name, response.status_code)
            return _Step(result=outcome)
        outcome.operation = op.name
        outcome.request = describe_request(sent, op.encode(request))
        log.debug("%s answered %d: %s", op.name, response.status_code, outcome)
        if op.moves_money and isinstance(outcome, UnexpectedResponseError):
            # A 2xx we cannot read: the request was accepted, perhaps. Never re-send.
            return _Step(error=self._outcome_unknown(op, outcome.request, outcome))
        decision = should_retry(
            operation=op.name,
            moves_money=op.moves_money,
            failure=outcome,
            attempt=attempt,
            policy=self.retry_policy,
        )
        if not decision.retry:
            return _Step(error=outcome)
        delay = self.retry_policy.delay(
            attempt, parse_retry_after(response.headers.get("Retry-After"))
        )
        log.info(
            "retrying %s (attempt %d) in %.2fs: %s", op.name, attempt + 1, delay, decision.reason
        )
        return _Step(delay=delay)


class _Step:
    """What the send loop does after one attempt: return, raise, or sleep and retry."""

    __slots__ = ("delay", "error", "result")

    def __init__(
        self,
        result: DarajaResponse | None = None,
        error: BaseException | None = None,
        delay: float = 0.0,
    ) -> None:
        self.result = result
        self.error = error
        self.delay = delay
