"""The retry budget (gRPC-style retry throttling), shared by policies through
``RetryPolicy.with_budget``: when most calls fail, only first attempts go out."""

from __future__ import annotations

import threading
from typing import Final

from aura_sync.errors import InvalidArgument, WrongType

__all__ = ["RetryBudget"]

_MAX_BUDGET_TOKENS: Final = 1000
_MILLI: Final = 1000


def _milli(value: object, name: str, most: int) -> int:
    """``value`` in thousandths, checked to be in ``[0.001, most / 1000]``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise WrongType(f"{name} must be a number, got {type(value).__name__} {value!r}")
    try:
        milli = round(float(value) * _MILLI)
    except (OverflowError, ValueError):  # too large for a float, or nan / inf
        milli = 0
    if not 0 < milli <= most:
        raise InvalidArgument(f"{name} must be finite in [0.001, {most / _MILLI:g}], got {value!r}")
    return milli


class RetryBudget:
    """A thread-safe bucket, full at ``max_tokens`` (<= 1000): a retry takes one token, a
    success puts back ``token_ratio``, retries only while tokens > ``max_tokens / 2``.
    Counts are integer thousandths (no drift)."""

    __slots__ = ("_lock", "_max_milli", "_ratio_milli", "_tokens_milli")

    def __init__(self, max_tokens: float = 10, token_ratio: float = 0.1) -> None:
        self._max_milli = _milli(max_tokens, "max_tokens", _MAX_BUDGET_TOKENS * _MILLI)
        self._ratio_milli = _milli(token_ratio, "token_ratio", self._max_milli)
        self._tokens_milli = self._max_milli
        self._lock = threading.Lock()

    @property
    def max_tokens(self) -> float:
        """Capacity in tokens."""
        return self._max_milli / _MILLI

    @property
    def token_ratio(self) -> float:
        """Tokens deposited per success."""
        return self._ratio_milli / _MILLI

    @property
    def tokens(self) -> float:
        """Tokens currently in the bucket."""
        with self._lock:
            return self._tokens_milli / _MILLI

    def can_retry(self) -> bool:
        """Whether a retry would be allowed now (tokens > max_tokens / 2); changes nothing."""
        with self._lock:
            return self._tokens_milli * 2 > self._max_milli

    def withdraw(self) -> bool:
        """Take one token for a retry if allowed; whether the retry may go ahead."""
        with self._lock:
            if self._tokens_milli * 2 <= self._max_milli:
                return False
            self._tokens_milli = max(0, self._tokens_milli - _MILLI)
            return True

    def record_success(self) -> None:
        """Deposit ``token_ratio`` tokens for a successful call (capped at ``max_tokens``)."""
        with self._lock:
            self._tokens_milli = min(self._max_milli, self._tokens_milli + self._ratio_milli)

    def __copy__(self) -> RetryBudget:
        return self  # a shared resource: copies of a policy share it

    def __deepcopy__(self, memo: dict[int, object]) -> RetryBudget:
        return self
