"""Dynamic QR: ``/mpesa/qrcode/v1/generate`` answers a real, scannable QR code as a base64 PNG
of ``Size`` x ``Size`` pixels, with ``ResponseCode`` ``"00"`` (REFERENCE 9).

What Safaricom's code encodes is not documented [U]: the emulator encodes the request's
fields as ``TrxCode|CPI|Amount|RefNo|MerchantName`` (a real QR a phone can read, never a
placeholder). The payment itself arrives later as an ordinary C2B payment (no callback).
"""

from __future__ import annotations

import base64
import struct
import zlib
from typing import Any

import segno

from pesa.emulator import _daraja as daraja
from pesa.emulator import _validate as v
from pesa.emulator._product import DarajaRoute, Product
from pesa.emulator._validate import Refusal

__all__ = ["DynamicQR", "qr_png"]

_TRX_CODES = ("BG", "WA", "PB", "SM", "SB")
_QUIET_ZONE = 4  # modules of white around the code, as the QR standard asks


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data))
        + kind
        + data
        + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def qr_png(text: str, size: int) -> bytes:
    """A ``size`` x ``size`` 8-bit greyscale PNG of a QR code holding ``text``."""
    matrix = segno.make_qr(text, error="m").matrix
    modules = len(matrix) + 2 * _QUIET_ZONE
    rows: dict[int, bytes] = {}
    lines = []
    for y in range(size):
        my = y * modules // size - _QUIET_ZONE
        row = rows.get(my)
        if row is None:
            dark = matrix[my] if 0 <= my < len(matrix) else None
            pixels = bytearray(b"\x00")  # PNG filter type 0 for the scanline
            for x in range(size):
                mx = x * modules // size - _QUIET_ZONE
                black = dark is not None and 0 <= mx < len(dark) and dark[mx]
                pixels.append(0 if black else 255)
            row = rows[my] = bytes(pixels)
        lines.append(row)
    header = struct.pack(">IIBBBBB", size, size, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(b"".join(lines), 9))
        + _chunk(b"IEND", b"")
    )


class DynamicQR(Product):
    """``/mpesa/qrcode/v1/generate``."""

    def routes(self) -> list[DarajaRoute]:
        return [DarajaRoute("/mpesa/qrcode/v1/generate", self.generate)]

    def generate(self, body: dict[str, Any], app: str) -> tuple[int, dict[str, Any]]:
        """``POST /mpesa/qrcode/v1/generate``: the QR as a base64 PNG."""
        del app
        cfg = self.core.config
        merchant = v.required_text(body.get("MerchantName"), "MerchantName")
        ref_no = v.required_text(body.get("RefNo"), "RefNo")
        amount = v.amount(body.get("Amount"), cfg.stk_min_amount, cfg.stk_max_amount)
        trx_code = v.choice(body.get("TrxCode"), "TrxCode", _TRX_CODES)
        # BG/WA/PB: a till, agent till or PayBill; SM/SB: a phone number (REFERENCE 9).
        if trx_code in ("SM", "SB"):
            cpi = v.msisdn(body.get("CPI"), "CPI")
        else:
            cpi = v.shortcode(body.get("CPI"), "CPI")
        size_text = v.required_text(body.get("Size"), "Size", max_length=5)
        if not size_text.isdigit() or not 1 <= int(size_text) <= cfg.qr_max_size:
            raise Refusal(daraja.bad_request("Size"))
        image = qr_png(f"{trx_code}|{cpi}|{amount}|{ref_no}|{merchant}", int(size_text))
        return 200, {
            "ResponseCode": daraja.QR_SUCCESS_CODE,
            "RequestID": self.core.ids.request_id(),
            "ResponseDescription": daraja.QR_SUCCESS,
            "QRCode": base64.b64encode(image).decode("ascii"),
        }
