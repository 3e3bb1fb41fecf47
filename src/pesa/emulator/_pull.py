"""Pull Transactions: M-Pesa's own record of a shortcode's C2B payments, for the last 48 hours
(``/pulltransactions/v1/register`` and ``/pulltransactions/v1/query``, REFERENCE 8.9).

Register answers ``ResponseStatus`` ``1000`` (registered) or ``1001`` (already). A query on a
registered shortcode reads the books: every completed C2B payment in ``[StartDate, EndDate]``
(Nairobi time, ``YYYY-MM-DD HH:MM:SS``) no older than 48 hours, a page of ``pull_page_size``
from ``OffSetValue``, nested as Daraja nests it (``Response: [[{...}]]``), ``ResponseCode``
``1000``; none is ``1001`` "No records found or Organization Name not available". A
dropped confirmation does not hide a payment from Pull: the money is in the books.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from pesa.emulator import _daraja as daraja
from pesa.emulator import _validate as v
from pesa.emulator._product import DarajaRoute, Product
from pesa.emulator._validate import Refusal

__all__ = ["PullTransactions"]

_FORMAT = "%Y-%m-%d %H:%M:%S"
_WINDOW = timedelta(hours=48)


class PullTransactions(Product):
    """``/pulltransactions/v1/register`` and ``/pulltransactions/v1/query``."""

    operations = ("pull",)

    def __init__(self, core: Any) -> None:
        super().__init__(core)
        self.registrations: dict[str, dict[str, str]] = {}

    def reset(self) -> None:
        self.registrations = {}

    def routes(self) -> list[DarajaRoute]:
        return [
            DarajaRoute("/pulltransactions/v1/register", self.register),
            DarajaRoute("/pulltransactions/v1/query", self.query),
        ]

    def register(self, body: dict[str, Any], app: str) -> tuple[int, dict[str, Any]]:
        """``POST /pulltransactions/v1/register`` (``RequestType`` ``Pull``)."""
        del app
        core = self.core
        shortcode = core.org_shortcode(body.get("ShortCode"), "ShortCode")
        v.choice(body.get("RequestType"), "RequestType", ("Pull",))
        number = v.msisdn(body.get("NominatedNumber"), "NominatedNumber")
        url = v.url(body.get("CallBackURL"), "CallBackURL")
        already = shortcode in self.registrations
        self.registrations[shortcode] = {"nominated_number": number, "callback_url": url}
        return 200, {
            "ResponseRefID": core.ids.request_id(),
            "ResponseStatus": daraja.PULL_ALREADY_REGISTERED if already else daraja.PULL_REGISTERED,
            "ShortCode": shortcode,
            "ResponseDescription": (
                "Shortcode already registered" if already else "Shortcode registered successfully"
            ),
        }

    def _date(self, value: Any, field: str) -> datetime:
        if not isinstance(value, str):
            raise Refusal(daraja.bad_request(field))
        try:
            parsed = datetime.strptime(value.strip(), _FORMAT)
        except ValueError:
            raise Refusal(daraja.bad_request(field)) from None
        return parsed.replace(tzinfo=self.core.now().tzinfo)

    def query(self, body: dict[str, Any], app: str) -> tuple[int, dict[str, Any]]:
        """``POST /pulltransactions/v1/query``: one page of the window's C2B payments."""
        del app
        core = self.core
        shortcode = v.shortcode(body.get("ShortCode"), "ShortCode")
        if shortcode not in self.registrations:
            raise Refusal(daraja.PULL_INVALID_SHORTCODE)
        start = self._date(body.get("StartDate"), "StartDate")
        end = self._date(body.get("EndDate"), "EndDate")
        if end < start:
            raise Refusal(daraja.bad_request("EndDate"))
        offset_text = v.required_text(body.get("OffSetValue", "0"), "OffSetValue", max_length=9)
        if not offset_text.isdigit():
            raise Refusal(daraja.bad_request("OffSetValue"))
        offset = int(offset_text)
        # Only the last 48 hours are kept for Pull (REFERENCE 8.9).
        start = max(start, core.now() - _WINDOW)
        # Dates have whole seconds: EndDate includes its whole second.
        found = core.books.between(shortcode, ("c2b",), start, end + timedelta(seconds=1))
        page = found[offset : offset + core.config.pull_page_size]
        ref = core.ids.request_id()
        if not page:
            return 200, {
                "ResponseRefID": ref,
                "ResponseCode": daraja.PULL_NONE_FOUND,
                "ResponseMessage": daraja.PULL_NONE_FOUND_MESSAGE,
                "Response": [[]],
            }
        return 200, {
            "ResponseRefID": ref,
            "ResponseCode": daraja.PULL_FOUND,
            "ResponseMessage": "Success",
            "Response": [
                [
                    {
                        "transactionId": txn.receipt,
                        "trxDate": txn.completed_at.isoformat(timespec="milliseconds"),
                        "msisdn": int(txn.party),
                        "sender": txn.party_name,
                        "transactiontype": txn.transaction_type or "Pay Bill",
                        "billreference": txn.reference,
                        "amount": f"{txn.amount}.0",
                        "organizationname": f"Organisation {shortcode}",
                    }
                    for txn in page
                ]
            ],
        }
