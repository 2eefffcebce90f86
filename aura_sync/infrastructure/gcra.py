"""GCRA in float time: :class:`RateLimit`, the one token bucket the rate limiter is built
from, and the exact float arithmetic of its ``retry_after`` (waiting exactly that long
makes the same request pass, any less does not).
"""

from __future__ import annotations

import math
import struct
from typing import Final

from aura_sync._checks import check_clock_time, check_int
from aura_sync.errors import InvalidArgument, WrongType

__all__ = ["RateLimit"]

_INF: Final = math.inf
_NEG_INF: Final = -math.inf  # one object: a new bucket's times share it
_nextafter = math.nextafter
_EPS53: Final = 2.0**-53  # x + x * _EPS53 is the float above x (x itself at a power of two)
_PRED1: Final = math.nextafter(1.0, 0.0)  # x * _PRED1 is x or the float below x (x > 0)
_MAX_BURST: Final = 2**53  # bursts and costs below 2**53 keep float arithmetic on them exact
_F64, _U64 = struct.Struct("<d"), struct.Struct("<Q")


def _check_rate(value: object, name: str) -> float:
    """A finite rate in ops/s > 0 (int or float, not bool) whose inverse is finite."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise WrongType(f"{name} must be a number of ops/s, got {type(value).__name__} {value!r}")
    rate = float(value) if abs(value) < 2**1024 else _INF  # an int may be too large for a float
    if not (math.isfinite(rate) and rate > 0.0 and math.isfinite(1.0 / rate)):
        raise InvalidArgument(f"{name} must be a finite number of ops/s > 0, got {value!r}")
    return rate


def _check_bucket(rate: object, burst: object, rate_name: str, burst_name: str) -> float:
    """The rate as a float, once checked with a burst in 1..2**53 (``burst / rate`` finite)."""
    checked = _check_rate(rate, rate_name)
    if not math.isfinite(check_int(burst, burst_name, minimum=1, maximum=_MAX_BURST) / checked):
        raise InvalidArgument(f"{burst_name} / {rate_name} is not finite: {burst} / {rate!r}")
    return checked


def _min_wait(now: float, t: float) -> float:
    """The smallest float ``d >= 0`` with ``now + d >= t`` in float arithmetic (the exact
    wait): a guess half a float gap below ``t``, checked and moved by a few ulps, else bisection."""
    if now >= t:
        return 0.0
    d = (t - now) - 0.5 * (t - t * _PRED1)
    step = _NEG_INF if now + d >= t else _INF
    for _ in range(4):
        nxt = _nextafter(d, step)
        if step < 0.0:  # d passes: is the float below it too short?
            if nxt < 0.0 or now + nxt < t:
                return d
        elif now + nxt >= t:
            return nxt
        d = nxt
    hi = t - now
    while now + hi < t:
        hi *= 2.0
    lo_i, hi_i = 0, _U64.unpack(_F64.pack(hi))[0]  # now + 0.0 < t <= now + hi
    while hi_i - lo_i > 1:
        mid = (lo_i + hi_i) >> 1
        lo_i, hi_i = (lo_i, mid) if now + _F64.unpack(_U64.pack(mid))[0] >= t else (mid, hi_i)
    result: float = _F64.unpack(_U64.pack(hi_i))[0]
    return result


def _debt_at(tat: float, now: float) -> float:
    """``tat - now``, rounded up so that ``now + debt >= tat``."""
    debt = tat - now
    while now + debt < tat:
        debt = _nextafter(debt, _INF)
    return debt


def _rescaled(debt: float, old_rate: float, new_rate: float) -> float:
    """A debt (seconds) at ``old_rate`` as seconds at ``new_rate``: the same token deficit."""
    if debt <= 0.0 or old_rate == new_rate:
        return debt
    return _nextafter(debt * (old_rate / new_rate), _INF)


_new_object = object.__new__


class RateLimit:
    """``burst`` ops refilled at ``ops_per_second``, as the theoretical arrival time ``tat``:
    ``cost`` passes iff ``now >= tat - (burst - cost) / rate``, then ``tat = max(tat, now) +
    cost / rate`` (no lost fraction).  It starts full; a ``now`` before the latest seen
    counts as that one (a clock stepping back mints nothing)."""

    __slots__ = ("_burst", "_interval", "_last", "_rate", "_slack1", "_tat")

    def __init__(self, ops_per_second: float, burst: int) -> None:
        rate = _check_bucket(ops_per_second, burst, "ops_per_second", "burst")
        self._burst = burst
        self._set_rate(rate)
        self._tat = self._last = _NEG_INF

    @classmethod
    def _trusted(cls, rate: float, burst: int, interval: float, slack1: float) -> RateLimit:
        """A full bucket from the limiter's checked values."""
        b: RateLimit = _new_object(cls)
        b._rate, b._burst, b._interval, b._slack1 = rate, burst, interval, slack1
        b._tat = b._last = _NEG_INF
        return b

    def _set_rate(self, rate: float) -> None:
        self._rate = rate
        self._interval = 1.0 / rate
        self._slack1 = (self._burst - 1) * self._interval  # the pass slack of cost 1

    # The decision on checked values: the limiter calls these.
    def _ready(self, cost: int) -> float:
        """The earliest time at which a request of ``cost`` passes."""
        return self._tat - (self._burst - cost) * self._interval

    def _take(self, cost: int, now: float) -> None:
        tat = self._tat
        self._tat = (tat if tat > now else now) + cost * self._interval

    def _tokens(self, now: float) -> float:
        debt = self._tat - now
        return float(self._burst) if debt <= 0.0 else max(0.0, self._burst - debt / self._interval)

    @property
    def ops_per_second(self) -> float:
        """The refill rate in ops/s."""
        return self._rate

    @property
    def burst(self) -> int:
        """The capacity in ops."""
        return self._burst

    def _args(self, cost: object, now: object) -> tuple[int, float]:
        if type(cost) is not int or not 1 <= cost <= self._burst:
            kind = type(cost).__name__
            raise InvalidArgument(f"cost must be an int in 1..{self._burst}, got {kind} {cost!r}")
        return cost, check_clock_time(now, "now")

    def try_acquire(self, cost: int, now: float) -> bool:
        """Take ``cost`` tokens at ``now`` if the bucket holds them (False changes nothing);
        InvalidArgument for a cost outside 1..burst or a bad ``now``."""
        cost, now = self._args(cost, now)
        now = max(now, self._last)
        if now < self._ready(cost):
            return False
        self._take(cost, now)
        self._last = now
        return True

    def retry_after(self, cost: int, now: float) -> float:
        """Seconds from ``now`` until ``cost`` passes, exact: ``try_acquire(cost, now + d)``
        passes for ``d = retry_after(cost, now)`` and fails for any smaller ``d``."""
        cost, now = self._args(cost, now)
        ready = self._ready(cost)
        return 0.0 if max(now, self._last) >= ready else _min_wait(now, ready)

    def tokens(self, now: float) -> float:
        """Tokens available at ``now``: a float in ``[0, burst]``."""
        return self._tokens(max(check_clock_time(now, "now"), self._last))

    def __repr__(self) -> str:
        return f"RateLimit(ops_per_second={self._rate!r}, burst={self._burst})"
