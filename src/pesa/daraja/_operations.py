"""Every Daraja operation, declared once: path, request and response models, whether it moves money.

Both clients execute these declarations; nothing else in pesa spells a Daraja path.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Generic, Literal, TypeVar

from pydantic import ValidationError as PydanticValidationError

from pesa._exceptions import BadRequestError, DarajaError, UnexpectedResponseError
from pesa.daraja._errors import error_from_response, is_stk_pending
from pesa.daraja._models import (
    AccountBalanceRequest,
    B2CPaymentRequest,
    C2BRegisterUrlRequest,
    C2BRegisterUrlResponse,
    C2BSimulateRequest,
    C2BSimulateResponse,
    DarajaRequest,
    DarajaResponse,
    InitiatorResponse,
    ReversalRequest,
    StkPushRequest,
    StkPushResponse,
    StkQueryRequest,
    StkQueryResponse,
    TokenResponse,
    TransactionStatusRequest,
    is_success_code,
)

__all__ = [
    "ACCOUNT_BALANCE",
    "B2C_PAYMENT",
    "C2B_REGISTER_URL",
    "C2B_REGISTER_URL_V2",
    "C2B_SIMULATE",
    "C2B_SIMULATE_V2",
    "OAUTH",
    "OAUTH_PATH",
    "OPERATIONS",
    "REVERSAL",
    "STK_PUSH",
    "STK_QUERY",
    "TRANSACTION_STATUS",
    "Operation",
]

RequestT = TypeVar("RequestT", bound=DarajaRequest)
ResponseT = TypeVar("ResponseT", bound=DarajaResponse)

OAUTH_PATH: Final = "/oauth/v1/generate"


@dataclass(frozen=True, slots=True)
class Operation(Generic[RequestT, ResponseT]):
    """One Daraja operation.

    Attributes:
        name: the client method that executes it (``"stk_push"``).
        path: appended to the base URL.
        request_model: the body model.
        response_model: the acknowledgement model.
        moves_money: re-sending it could move money twice, so it is retried only when the
            request provably never left (connect error, pool timeout).
        method: the HTTP method.
        on_error: turns an error answer that is really a status into a response (the STK
            query's "still being processed" is ``pending=True``, not a failure); returns
            ``None`` for a real error.
    """

    name: str
    path: str
    request_model: type[RequestT]
    response_model: type[ResponseT]
    moves_money: bool
    method: Literal["GET", "POST"] = "POST"
    on_error: Callable[[RequestT, DarajaError], ResponseT | None] | None = None

    def interpret(
        self,
        request: RequestT,
        status_code: int,
        content: bytes,
        headers: Mapping[str, str] | None = None,
    ) -> ResponseT | DarajaError:
        """Daraja's answer to ``request``: the response model, or the error it means.

        The error is returned, not raised: the client decides whether to retry it. Every
        answer maps to one of the two (HTML, text, empty bodies included).
        """
        if not 200 <= status_code < 300:
            error = error_from_response(status_code, content, headers=headers)
            if self.on_error is not None:
                status = self.on_error(request, error)
                if status is not None:
                    return status
            return error
        text = content.decode("utf-8", errors="replace")
        try:
            data = json.loads(content)
        except ValueError:
            # A 2xx that is not JSON (a proxy page, an empty body): not Daraja's answer.
            what = "an empty body" if not text.strip() else "a non-JSON body"
            return UnexpectedResponseError(
                status_code,
                None,
                f"{self.name}: HTTP {status_code} with {what}",
                None,
                text,
                headers=headers,
            )
        try:
            return self.decode(status_code, data, text)
        except DarajaError as err:
            err.headers = dict(headers or {})
            return err

    def encode(self, request: RequestT) -> dict[str, Any]:
        """The JSON body to send."""
        return request.to_wire()

    def decode(self, status_code: int, data: Any, text: str) -> ResponseT:
        """Parse a 2xx answer into the response model.

        Raises:
            UnexpectedResponseError: the body is not the expected shape (a 2xx we cannot
                read).
            BadRequestError: it carries a ``ResponseCode`` other than success.
        """
        if not isinstance(data, dict):
            raise UnexpectedResponseError(
                status_code, None, f"{self.name}: answer is not an object", None, text
            )
        try:
            response = self.response_model.model_validate(data)
        except PydanticValidationError as err:
            raise UnexpectedResponseError(
                status_code,
                None,
                f"{self.name}: unexpected answer shape ({err.error_count()} errors)",
                data.get("requestId"),
                text,
            ) from err
        code = getattr(response, "response_code", "0")
        if code is not None and not is_success_code(code):
            raise BadRequestError(
                status_code,
                str(code),
                str(getattr(response, "response_description", "") or "request refused"),
                None,
                text,
            )
        return response


def _stk_query_pending(request: StkQueryRequest, error: DarajaError) -> StkQueryResponse | None:
    # The prompt is still open: Daraja answers 500.001.1001 "The transaction is being
    # processed", a status rather than a failure (REFERENCE §6.4).
    if not is_stk_pending(error):
        return None
    return StkQueryResponse(
        checkout_request_id=request.checkout_request_id,
        result_desc=error.error_message,
        pending=True,
    )


OAUTH: Final = Operation("token", OAUTH_PATH, DarajaRequest, TokenResponse, False, "GET")
STK_PUSH: Final = Operation(
    "stk_push", "/mpesa/stkpush/v1/processrequest", StkPushRequest, StkPushResponse, True
)
STK_QUERY: Final = Operation(
    "stk_query",
    "/mpesa/stkpushquery/v1/query",
    StkQueryRequest,
    StkQueryResponse,
    False,
    on_error=_stk_query_pending,
)
C2B_REGISTER_URL: Final = Operation(
    "c2b_register_urls",
    "/mpesa/c2b/v1/registerurl",
    C2BRegisterUrlRequest,
    C2BRegisterUrlResponse,
    False,
)
C2B_REGISTER_URL_V2: Final = Operation(
    "c2b_register_urls",
    "/mpesa/c2b/v2/registerurl",
    C2BRegisterUrlRequest,
    C2BRegisterUrlResponse,
    False,
)
# A simulated customer payment: re-sending it would simulate a second payment.
C2B_SIMULATE: Final = Operation(
    "c2b_simulate", "/mpesa/c2b/v1/simulate", C2BSimulateRequest, C2BSimulateResponse, True
)
C2B_SIMULATE_V2: Final = Operation(
    "c2b_simulate", "/mpesa/c2b/v2/simulate", C2BSimulateRequest, C2BSimulateResponse, True
)
B2C_PAYMENT: Final = Operation(
    "b2c_payment", "/mpesa/b2c/v3/paymentrequest", B2CPaymentRequest, InitiatorResponse, True
)
TRANSACTION_STATUS: Final = Operation(
    "transaction_status",
    "/mpesa/transactionstatus/v1/query",
    TransactionStatusRequest,
    InitiatorResponse,
    False,
)
ACCOUNT_BALANCE: Final = Operation(
    "account_balance",
    "/mpesa/accountbalance/v1/query",
    AccountBalanceRequest,
    InitiatorResponse,
    False,
)
REVERSAL: Final = Operation(
    "reversal", "/mpesa/reversal/v1/request", ReversalRequest, InitiatorResponse, True
)

OPERATIONS: Final[tuple[Operation[Any, Any], ...]] = (
    STK_PUSH,
    STK_QUERY,
    C2B_REGISTER_URL,
    C2B_REGISTER_URL_V2,
    C2B_SIMULATE,
    C2B_SIMULATE_V2,
    B2C_PAYMENT,
    TRANSACTION_STATUS,
    ACCOUNT_BALANCE,
    REVERSAL,
)
"""Every operation the clients execute (OAuth aside), for emulators and docs."""
