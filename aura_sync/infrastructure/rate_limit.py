"""Rate limiting: a global and a per-peer token bucket, flow budgets, AIMD.

Role
    The rate-limiting concern of aura-sync (Rust
    ``aura_sync::infrastructure::rate_limit``).  Protocol actors ask the
    :class:`RateLimiter` before every operation on behalf of a peer::

        limiter = RateLimiter(RateLimitConfig(), clock=clock)
        match limiter.check_rate_limit(peer_id, cost=1):
            case Allowed():
                send_digest(peer_id)
            case Denied(retry_after, reason):
                scheduler.send_after(retry_after, self_ref, RetryDue(...))

Integration points
    Time comes from the injected :class:`~aura_sync.effects.Clock`; the core
    never sleeps.  :class:`~aura_sync.actors` wraps one limiter in a
    ``RateLimiterActor`` reached through the messages of
    :mod:`aura_sync.messages.rate_limit`; the actor keeps spend and flow
    budgets across restarts with :meth:`RateLimiter.snapshot` and
    :meth:`RateLimiter.restore`.  A :class:`Denied` converts to
    :class:`~aura_sync.errors.RateLimited`, whose ``retry_after`` the retry
    policy honours.

The model (GCRA: a token bucket in float time)
    A bucket with rate ``r`` (ops/s) and burst ``b`` (ops) keeps one float,
    its *theoretical arrival time* ``tat`` (seconds, on the clock).  At time
    ``now`` it holds ``b - max(0, tat - now) * r`` tokens, so refill is
    continuous and no fraction of a token is ever lost to rounding of a
    refill step.  A request of ``cost`` ops passes at ``now`` iff
    ``now >= tat - (b - cost) / r`` (computed as ``tat - (b - cost) * I``
    with ``I = 1 / r`` in float arithmetic), and then
    ``tat = max(tat, now) + cost * I``.  The pass condition is monotone in
    ``now``, which is what makes ``retry_after`` exact (below).  A bucket
    whose ``tat <= now`` is *full*: it is indistinguishable from a new one.

Rules (the contract, property-tested)
    * A request passes only if the global bucket, the peer's bucket and the
      peer's flow budget (if any) all allow it; a denial consumes nothing
      from any of them.
    * ``retry_after`` is exact for token denials: it is the smallest float
      ``d >= 0`` such that, with the clock advanced by ``d`` (``now + d`` in
      float arithmetic, as :meth:`~aura_sync.effects.ManualClock.advance`
      does) and nothing else consuming, the same request passes; any smaller
      wait is denied again.
    * ``cost`` is an int from 1 to ``min(global_burst, peer_burst)``, else
      :class:`~aura_sync.errors.InvalidArgument` (a ``ValueError``).
    * A clock that steps back mints nothing: the limiter never uses a time
      earlier than the latest it has seen (``now < last`` is treated as
      ``now == last``).
    * Memory is bounded: at most ``max_tracked_peers`` peer buckets.  Full
      buckets are dropped by :meth:`RateLimiter.drop_idle_buckets` (call it
      periodically) and lazily when the table is full; a bucket that still
      holds spend is never dropped, so dropping never resets spend.  When
      every tracked bucket still holds spend, a *new* peer is denied with
      :attr:`DenialReason.TRACKING_LIMIT`; its ``retry_after`` is the time
      the first tracked bucket becomes droppable (a lower bound if tracked
      peers spend meanwhile; waiting less never passes).
    * A :class:`FlowBudget` attached to a peer caps the ops it may spend per
      epoch.  A request over budget is :attr:`DenialReason.FLOW_BUDGET` until
      :meth:`RateLimiter.rotate_epoch` moves to a later epoch.  No wait on the
      clock is exact for that, so its ``retry_after`` is the configured
      polling hint ``flow_budget_retry_after`` (finite, default 1 s): never
      ``inf`` or ``None``, so retry loops never hang and ``match`` patterns
      stay uniform.  Check ``reason`` to tell it apart.
    * Adaptive mode (AIMD, per peer): ``report_outcome(peer, True)`` adds
      ``adaptive_increase`` ops/s when the peer is *under load* (its bucket
      is at most half full), ``report_outcome(peer, False)`` multiplies the
      rate by ``adaptive_decrease``; the rate stays within
      ``[adaptive_min_ops_per_second, adaptive_max_ops_per_second]``.  A rate
      change keeps the bucket's token count (it never mints).  An adapted
      rate is kept while the peer is idle for ``adaptive_idle_reset``
      seconds after its bucket refilled, then the bucket is droppable and the
      peer starts again at ``peer_ops_per_second``.

Layer: cores.  Imports values and effects only; knows nothing of actors or
messages.  Not thread-safe: one owner (an actor) calls it.
"""

from __future__ import annotations

import enum
import math
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar, Final, TypeAlias

from aura_sync._checks import check_bool, check_clock_time, check_int, check_peer
from aura_sync.effects import Clock, SystemClock
from aura_sync.errors import InvalidArgument, WrongType
from aura_sync.ids import DeviceId, check_epoch

__all__ = [
    "ALLOWED",
    "Allowed",
    "DenialReason",
    "Denied",
    "FlowBudget",
    "Outcome",
    "PeerBucketState",
    "RateLimit",
    "RateLimitConfig",
    "RateLimitResult",
    "RateLimiter",
    "RateLimiterSnapshot",
    "RateLimiterStatistics",
]

_INF: Final = math.inf
_nextafter = math.nextafter
_EPS53: Final = 2.0**-53
"""For a float ``x > 0``, ``x + x * _EPS53`` is the float just above ``x`` (or ``x``
itself if ``x`` is a power of two: the tie rounds to even)."""
_PRED1: Final = math.nextafter(1.0, 0.0)
"""``1 - 2**-53``: for a float ``x > 0``, ``x * _PRED1`` is ``x`` or the float just below it.

(The exact product lies strictly between ``x`` minus one float gap and ``x``,
and rounding is monotone.)  For a normal ``x`` it is always the float just
below, so ``now + d * _PRED1 < t`` proves that no float below ``d`` is a
wait; if the product rounds to ``x`` itself the test fails and the caller
falls back to the slow path, so the shortcut is never wrong, only sometimes
not taken.  It is a float multiply where :func:`math.nextafter` is a call.
"""
_MAX_BURST: Final = 2**53
"""Bursts and costs stay below 2**53 so that float arithmetic on them is exact."""
_U64_MAX: Final = 2**64 - 1


# --- argument checks ----------------------------------------------------------------


def _check_rate(value: object, name: str) -> float:
    """A positive, finite rate in ops/s (int or float, not bool)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise WrongType(f"{name} must be a number of ops/s, got {type(value).__name__} {value!r}")
    rate = float(value)
    if not math.isfinite(rate) or rate <= 0.0:
        raise InvalidArgument(f"{name} must be a finite number of ops/s > 0, got {value!r}")
    if not math.isfinite(1.0 / rate):
        raise InvalidArgument(f"{name} is too small to be a rate: {value!r}")
    return rate


def _check_float(value: object, name: str, lo: float, hi: float, unit: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise WrongType(f"{name} must be a number ({unit}), got {type(value).__name__} {value!r}")
    number = float(value)
    if math.isnan(number) or not lo <= number <= hi:
        raise InvalidArgument(f"{name} must be in [{lo}, {hi}] {unit}, got {value!r}")
    return number


# --- exact waits -----------------------------------------------------------------------

_F64 = struct.Struct("<d")
_U64 = struct.Struct("<Q")


def _ordinal(x: float) -> int:
    """The position of a non-negative float in the ordered list of floats."""
    result: int = _U64.unpack(_F64.pack(x))[0]
    return result


def _from_ordinal(i: int) -> float:
    result: float = _F64.unpack(_U64.pack(i))[0]
    return result


def _bisect_wait(now: float, t: float) -> float:
    """Slow path of :func:`_min_wait`: bisection over float ordinals."""
    hi = t - now
    while now + hi < t:
        hi *= 2.0
    lo_i, hi_i = 0, _ordinal(hi)  # now + 0.0 < t, now + hi >= t
    while hi_i - lo_i > 1:
        mid = (lo_i + hi_i) >> 1
        if now + _from_ordinal(mid) >= t:
            hi_i = mid
        else:
            lo_i = mid
    return _from_ordinal(hi_i)


def _min_wait(now: float, t: float) -> float:
    """The smallest float ``d >= 0`` such that ``now + d >= t`` in float arithmetic.

    This is the exact wait: a clock advanced from ``now`` by ``d`` reads at
    least ``t``, and advanced by any smaller float it reads less.  The sum
    ``now + d`` starts rounding to ``t`` half a float gap below ``t``, so
    ``(t - now) - gap / 2`` is almost always the answer; it is checked against
    the definition (and fixed by a few ulps if needed), with bisection over
    float ordinals as the fallback, so the result is exact by construction.
    """
    if now >= t:
        return 0.0
    # now + d rounds up to t from half a gap below t on: start there (for t > 0,
    # t - t * _PRED1 is that gap; for other t the guess is only off, never wrong).
    d = (t - now) - 0.5 * (t - t * _PRED1)
    if now + d >= t:
        if now + d * _PRED1 < t:  # the usual exit: the float below d is too short
            return d
        p = _nextafter(d, -_INF)
        if now + p < t or p < 0.0:
            return d
        for _ in range(3):
            d = p
            p = _nextafter(d, -_INF)
            if now + p < t or p < 0.0:
                return d
    else:
        for _ in range(3):
            d = _nextafter(d, _INF)
            if now + d >= t:
                return d
    return _bisect_wait(now, t)


# --- results ------------------------------------------------------------------------


class DenialReason(enum.Enum):
    """Which limit refused a request."""

    GLOBAL = 1
    """The global bucket (all peers together) is out of tokens."""
    PEER = 2
    """The peer's own bucket is out of tokens."""
    FLOW_BUDGET = 3
    """The peer's flow budget for the current epoch is spent."""
    TRACKING_LIMIT = 4
    """A new peer, and ``max_tracked_peers`` buckets all still hold spend."""


class Outcome(enum.Enum):
    """What happened to an operation, as reported to the adaptive (AIMD) mode."""

    SUCCESS = 1
    """The operation succeeded: additive increase when the peer is under load."""
    OVERLOAD = 2
    """The peer was overloaded (timeout, busy reply): multiplicative decrease."""


@dataclass(frozen=True, slots=True)
class Allowed:
    """The request passed; its cost has been taken from every bucket.

    Use the preallocated :data:`ALLOWED` (results compare equal anyway).
    ``allowed`` is ``True`` on this class, ``False`` on :class:`Denied`.
    """

    allowed: ClassVar[bool] = True


ALLOWED: Final = Allowed()
"""The one :class:`Allowed` the limiter returns (no allocation per decision)."""


@dataclass(frozen=True, slots=True)
class Denied:
    """The request was refused and nothing was consumed.

    ``retry_after`` is in seconds (finite, >= 0): exact for
    :attr:`DenialReason.GLOBAL` and :attr:`DenialReason.PEER` (see the module
    docstring), a lower bound for :attr:`DenialReason.TRACKING_LIMIT`, and the
    configured polling hint for :attr:`DenialReason.FLOW_BUDGET`.
    """

    retry_after: float
    reason: DenialReason
    allowed: ClassVar[bool] = False

    def __post_init__(self) -> None:
        if isinstance(self.retry_after, bool) or not isinstance(self.retry_after, int | float):
            raise WrongType(
                f"retry_after must be seconds, got {type(self.retry_after).__name__} "
                f"{self.retry_after!r}"
            )
        if not (math.isfinite(self.retry_after) and self.retry_after >= 0):
            raise InvalidArgument(f"retry_after must be finite and >= 0, got {self.retry_after!r}")
        if type(self.reason) is not DenialReason:
            raise WrongType(f"reason must be a DenialReason, got {self.reason!r}")


RateLimitResult: TypeAlias = Allowed | Denied
"""What :meth:`RateLimiter.check_rate_limit` returns; use it with ``match``."""

_new_object = object.__new__
# The slot descriptors' setters bypass the frozen ``__setattr__``: ~2x faster than ``__init__``.
_set_retry_after = Denied.__dict__["retry_after"].__set__
_set_reason = Denied.__dict__["reason"].__set__


_ONE: Final = 1
_GLOBAL: Final = DenialReason.GLOBAL
_PEER: Final = DenialReason.PEER


def _denied(retry_after: float, reason: DenialReason) -> Denied:
    """Build a :class:`Denied` without re-validating (values are ours)."""
    result: Denied = _new_object(Denied)
    _set_retry_after(result, retry_after)
    _set_reason(result, reason)
    return result


# --- configuration --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RateLimitConfig:
    """Limits of a :class:`RateLimiter` (validated on construction).

    Rates are ops/s (int or float, > 0, stored as float); bursts are ops
    (ints from 1 to 2**53).  A bucket starts full.

    Attributes:
        global_ops_per_second: refill rate of the bucket shared by all peers.
        global_burst: capacity of the global bucket.
        peer_ops_per_second: refill rate of each peer's bucket (the starting
            rate in adaptive mode).
        peer_burst: capacity of each peer's bucket.
        max_tracked_peers: most peer buckets kept at once (memory bound).
        adaptive: enable AIMD on :meth:`RateLimiter.report_outcome`.
        adaptive_min_ops_per_second: lowest adapted peer rate.
        adaptive_max_ops_per_second: highest adapted peer rate.
        adaptive_increase: ops/s added on a success under load (>= 0).
        adaptive_decrease: factor applied on overload, in (0, 1].
        adaptive_idle_reset: seconds an adapted, full bucket is kept before it
            may be dropped (its peer then restarts at ``peer_ops_per_second``).
        flow_budget_retry_after: the ``retry_after`` (seconds) reported with a
            :attr:`DenialReason.FLOW_BUDGET` denial: a polling hint, since only
            an epoch rotation refills a flow budget.

    Raises:
        WrongType: a field has the wrong type.
        InvalidArgument: a field is out of range, or (adaptive only) the
            peer rate is outside the adaptive bounds.
    """

    global_ops_per_second: float = 1000.0
    global_burst: int = 1000
    peer_ops_per_second: float = 100.0
    peer_burst: int = 200
    max_tracked_peers: int = 10_000
    adaptive: bool = False
    adaptive_min_ops_per_second: float = 1.0
    adaptive_max_ops_per_second: float = 1000.0
    adaptive_increase: float = 1.0
    adaptive_decrease: float = 0.9
    adaptive_idle_reset: float = 60.0
    flow_budget_retry_after: float = 1.0

    def __post_init__(self) -> None:
        setf = object.__setattr__
        for name in (
            "global_ops_per_second",
            "peer_ops_per_second",
            "adaptive_min_ops_per_second",
            "adaptive_max_ops_per_second",
        ):
            setf(self, name, _check_rate(getattr(self, name), name))
        check_int(self.global_burst, "global_burst", minimum=1, maximum=_MAX_BURST)
        check_int(self.peer_burst, "peer_burst", minimum=1, maximum=_MAX_BURST)
        check_int(self.max_tracked_peers, "max_tracked_peers", minimum=1, maximum=2**62)
        check_bool(self.adaptive, "adaptive")
        setf(
            self,
            "adaptive_increase",
            _check_float(self.adaptive_increase, "adaptive_increase", 0.0, 1e300, "ops/s"),
        )
        decrease = _check_float(self.adaptive_decrease, "adaptive_decrease", 0.0, 1.0, "factor")
        if decrease == 0.0:
            raise InvalidArgument(f"adaptive_decrease must be in (0, 1], got {decrease!r}")
        setf(self, "adaptive_decrease", decrease)
        for name in ("adaptive_idle_reset", "flow_budget_retry_after"):
            setf(self, name, _check_float(getattr(self, name), name, 0.0, 1e15, "seconds"))
        if self.adaptive_min_ops_per_second > self.adaptive_max_ops_per_second:
            raise InvalidArgument(
                "adaptive_min_ops_per_second must be <= adaptive_max_ops_per_second, got "
                f"{self.adaptive_min_ops_per_second!r} > {self.adaptive_max_ops_per_second!r}"
            )
        if self.adaptive and not (
            self.adaptive_min_ops_per_second
            <= self.peer_ops_per_second
            <= self.adaptive_max_ops_per_second
        ):
            raise InvalidArgument(
                f"peer_ops_per_second={self.peer_ops_per_second!r} must lie within the adaptive "
                f"bounds [{self.adaptive_min_ops_per_second!r}, "
                f"{self.adaptive_max_ops_per_second!r}] when adaptive=True"
            )
        for rate, burst, what in (
            (self.global_ops_per_second, self.global_burst, "global"),
            (self.peer_ops_per_second, self.peer_burst, "peer"),
        ):
            if not math.isfinite(burst / rate):
                raise InvalidArgument(
                    f"{what}_burst / {what}_ops_per_second is not a finite number of seconds: "
                    f"{burst} / {rate!r}"
                )

    @property
    def max_cost(self) -> int:
        """The largest cost a request may have: ``min(global_burst, peer_burst)``."""
        return min(self.global_burst, self.peer_burst)


# --- one bucket ---------------------------------------------------------------------


class RateLimit:
    """One token bucket (GCRA in float time): ``burst`` ops, refilled at ``ops_per_second``.

    The bucket starts full.  Time is passed in explicitly (``now``, seconds on
    any monotonic clock) so the same bucket serves tests and production.  A
    ``now`` earlier than the latest admission time is treated as that time,
    so a clock that steps back mints nothing.

    Args:
        ops_per_second: refill rate (> 0, finite).
        burst: capacity in ops (int, 1..2**53).

    Raises:
        WrongType, InvalidArgument: on a bad rate or burst.
    """

    __slots__ = ("_burst", "_interval", "_last", "_rate", "_tat")

    def __init__(self, ops_per_second: float, burst: int) -> None:
        rate = _check_rate(ops_per_second, "ops_per_second")
        check_int(burst, "burst", minimum=1, maximum=_MAX_BURST)
        if not math.isfinite(burst / rate):
            raise InvalidArgument(f"burst / ops_per_second is not finite: {burst} / {rate!r}")
        self._rate = rate
        self._burst = burst
        self._interval = 1.0 / rate
        self._tat = -_INF
        self._last = -_INF

    @property
    def ops_per_second(self) -> float:
        """The refill rate in ops/s."""
        return self._rate

    @property
    def burst(self) -> int:
        """The capacity in ops."""
        return self._burst

    def _cost(self, cost: object) -> int:
        if type(cost) is not int or not 1 <= cost <= self._burst:
            raise InvalidArgument(
                f"cost must be an int in 1..{self._burst} (the burst), got "
                f"{type(cost).__name__} {cost!r}"
            )
        return cost

    def _ready_time(self, cost: int) -> float:
        """The earliest time at which a request of ``cost`` passes."""
        return self._tat - (self._burst - cost) * self._interval

    def try_acquire(self, cost: int, now: float) -> bool:
        """Take ``cost`` tokens at time ``now`` if the bucket holds them.

        Returns True (tokens taken) or False (nothing changed).

        Raises:
            InvalidArgument: ``cost`` is not an int in 1..burst (a ``ValueError``).
            WrongType, InvalidArgument: ``now`` is not a finite number.
        """
        self._cost(cost)
        now = check_clock_time(now, "now")
        now = max(now, self._last)
        if now < self._ready_time(cost):
            return False
        tat = self._tat
        self._tat = (tat if tat > now else now) + cost * self._interval
        self._last = now
        return True

    def retry_after(self, cost: int, now: float) -> float:
        """Seconds to wait from ``now`` before a request of ``cost`` passes (0.0 if it would now).

        Exact: ``try_acquire(cost, now + d)`` passes for ``d = retry_after(cost, now)``
        (with nothing else consuming meanwhile) and fails for every smaller float wait.

        Raises:
            InvalidArgument, WrongType: as :meth:`try_acquire`.
        """
        self._cost(cost)
        now = check_clock_time(now, "now")
        effective = now if now >= self._last else self._last
        ready = self._ready_time(cost)
        if effective >= ready:
            return 0.0
        return _min_wait(now, ready)

    def tokens(self, now: float) -> float:
        """Tokens available at time ``now``: a float in ``[0, burst]``."""
        now = check_clock_time(now, "now")
        now = max(now, self._last)
        debt = self._tat - now
        if debt <= 0.0:
            return float(self._burst)
        return min(float(self._burst), max(0.0, self._burst - debt * self._rate))

    def is_full(self, now: float) -> bool:
        """True if the bucket holds ``burst`` tokens at ``now`` (it equals a fresh bucket)."""
        now = check_clock_time(now, "now")
        return self._tat <= max(now, self._last)

    def __repr__(self) -> str:
        return f"RateLimit(ops_per_second={self._rate!r}, burst={self._burst})"


# --- flow budgets -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FlowBudget:
    """A per-epoch budget of ops: ``spent`` of ``limit`` used in ``epoch``.

    An immutable value with a join (:meth:`merge`): replicas of a budget
    merged in any order agree (commutative, associative, idempotent), and
    merging never raises the limit nor lowers spend or epoch.  ``spent`` may
    exceed ``limit`` after a merge lowered the limit; :attr:`headroom` is then 0.

    Args:
        limit: ops allowed per epoch (int, 0..2**64-1).
        spent: ops already charged in ``epoch`` (int, 0..2**64-1).
        epoch: the epoch the spend belongs to (0..2**64-1).

    Raises:
        WrongType, InvalidArgument: on a bad field.
    """

    limit: int
    spent: int = 0
    epoch: int = 0

    def __post_init__(self) -> None:
        check_int(self.limit, "limit", minimum=0, maximum=_U64_MAX)
        check_int(self.spent, "spent", minimum=0, maximum=_U64_MAX)
        check_epoch(self.epoch)

    @property
    def headroom(self) -> int:
        """Ops that may still be charged in this epoch."""
        return max(0, self.limit - self.spent)

    def can_charge(self, cost: int) -> bool:
        """True if charging ``cost`` ops (int >= 0) stays within the limit."""
        check_int(cost, "cost", minimum=0, maximum=_U64_MAX)
        return self.spent + cost <= self.limit

    def charge(self, cost: int) -> FlowBudget | None:
        """The budget after charging ``cost`` ops, or None if that would pass the limit.

        ``None`` means the charge is refused; the budget is unchanged (it is a value).

        Raises:
            WrongType, InvalidArgument: ``cost`` is not an int in 0..2**64-1.
        """
        if not self.can_charge(cost):
            return None
        return FlowBudget(self.limit, self.spent + cost, self.epoch)

    def rotate_epoch(self, epoch: int) -> FlowBudget:
        """The budget at ``epoch``: spend reset to 0 if ``epoch`` is later, else unchanged.

        Raises:
            WrongType, InvalidArgument: ``epoch`` is not a valid epoch.
        """
        check_epoch(epoch)
        if epoch > self.epoch:
            return FlowBudget(self.limit, 0, epoch)
        return self

    def merge(self, other: FlowBudget) -> FlowBudget:
        """The join of two replicas: min limit, max spent, max epoch.

        Raises:
            WrongType: ``other`` is not a FlowBudget.
        """
        if type(other) is not FlowBudget:
            raise WrongType(f"other must be a FlowBudget, got {type(other).__name__} {other!r}")
        return FlowBudget(
            min(self.limit, other.limit),
            max(self.spent, other.spent),
            max(self.epoch, other.epoch),
        )


class _Budget:
    """The limiter's mutable copy of a peer's :class:`FlowBudget` (hot path)."""

    __slots__ = ("epoch", "limit", "spent")

    def __init__(self, limit: int, spent: int, epoch: int) -> None:
        self.limit = limit
        self.spent = spent
        self.epoch = epoch

    def value(self) -> FlowBudget:
        return FlowBudget(self.limit, self.spent, self.epoch)


# --- statistics and snapshots ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RateLimiterStatistics:
    """Counters of a :class:`RateLimiter` (Rust names), plus tracking-limit denials.

    Attributes:
        operations_allowed: requests that passed.
        global_limit_hits: denials by the global bucket.
        peer_limit_hits: denials by a peer bucket.
        flow_budget_hits: denials by a flow budget.
        tracked_peers: peer buckets held now.
        tracking_limit_hits: new peers denied because the table was full of
            buckets that still hold spend.
    """

    operations_allowed: int
    global_limit_hits: int
    peer_limit_hits: int
    flow_budget_hits: int
    tracked_peers: int
    tracking_limit_hits: int = 0


@dataclass(frozen=True, slots=True)
class PeerBucketState:
    """One peer bucket in a :class:`RateLimiterSnapshot`.

    ``debt`` is ``tat - now`` in seconds at snapshot time (the time until the
    bucket is full again; negative for an adapted bucket that has been full for
    ``-debt`` seconds); ``ops_per_second`` is the peer's rate then.
    """

    peer_id: DeviceId
    debt: float
    ops_per_second: float


@dataclass(frozen=True, slots=True)
class RateLimiterSnapshot:
    """The state of a :class:`RateLimiter` as an immutable value (see :meth:`RateLimiter.snapshot`).

    Times are relative (debts in seconds), so a snapshot restores onto any
    clock.  Full, non-adapted buckets are left out: a fresh bucket equals them.

    Attributes:
        global_debt: seconds until the global bucket is full again (>= 0).
        global_ops_per_second: the global rate the debt was measured at.
        peers: the peer buckets that hold spend or an adapted rate.
        budgets: the flow budgets, by peer.
        epoch: the latest epoch rotated to.
        statistics: the counters.
        clock_lag: seconds the limiter's time was ahead of its clock's reading
            (after the clock stepped back); restored, so that a restored
            limiter waits for the clock to catch up exactly as the original would.
        taken_at: the limiter's time when the snapshot was taken (information
            only: restore never compares it with another clock).
    """

    global_debt: float
    global_ops_per_second: float
    peers: tuple[PeerBucketState, ...]
    budgets: tuple[tuple[DeviceId, FlowBudget], ...]
    epoch: int
    statistics: RateLimiterStatistics
    clock_lag: float = 0.0
    taken_at: float = field(default=0.0, compare=False)


def _debt_at(tat: float, now: float) -> float:
    """``tat - now``, rounded so that ``now' + debt >= tat`` for every ``now' >= now``."""
    debt = tat - now
    while now + debt < tat:
        debt = _nextafter(debt, _INF)
    return debt


# --- the limiter ----------------------------------------------------------------------


class RateLimiter:
    """Global + per-peer rate limiting with flow budgets and optional AIMD.

    Args:
        config: the limits (a :class:`RateLimitConfig`; default limits if None).
        clock: the time source (keyword; default :class:`~aura_sync.effects.SystemClock`).

    Raises:
        WrongType: ``config`` is not a RateLimitConfig or ``clock`` has no ``now()``.
    """

    # Per-peer state is a 3-item list [tat, interval, slack1]: the theoretical
    # arrival time (s), the seconds per op (1 / rate) and the pass slack of a
    # cost-1 request ((peer_burst - 1) * interval).  One dict lookup finds all
    # of it and the update happens in place, so a decision hashes the peer once.
    __slots__ = (
        "_allowed",
        "_buckets",
        "_budget_hits",
        "_budgets",
        "_config",
        "_epoch",
        "_g_burst",
        "_g_hits",
        "_g_inc1",
        "_g_interval",
        "_g_slack1",
        "_g_tat",
        "_half_gap",
        "_hw",
        "_max_cost",
        "_max_peers",
        "_next_sweep",
        "_now",
        "_p_burst",
        "_p_hits",
        "_p_interval",
        "_p_slack1",
        "_rates",
        "_tracking_hits",
    )

    def __init__(
        self, config: RateLimitConfig | None = None, *, clock: Clock | None = None
    ) -> None:
        if config is None:
            config = RateLimitConfig()
        if type(config) is not RateLimitConfig:
            raise WrongType(
                f"config must be a RateLimitConfig, got {type(config).__name__} {config!r}"
            )
        if clock is None:
            clock = SystemClock()
        if not callable(getattr(clock, "now", None)):
            raise WrongType(f"clock must be a Clock, got {type(clock).__name__} {clock!r}")
        self._config = config
        # SystemClock.now is time.monotonic: call it directly (one Python frame less).
        self._now: Callable[[], float] = time.monotonic if type(clock) is SystemClock else clock.now
        self._hw = -_INF
        self._g_burst = config.global_burst
        self._g_interval = 1.0 / config.global_ops_per_second
        self._g_inc1 = self._g_interval
        self._g_slack1 = (config.global_burst - 1) * self._g_interval
        self._g_tat = -_INF
        self._p_burst = config.peer_burst
        self._p_interval = 1.0 / config.peer_ops_per_second
        self._p_slack1 = (config.peer_burst - 1) * self._p_interval
        self._max_cost = config.max_cost
        self._max_peers = config.max_tracked_peers
        # Keyed by ``DeviceId.raw`` (bytes): a bytes key hashes in C with its hash
        # cached, where DeviceId.__hash__ is a Python call on every lookup.
        self._buckets: dict[bytes, list[float]] = {}
        self._rates: dict[bytes, float] = {}
        self._budgets: dict[bytes, _Budget] = {}
        self._next_sweep = _INF
        self._half_gap = 0.0
        self._epoch = 0
        self._allowed = 0
        self._g_hits = 0
        self._p_hits = 0
        self._budget_hits = 0
        self._tracking_hits = 0

    @property
    def config(self) -> RateLimitConfig:
        """The limits this limiter enforces."""
        return self._config

    def _time(self) -> float:
        """The clock's time, never earlier than the latest time seen."""
        now = self._now()
        if now >= self._hw:
            self._hw = now
            return now
        return self._hw

    def _bad_cost(self, cost: object) -> InvalidArgument:
        return InvalidArgument(
            f"cost must be an int in 1..{self._max_cost} (min of global_burst and peer_burst), "
            f"got {type(cost).__name__} {cost!r}"
        )

    # -- the hot path ----------------------------------------------------------------

    def check_rate_limit(self, peer_id: DeviceId, cost: int = 1) -> RateLimitResult:
        """Admit or refuse one operation of ``cost`` ops for ``peer_id``, now.

        Passes only if the global bucket, the peer's bucket and the peer's flow
        budget all allow it; then the cost is taken from all three.  A denial
        takes nothing from any of them.

        Args:
            peer_id: the peer the operation is for.
            cost: ops the operation counts for, an int in 1..min(global_burst, peer_burst).

        Returns:
            :data:`ALLOWED`, or :class:`Denied` with the exact ``retry_after``
            (seconds) and the :class:`DenialReason`.

        Raises:
            InvalidArgument: ``cost`` is not an int in range (a ``ValueError``).
            WrongType: ``peer_id`` is not a DeviceId.
        """
        # The table is keyed by the id's 16 raw bytes (a slot read; bytes hash in C).
        # Anything but a DeviceId fails the read, the lookup or the type test and
        # goes to _check_new_peer, which validates it (WrongType).
        try:
            key = peer_id._raw
            bucket = self._buckets[key]
        except (AttributeError, KeyError, TypeError):
            return self._check_new_peer(peer_id, cost)
        if type(peer_id) is not DeviceId:
            return self._check_new_peer(peer_id, cost)
        if cost is not _ONE:  # CPython caches small ints: every int 1 takes the fast path
            return self._check_cost(key, cost, bucket)
        raw = self._now()
        now = self._hw
        if raw >= now:
            now = self._hw = raw
        g_tat = self._g_tat
        p_tat = bucket[0]
        g_ready = g_tat - self._g_slack1
        p_ready = p_tat - bucket[2]
        if now >= g_ready and now >= p_ready:
            if self._budgets and not self._charge_budget(key, 1):
                return self._deny_budget()
            self._g_tat = (g_tat if g_tat > now else now) + self._g_inc1
            bucket[0] = (p_tat if p_tat > now else now) + bucket[1]
            self._allowed += 1
            return ALLOWED
        if self._budgets and self._over_budget(key, 1):
            return self._deny_budget()
        result: Denied = _new_object(Denied)
        if g_ready >= p_ready:
            self._g_hits += 1
            ready = g_ready
            _set_reason(result, _GLOBAL)
        else:
            self._p_hits += 1
            ready = p_ready
            _set_reason(result, _PEER)
        # The exact wait (see _min_wait), inlined: raw < ready here.  raw + wait
        # reaches ready from half a float gap below ready on (the gap is cached:
        # it changes only when ready crosses a power of two); exactly at that
        # tie it rounds to even, so half of the time the answer is the float
        # above.  Whatever the guess, it is returned only once checked against
        # the definition: raw + wait >= ready > raw + (the float below wait).
        wait = (ready - raw) - self._half_gap
        if raw + wait < ready:
            wait += wait * _EPS53  # the float above (or wait itself: the check fails)
            if raw + wait < ready or raw + wait * _PRED1 >= ready:
                wait = self._exact_wait(raw, ready)
        elif raw + wait * _PRED1 >= ready:
            wait = self._exact_wait(raw, ready)
        _set_retry_after(result, wait)
        return result

    def _exact_wait(self, now: float, t: float) -> float:
        """:func:`_min_wait`, refreshing the half gap the inlined guess uses."""
        self._half_gap = 0.5 * (t - t * _PRED1)
        return _min_wait(now, t)

    def _check_cost(self, key: bytes, cost: int, bucket: list[float]) -> RateLimitResult:
        """``check_rate_limit`` for a tracked peer (raw id ``key``), any cost (validated here)."""
        if cost.__class__ is not int or not 0 < cost <= self._max_cost:
            raise self._bad_cost(cost)
        raw = self._now()
        now = self._hw
        if raw >= now:
            now = self._hw = raw
        interval = self._g_interval
        g_tat = self._g_tat
        g_ready = g_tat - (self._g_burst - cost) * interval
        p_tat = bucket[0]
        p_ready = p_tat - (self._p_burst - cost) * bucket[1]
        if now >= g_ready and now >= p_ready:
            if self._budgets and not self._charge_budget(key, cost):
                return self._deny_budget()
            self._g_tat = (g_tat if g_tat > now else now) + cost * interval
            bucket[0] = (p_tat if p_tat > now else now) + cost * bucket[1]
            self._allowed += 1
            return ALLOWED
        if self._budgets and self._over_budget(key, cost):
            return self._deny_budget()
        if g_ready >= p_ready:
            self._g_hits += 1
            return _denied(_min_wait(raw, g_ready), _GLOBAL)
        self._p_hits += 1
        return _denied(_min_wait(raw, p_ready), _PEER)

    def _over_budget(self, key: bytes, cost: int) -> bool:
        """True if the peer (raw id ``key``) has a flow budget that cannot take ``cost`` more."""
        budget = self._budgets.get(key)
        return budget is not None and budget.spent + cost > budget.limit

    def _charge_budget(self, key: bytes, cost: int) -> bool:
        """Charge ``cost`` to the flow budget of the peer (raw id ``key``); False if refused."""
        budget = self._budgets.get(key)
        if budget is None:
            return True
        if budget.spent + cost > budget.limit:
            return False
        budget.spent += cost
        return True

    def _deny_budget(self) -> Denied:
        self._budget_hits += 1
        return _denied(self._config.flow_budget_retry_after, DenialReason.FLOW_BUDGET)

    def _check_new_peer(self, peer_id: DeviceId, cost: int) -> RateLimitResult:
        """``check_rate_limit`` for a peer without a bucket (its bucket would be full)."""
        if cost.__class__ is not int or not 0 < cost <= self._max_cost:
            raise self._bad_cost(cost)
        key = check_peer(peer_id)._raw
        raw = self._now()
        now = self._hw
        if raw >= now:
            now = self._hw = raw
        interval = self._g_interval
        g_ready = self._g_tat - (self._g_burst - cost) * interval
        buckets = self._buckets
        p_ready = now
        if len(buckets) >= self._max_peers:
            if now >= self._next_sweep:
                self._sweep(now)
            if len(buckets) >= self._max_peers:
                p_ready = self._next_sweep
        if now >= g_ready and now >= p_ready:
            if self._budgets and not self._charge_budget(key, cost):
                return self._deny_budget()
            tat = self._g_tat
            self._g_tat = (tat if tat > now else now) + cost * interval
            interval = self._p_interval
            tat = now + cost * interval
            buckets[key] = [tat, interval, self._p_slack1]
            self._next_sweep = min(self._next_sweep, tat)
            self._allowed += 1
            return ALLOWED
        if self._budgets and self._over_budget(key, cost):
            return self._deny_budget()
        if g_ready >= p_ready:
            self._g_hits += 1
            return _denied(_min_wait(raw, g_ready), _GLOBAL)
        self._tracking_hits += 1
        return _denied(_min_wait(raw, p_ready), DenialReason.TRACKING_LIMIT)

    # -- bounded memory ----------------------------------------------------------------

    def _drop_time(self, key: bytes, tat: float) -> float:
        """When the bucket of the peer with raw id ``key`` (at ``tat``) may be dropped."""
        if key in self._rates:
            return tat + self._config.adaptive_idle_reset
        return tat

    def _sweep(self, now: float) -> int:
        """Drop every droppable bucket at ``now``; recompute the next drop time."""
        rates = self._rates
        reset = self._config.adaptive_idle_reset
        dead: list[bytes] = []
        next_drop = _INF
        for key, bucket in self._buckets.items():
            drop = bucket[0] + reset if rates and key in rates else bucket[0]
            if drop <= now:
                dead.append(key)
            elif drop < next_drop:
                next_drop = drop
        buckets = self._buckets
        for key in dead:
            del buckets[key]
            if rates:
                rates.pop(key, None)
        self._next_sweep = next_drop
        return len(dead)

    def drop_idle_buckets(self) -> int:
        """Forget every peer bucket that is full (and, if adapted, idle long enough).

        A full bucket equals a fresh one, so this loses no spend.  Call it
        periodically (the actor does); the limiter also does it lazily when
        the table reaches ``max_tracked_peers``.  Flow budgets are kept.

        Returns:
            The number of buckets dropped.
        """
        return self._sweep(self._time())

    # -- flow budgets -------------------------------------------------------------------

    def set_flow_budget(self, peer_id: DeviceId, limit: int, epoch: int) -> None:
        """Attach (or update) the flow budget of ``peer_id``: ``limit`` ops in ``epoch``.

        Updating a budget in the same epoch keeps its spend (re-setting never
        refunds); a later epoch starts with nothing spent.  At most
        ``max_tracked_peers`` budgets are attached at once.

        Raises:
            WrongType: ``peer_id`` is not a DeviceId, ``limit``/``epoch`` not ints.
            InvalidArgument: ``limit`` outside 0..2**64-1, ``epoch`` outside
                0..2**64-1 or earlier than the peer's current budget epoch, or
                too many budgets attached.
        """
        key = check_peer(peer_id)._raw
        check_int(limit, "limit", minimum=0, maximum=_U64_MAX)
        check_epoch(epoch)
        budgets = self._budgets
        current = budgets.get(key)
        if current is None:
            if len(budgets) >= self._max_peers:
                raise InvalidArgument(
                    f"cannot attach a flow budget to peer_id={peer_id}: {len(budgets)} budgets "
                    f"are attached, the most allowed (max_tracked_peers={self._max_peers})"
                )
            budgets[key] = _Budget(limit, 0, epoch)
            return
        if epoch < current.epoch:
            raise InvalidArgument(
                f"epoch={epoch} is earlier than the epoch {current.epoch} of the flow budget "
                f"of peer_id={peer_id}"
            )
        if epoch > current.epoch:
            current.spent = 0
            current.epoch = epoch
        current.limit = limit

    def clear_flow_budget(self, peer_id: DeviceId) -> bool:
        """Detach the flow budget of ``peer_id``; True if it had one.

        Raises:
            WrongType: ``peer_id`` is not a DeviceId.
        """
        return self._budgets.pop(check_peer(peer_id)._raw, None) is not None

    def flow_budget(self, peer_id: DeviceId) -> FlowBudget | None:
        """The flow budget of ``peer_id`` as a value, or None if it has none.

        Raises:
            WrongType: ``peer_id`` is not a DeviceId.
        """
        budget = self._budgets.get(check_peer(peer_id)._raw)
        return None if budget is None else budget.value()

    def rotate_epoch(self, epoch: int) -> None:
        """Move every flow budget to ``epoch``: those at an earlier epoch restart at 0 spent.

        Budgets already at ``epoch`` or later are unchanged (rotation never refunds).

        Raises:
            WrongType, InvalidArgument: ``epoch`` is not an int in 0..2**64-1.
        """
        check_epoch(epoch)
        for budget in self._budgets.values():
            if epoch > budget.epoch:
                budget.epoch = epoch
                budget.spent = 0
        self._epoch = max(self._epoch, epoch)

    @property
    def epoch(self) -> int:
        """The latest epoch passed to :meth:`rotate_epoch` (0 before any)."""
        return self._epoch

    # -- adaptive mode ---------------------------------------------------------------

    def peer_rate(self, peer_id: DeviceId) -> float:
        """The current rate (ops/s) of ``peer_id``'s bucket.

        Raises:
            WrongType: ``peer_id`` is not a DeviceId.
        """
        return self._rates.get(check_peer(peer_id)._raw, self._config.peer_ops_per_second)

    def report_outcome(self, peer_id: DeviceId, success: bool | Outcome) -> float:
        """Feed an operation's outcome to the adaptive (AIMD) mode; return the peer's rate.

        ``True``/:attr:`Outcome.SUCCESS` adds ``adaptive_increase`` ops/s if the
        peer is under load (its bucket at most half full);
        ``False``/:attr:`Outcome.OVERLOAD` multiplies its rate by
        ``adaptive_decrease``.  The rate stays within the adaptive bounds and
        the bucket keeps its token count.  Ignored (returns
        ``peer_ops_per_second``) when ``adaptive`` is off.  An overload report
        for an untracked peer is dropped if the table is full of spent buckets.

        Returns:
            The peer's rate in ops/s after the report.

        Raises:
            WrongType: ``peer_id`` is not a DeviceId, ``success`` not a bool or Outcome.
        """
        key = check_peer(peer_id)._raw
        if type(success) is bool:
            outcome = Outcome.SUCCESS if success else Outcome.OVERLOAD
        elif type(success) is Outcome:
            outcome = success
        else:
            raise WrongType(
                f"success must be a bool or an Outcome, got {type(success).__name__} {success!r}"
            )
        config = self._config
        default = config.peer_ops_per_second
        if not config.adaptive:
            return default
        now = self._time()
        old = self._rates.get(key, default)
        bucket = self._buckets.get(key)
        if outcome is Outcome.SUCCESS:
            if bucket is None or (bucket[0] - now) * old < 0.5 * self._p_burst:
                return old  # not under load
            new = min(old + config.adaptive_increase, config.adaptive_max_ops_per_second)
        else:
            new = max(old * config.adaptive_decrease, config.adaptive_min_ops_per_second)
        if new == old:
            return old
        if bucket is None:
            if len(self._buckets) >= self._max_peers:
                if now >= self._next_sweep:
                    self._sweep(now)
                if len(self._buckets) >= self._max_peers:
                    return old
            bucket = self._buckets[key] = [now, 0.0, 0.0]
        elif bucket[0] > now:
            # Keep the token deficit: the debt in seconds scales by old/new (rounded up).
            bucket[0] = now + _nextafter((bucket[0] - now) * (old / new), _INF)
        else:
            bucket[0] = now  # full either way; restarts the idle clock of the adapted rate
        interval = 1.0 / new
        bucket[1] = interval
        bucket[2] = (self._p_burst - 1) * interval
        if new == default:
            self._rates.pop(key, None)
        else:
            self._rates[key] = new
        self._next_sweep = min(self._next_sweep, self._drop_time(key, bucket[0]))
        return new

    # -- inspection --------------------------------------------------------------------

    def peer_tokens(self, peer_id: DeviceId) -> float:
        """Tokens in ``peer_id``'s bucket now (``peer_burst`` if it has none).

        Raises:
            WrongType: ``peer_id`` is not a DeviceId.
        """
        key = check_peer(peer_id)._raw
        now = self._time()
        bucket = self._buckets.get(key)
        if bucket is None or bucket[0] <= now:
            return float(self._p_burst)
        return max(0.0, self._p_burst - (bucket[0] - now) / bucket[1])

    def global_tokens(self) -> float:
        """Tokens in the global bucket now."""
        now = self._time()
        if self._g_tat <= now:
            return float(self._g_burst)
        return max(0.0, self._g_burst - (self._g_tat - now) / self._g_interval)

    def statistics(self) -> RateLimiterStatistics:
        """The counters so far and the number of tracked peer buckets."""
        return RateLimiterStatistics(
            operations_allowed=self._allowed,
            global_limit_hits=self._g_hits,
            peer_limit_hits=self._p_hits,
            flow_budget_hits=self._budget_hits,
            tracked_peers=len(self._buckets),
            tracking_limit_hits=self._tracking_hits,
        )

    # -- snapshot and restore ----------------------------------------------------------

    def snapshot(self) -> RateLimiterSnapshot:
        """The limiter's state as an immutable value, for :meth:`restore`.

        Holds the spend of every bucket that is not full (as a debt in
        seconds, rounded up), the adapted rates, the flow budgets, the epoch
        and the counters.
        """
        raw = self._now()
        now = self._time()
        default = self._config.peer_ops_per_second
        rates = self._rates
        peers = []
        for key, bucket in self._buckets.items():
            tat = bucket[0]
            rate = rates.get(key)
            if tat > now:
                debt = _debt_at(tat, now)
                peers.append(
                    PeerBucketState(DeviceId(key), debt, default if rate is None else rate)
                )
            elif rate is not None:
                peers.append(PeerBucketState(DeviceId(key), tat - now, rate))
        global_debt = _debt_at(self._g_tat, now) if self._g_tat > now else 0.0
        return RateLimiterSnapshot(
            global_debt=global_debt,
            global_ops_per_second=self._config.global_ops_per_second,
            peers=tuple(peers),
            budgets=tuple((DeviceId(key), b.value()) for key, b in self._budgets.items()),
            epoch=self._epoch,
            statistics=self.statistics(),
            clock_lag=_debt_at(now, raw) if now > raw else 0.0,
            taken_at=now,
        )

    @classmethod
    def restore(
        cls,
        config: RateLimitConfig,
        snapshot: RateLimiterSnapshot,
        *,
        clock: Clock | None = None,
    ) -> RateLimiter:
        """A limiter with ``config`` that continues from ``snapshot``, on ``clock``.

        Debts are restored relative to the clock's time now, so the restored
        limiter never admits more than the original would have: time spent
        between snapshot and restore is not credited, and if the original's
        time was ahead of its clock (the clock had stepped back) the restored
        limiter is ahead by as much.  If ``config`` changes
        a rate, each bucket keeps its token deficit (debts are rescaled); in
        non-adaptive mode every peer returns to ``peer_ops_per_second``, in
        adaptive mode adapted rates are clamped to the new bounds.  Buckets are
        restored even past ``max_tracked_peers`` (dropping spend is never
        allowed); no new peer is admitted until enough of them refill.

        Raises:
            WrongType: ``config`` or ``snapshot`` has the wrong type.
        """
        if type(snapshot) is not RateLimiterSnapshot:
            raise WrongType(
                f"snapshot must be a RateLimiterSnapshot, got {type(snapshot).__name__} "
                f"{snapshot!r}"
            )
        limiter = cls(config, clock=clock)
        now = limiter._time()
        if snapshot.clock_lag > 0.0:
            # The original's time was ahead of its clock: keep waiting for the clock.
            now = limiter._hw = now + snapshot.clock_lag
        if snapshot.global_debt > 0.0:
            debt = snapshot.global_debt
            if snapshot.global_ops_per_second != config.global_ops_per_second:
                debt = _nextafter(
                    debt * (snapshot.global_ops_per_second / config.global_ops_per_second), _INF
                )
            limiter._g_tat = now + debt
        default = config.peer_ops_per_second
        burst = config.peer_burst
        for state in snapshot.peers:
            rate = default
            if config.adaptive:
                rate = min(
                    max(state.ops_per_second, config.adaptive_min_ops_per_second),
                    config.adaptive_max_ops_per_second,
                )
            debt = state.debt
            if debt > 0.0 and rate != state.ops_per_second:
                debt = _nextafter(debt * (state.ops_per_second / rate), _INF)
            tat = now + debt
            interval = 1.0 / rate
            key = state.peer_id.raw
            limiter._buckets[key] = [tat, interval, (burst - 1) * interval]
            if rate != default:
                limiter._rates[key] = rate
            drop = limiter._drop_time(key, tat)
            limiter._next_sweep = min(limiter._next_sweep, drop)
        for peer_id, budget in snapshot.budgets:
            limiter._budgets[peer_id.raw] = _Budget(budget.limit, budget.spent, budget.epoch)
        limiter._epoch = snapshot.epoch
        stats = snapshot.statistics
        limiter._allowed = stats.operations_allowed
        limiter._g_hits = stats.global_limit_hits
        limiter._p_hits = stats.peer_limit_hits
        limiter._budget_hits = stats.flow_budget_hits
        limiter._tracking_hits = stats.tracking_limit_hits
        return limiter

    def __repr__(self) -> str:
        return f"RateLimiter({self._config!r}, tracked_peers={len(self._buckets)})"
