"""QR codes as PNG images (segno: pure Python, no image library needed)."""

from __future__ import annotations

import functools
import io

import segno

SCALE = 8  # pixels per module: about 300 px for a checkout link, sharp on a phone
BORDER = 4  # the quiet zone the QR standard asks for, in modules


class QrTooLong(ValueError):
    """The text does not fit in any QR code."""


@functools.lru_cache(maxsize=512)
def qr_png(text: str) -> bytes:
    """A PNG of a QR code that says `text` (error correction M, or better when it fits)."""
    try:
        code = segno.make(text, error="m", micro=False)
    except segno.DataOverflowError:
        try:
            code = segno.make(text, error="l", micro=False)
        except segno.DataOverflowError as exc:
            raise QrTooLong(f"{len(text)} characters do not fit in a QR code") from exc
    out = io.BytesIO()
    code.save(out, kind="png", scale=SCALE, border=BORDER)
    return out.getvalue()
