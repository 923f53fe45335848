"""When to retry a delivery, and how long to wait.

>>> classify(200), classify(204), classify(429), classify(503), classify(404), classify(None)
('ok', 'ok', 'retry', 'retry', 'fail', 'retry')
>>> retry_after("7"), retry_after("-1"), retry_after("soon"), retry_after(None)
(7.0, 0.0, None, None)
>>> retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0)
10.0
"""

from __future__ import annotations

import random
import time
from email.utils import parsedate_to_datetime
from typing import Literal

from stream_app.delivery.config import RetryPolicy

Verdict = Literal["ok", "retry", "fail"]
#: 4xx answers worth another try: request timeout, too early, too many requests
RETRYABLE_4XX = frozenset({408, 425, 429})


def classify(status: int | None) -> Verdict:
    """``ok`` for 2xx; ``retry`` for 5xx, 408/425/429 and no answer (``None``: a network error or
    timeout); ``fail`` for any other status (a 4xx the receiver will answer again, a redirect)."""
    if status is None or status >= 500 or status in RETRYABLE_4XX:
        return "retry"
    if 200 <= status < 300:
        return "ok"
    return "fail"


def retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


def backoff(policy: RetryPolicy, attempt: int, rng: random.Random | None = None) -> float:
    """The wait after failed attempt ``attempt`` (1-based): full jitter on an exponential cap.

    >>> p = RetryPolicy(base_delay_s=1, max_delay_s=10)
    >>> all(0 <= backoff(p, n) <= min(10, 2 ** (n - 1)) for n in range(1, 12) for _ in range(50))
    True
    """
    cap = min(policy.max_delay_s, policy.base_delay_s * 2 ** min(attempt - 1, 60))
    return (rng or random).uniform(0, cap)
