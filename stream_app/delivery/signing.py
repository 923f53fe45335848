"""HMAC-SHA256 signatures of webhook bodies, as Stripe and GitHub sign theirs.

The header is ``X-Churnstream-Signature: t=<unix seconds>,v1=<hex>`` where ``<hex>`` is
HMAC-SHA256 with the sink's shared secret over ``"<t>." + body`` (the exact bytes sent). The
timestamp lets a receiver refuse replays older than a tolerance; :func:`verify` is what a
receiver (written in Python) runs.

>>> h = sign(b"k3y", b'{"a":1}', now=1767600000)
>>> h
't=1767600000,v1=f12cdf1002dc250e52a0bdff4b2541cb3c74f39821199c8113f546c5f56e61ba'
>>> verify(b"k3y", h, b'{"a":1}', now=1767600010), verify(b"k3y", h, b'{"a":2}', now=1767600010)
(True, False)
>>> verify(b"other", h, b'{"a":1}', now=1767600010), verify(b"k3y", h, b'{"a":1}', now=1767609999)
(False, False)
"""

from __future__ import annotations

import hashlib
import hmac
import time

SIGNATURE_HEADER = "X-Churnstream-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"


def _digest(secret: bytes, t: int, body: bytes) -> str:
    return hmac.new(secret, str(t).encode() + b"." + body, hashlib.sha256).hexdigest()


def sign(secret: bytes, body: bytes, now: float | None = None) -> str:
    """The signature header's value for ``body``."""
    t = int(time.time() if now is None else now)
    return f"t={t},v1={_digest(secret, t, body)}"


def verify(secret: bytes, header: str | None, body: bytes, tolerance_s: float = 300.0, now: float | None = None) -> bool:
    """Whether ``header`` signs ``body`` with ``secret`` within ``tolerance_s`` of ``now``
    (constant-time comparison)."""
    if not header:
        return False
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        t = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - t) > tolerance_s:
        return False
    return hmac.compare_digest(_digest(secret, t, body), parts.get("v1", ""))
