"""The pieces of the retry policy that need no provider: waits, Retry-After, feedback.

All pure functions of their arguments, so the policy is tested without sleeping.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from datetime import timedelta
from email.utils import parsedate_to_datetime
from typing import Any

JITTER = (0.1, 0.3)  # each backoff grows by a random 10-30 %, as in pocoflow 0.2
FEEDBACK_ERRORS = 3  # how many recent errors a retry prompt repeats to the model


def backoff(
    retry: int,
    initial_wait: float,
    max_wait: float,
    uniform: Callable[[float, float], float] = random.uniform,
) -> float:
    """Seconds to wait before retry number ``retry`` (1 = the first retry).

    ``initial_wait`` doubled after every retry, capped at ``max_wait``, plus
    10-30 % jitter on top (pocoflow 0.2's formula: the jitter is added to the
    capped wait, so a sleep can reach 1.3 x ``max_wait``).
    """
    wait = min(initial_wait * 2 ** (retry - 1), max_wait)
    return wait + uniform(*JITTER) * wait


def retry_after(error: BaseException, now: float | None = None) -> float | None:
    """The wait in seconds a provider asked for in ``error``, or None if it named none.

    Read from a ``retry_after`` attribute (seconds or a timedelta), else from the
    headers of ``error.response`` (how the openai and anthropic SDKs expose an
    HTTP 429/503): ``retry-after-ms``, then ``retry-after`` as seconds or as an
    HTTP date (measured from ``now``, default ``time.time()``).
    """
    hint = _seconds(getattr(error, "retry_after", None), now)
    if hint is not None:
        return hint
    headers = getattr(getattr(error, "response", None), "headers", None)
    if headers is None:
        return None
    milliseconds = _number(_header(headers, "retry-after-ms"))
    if milliseconds is not None:
        return milliseconds / 1000
    return _seconds(_header(headers, "retry-after"), now)


def _header(headers: Any, name: str) -> Any:
    """Header ``name`` (case-insensitive) from a mapping of headers, or None."""
    try:
        items = headers.items()
    except AttributeError:
        return None
    return next((value for key, value in items if str(key).lower() == name), None)


def _number(value: Any) -> float | None:
    """``value`` as a finite number of seconds >= 0, or None."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return max(number, 0.0) if math.isfinite(number) else None


def _seconds(value: Any, now: float | None) -> float | None:
    """A Retry-After value (seconds, timedelta or HTTP date) as seconds from ``now``."""
    if isinstance(value, timedelta):
        return _number(value.total_seconds())
    number = _number(value)
    if number is not None or not isinstance(value, str):
        return number
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return _number(moment.timestamp() - (time.time() if now is None else now))


def with_feedback(
    messages: list[dict[str, Any]], errors: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """``messages`` plus a user message that reports the most recent errors.

    This is pocoflow 0.2's self-healing retry: the model sees what went wrong and
    may correct itself. The caller's list is not modified.
    """
    recent = errors[-FEEDBACK_ERRORS:]
    if not recent:
        return messages
    lines = ["The previous attempts failed with these errors:"]
    lines += [f"{n}. {e['error_type']}: {e['error']}" for n, e in enumerate(recent, 1)]
    lines += ["", "Please take these errors into account and answer again."]
    return [*messages, {"role": "user", "content": "\n".join(lines)}]
