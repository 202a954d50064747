"""QR code rendering for /qr?format=png."""

from __future__ import annotations

import io

import segno


def qr_png(code: str, scale: int = 6) -> bytes:
    buffer = io.BytesIO()
    segno.make(code, error="l", micro=False).save(buffer, kind="png", scale=scale, border=4)
    return buffer.getvalue()
