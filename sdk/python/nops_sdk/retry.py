"""Retry policy: exponential backoff with full jitter, honouring ``Retry-After``."""

from __future__ import annotations

import email.utils
import random
import time
from dataclasses import dataclass, field
from typing import Callable, FrozenSet, Mapping, Optional

#: Statuses worth another attempt: the kernel's rate limits (429), an unavailable kernel or agent
#: (503), and gateway failures (502, 504).
DEFAULT_RETRY_STATUSES: FrozenSet[int] = frozenset({429, 502, 503, 504})


def parse_retry_after(value: Optional[str], now: Optional[float] = None) -> Optional[float]:
    """Return the delay a ``Retry-After`` value asks for, in seconds, or None when absent or invalid.

    Both forms of RFC 9110 are understood: delay-seconds (``"3"``) and an HTTP-date.
    """
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(int(value))
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None or when.tzinfo is None:
        return None
    delay = when.timestamp() - (time.time() if now is None else now)
    return max(0.0, delay)


@dataclass
class RetryPolicy:
    """How a Client retries.

    An attempt is retried when it failed in transport or got one of ``statuses``, up to
    ``max_attempts`` attempts in all. The delay before retry n (1-based) is drawn uniformly in
    ``[0, min(max_delay, base_delay * 2**(n-1))]`` (full jitter); when the answer carried
    ``Retry-After``, the delay is at least that (a server's request is never cut short), and a
    ``Retry-After`` longer than ``max_retry_after`` ends the retries instead. Only requests that
    are safe to repeat are retried: GET, HEAD, PUT, DELETE, OPTIONS, and POST with an
    ``Idempotency-Key`` (the Client adds one to every POST).
    """

    max_attempts: int = 4
    base_delay: float = 0.2
    max_delay: float = 5.0
    max_retry_after: float = 60.0
    statuses: FrozenSet[int] = DEFAULT_RETRY_STATUSES
    rand: Callable[[], float] = field(default=random.random, repr=False)
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)

    def backoff(self, retry: int) -> float:
        """Return the jittered delay before retry number retry (1 for the first retry)."""
        ceiling = min(self.max_delay, self.base_delay * (2 ** max(0, retry - 1)))
        return self.rand() * ceiling

    def delay(self, retry: int, headers: Optional[Mapping[str, str]]) -> Optional[float]:
        """Return the delay before retry number retry given the last answer's headers, or None
        when the server asked for a wait longer than ``max_retry_after``."""
        d = self.backoff(retry)
        if headers is not None:
            ra = None
            for k, v in headers.items():
                if k.lower() == "retry-after":
                    ra = parse_retry_after(v)
            if ra is not None:
                if ra > self.max_retry_after:
                    return None
                d = max(d, ra)
        return d


#: A policy that never retries.
NO_RETRY = RetryPolicy(max_attempts=1)
