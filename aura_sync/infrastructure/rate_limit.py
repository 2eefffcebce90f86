"""Rate limiting: :class:`RateLimiter`, a global :class:`RateLimit` bucket plus one per
peer key, flow budgets and AIMD.

Property-tested: a request passes only if the global bucket, the peer's bucket and
its flow budget allow it, and a denial consumes nothing; a token denial's
``retry_after`` is exact; a clock stepping back mints nothing; at most
``max_tracked_peers`` buckets are held, only full ones dropped.  Peers are hashable
keys (a DeviceId is its raw bytes).  One owner (an actor) calls it: not thread-safe.
"""

from __future__ import annotations

import enum
import math
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import ClassVar, Final, TypeAlias

from aura_sync._checks import check_bool, check_int, check_u64
from aura_sync.effects import Clock, SystemClock, check_seconds
from aura_sync.errors import InvalidArgument, WrongType
from aura_sync.ids import DeviceId, check_epoch
from aura_sync.infrastructure.gcra import (
    _EPS53,
    _INF,
    _NEG_INF,
    _PRED1,
    RateLimit,
    _check_bucket,
    _check_rate,
    _debt_at,
    _min_wait,
    _rescaled,
)
from aura_sync.messages._base import Message, message

__all__ = [  # noqa: RUF022  (grouped: the bucket and the limiter, then their values)
    "RateLimit",
    "RateLimitConfig",
    "RateLimiter",
    "ALLOWED",
    "Allowed",
    "Denied",
    "DenialReason",
    "RateLimitResult",
    "FlowBudget",
    "Outcome",
    "PeerBucketState",
    "RateLimiterSnapshot",
    "RateLimiterStatistics",
]


def _key(peer: object) -> Hashable:
    """The table key of ``peer``: a DeviceId's raw bytes, else the (hashable) value itself."""
    if peer.__class__ is DeviceId:
        return peer._raw
    try:
        hash(peer)
    except TypeError:
        kind = type(peer).__name__
        raise WrongType(f"peer must be hashable (str, bytes...), got {kind} {peer!r}") from None
    return peer


# --- values that cross the actor boundary --------------------------------------------


class DenialReason(enum.Enum):
    """Which limit refused a request."""

    GLOBAL = 1  # the global bucket (all peers together) is out of tokens
    PEER = 2  # the peer's own bucket is out of tokens
    FLOW_BUDGET = 3  # the peer's flow budget for its epoch is spent
    TRACKING_LIMIT = 4  # a new peer, and max_tracked_peers buckets all still hold spend


class Outcome(enum.Enum):
    """An operation's outcome, for AIMD: SUCCESS (increase under load) or OVERLOAD (decrease)."""

    SUCCESS = 1
    OVERLOAD = 2


@message(0x0021)
class Allowed(Message):
    """The request passed; its cost was taken."""

    allowed: ClassVar[bool] = True


ALLOWED: Final = Allowed()  # the one Allowed the limiter returns (all compare equal anyway)


@message(0x0024)
class Denied(Message):
    """The request was refused; nothing was consumed.  ``retry_after`` (s) is exact for
    GLOBAL and PEER, a lower bound for TRACKING_LIMIT, ``flow_budget_retry_after`` for
    FLOW_BUDGET (only an epoch rotation refills a budget)."""

    retry_after: float
    reason: DenialReason
    allowed: ClassVar[bool] = False


RateLimitResult: TypeAlias = Allowed | Denied  # what check_rate_limit returns; use ``match``

# The fast path builds a Denied through its slot setters (no frozen __setattr__).
_new_object = object.__new__
_set_retry_after = Denied.__dict__["retry_after"].__set__
_set_reason = Denied.__dict__["reason"].__set__
_ONE: Final = 1
_GLOBAL: Final = DenialReason.GLOBAL
_PEER: Final = DenialReason.PEER


@message(0x0028)
class FlowBudget(Message):
    """A per-epoch budget: ``spent`` of ``limit`` ops used in ``epoch`` (ints, 0..2**64-1)."""

    limit: int
    spent: int = 0
    epoch: int = 0

    @property
    def headroom(self) -> int:
        """Ops that may still be charged in this epoch."""
        return max(0, self.limit - self.spent)

    def can_charge(self, cost: int) -> bool:
        """True if charging ``cost`` ops stays within the limit."""
        return self.spent + cost <= self.limit

    def charge(self, cost: int) -> FlowBudget | None:
        """The budget after charging ``cost`` ops, or None past the limit."""
        ok = self.can_charge(cost)
        return FlowBudget(self.limit, self.spent + cost, self.epoch) if ok else None

    def rotate_epoch(self, epoch: int) -> FlowBudget:
        """The budget at ``epoch``: nothing spent if ``epoch`` is later, else unchanged."""
        return FlowBudget(self.limit, 0, epoch) if epoch > self.epoch else self


@message(0x002E)
class RateLimiterStatistics(Message):
    """Counters of a :class:`RateLimiter` (Rust names), the tracked buckets, tracking denials."""

    operations_allowed: int
    global_limit_hits: int
    peer_limit_hits: int
    flow_budget_hits: int
    tracked_peers: int
    tracking_limit_hits: int = 0


@message(0x0038)
class PeerBucketState(Message):
    """One peer of a snapshot: ``debt``, seconds until its bucket is full, and its rate."""

    key: bytes | str | int
    debt: float
    ops_per_second: float
    budget: FlowBudget | None = None


@message(0x0039)
class RateLimiterSnapshot(Message):
    """What a limiter persists so that, restored, it never admits more: every bucket's debt
    (seconds from the clock's reading, rounded up), adapted rates, flow budgets, epoch."""

    epoch: int
    global_debt: float
    global_ops_per_second: float
    peers: tuple[PeerBucketState, ...]


# --- configuration ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RateLimitConfig:
    """Limits of a :class:`RateLimiter`, checked (WrongType / InvalidArgument): rates in
    ops/s > 0, bursts ints in 1..2**53; ``max_tracked_peers`` bounds buckets and budgets;
    an adapted full bucket is kept ``adaptive_idle_reset`` s."""

    global_ops_per_second: float = 1000.0
    global_burst: int = 1000
    peer_ops_per_second: float = 100.0
    peer_burst: int = 200
    max_tracked_peers: int = 10_000
    adaptive: bool = False
    adaptive_min_ops_per_second: float = 1.0
    adaptive_max_ops_per_second: float = 1000.0
    adaptive_increase: float = 1.0  # ops/s added on a success under load, >= 0
    adaptive_decrease: float = 0.9  # the factor on overload, in (0, 1]
    adaptive_idle_reset: float = 60.0
    flow_budget_retry_after: float = 1.0

    def __post_init__(self) -> None:
        setf = object.__setattr__
        for what in ("global", "peer"):
            rate, burst = f"{what}_ops_per_second", f"{what}_burst"
            setf(self, rate, _check_bucket(getattr(self, rate), getattr(self, burst), rate, burst))
        for name in ("adaptive_min_ops_per_second", "adaptive_max_ops_per_second"):
            setf(self, name, _check_rate(getattr(self, name), name))
        check_int(self.max_tracked_peers, "max_tracked_peers", minimum=1, maximum=2**62)
        check_bool(self.adaptive, "adaptive")
        for name, low, high in (("adaptive_increase", 0.0, 1e300), ("adaptive_decrease", 0.0, 1.0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise WrongType(f"{name} must be a number, got {type(value).__name__} {value!r}")
            if not low <= value <= high or (name == "adaptive_decrease" and value == 0.0):
                raise InvalidArgument(f"{name} must be in [{low}, {high}], got {value!r}")
            setf(self, name, float(value))
        for name in ("adaptive_idle_reset", "flow_budget_retry_after"):
            setf(self, name, check_seconds(getattr(self, name), name))
        low, high = self.adaptive_min_ops_per_second, self.adaptive_max_ops_per_second
        if low > high:
            raise InvalidArgument(
                f"adaptive_min_ops_per_second {low!r} > adaptive_max_ops_per_second {high!r}"
            )
        if self.adaptive and not low <= self.peer_ops_per_second <= high:
            raise InvalidArgument(
                f"peer_ops_per_second={self.peer_ops_per_second!r} must lie within the adaptive "
                f"bounds [{low!r}, {high!r}] when adaptive=True"
            )

    @property
    def max_cost(self) -> int:
        """The largest cost a request may have: ``min(global_burst, peer_burst)``."""
        return min(self.global_burst, self.peer_burst)


# --- the limiter --------------------------------------------------------------------


class RateLimiter:
    """Global and per-peer :class:`RateLimit` buckets (sharing the limiter's clock
    high-water mark), flow budgets and optional AIMD.  WrongType for a bad config or clock."""

    def __init__(
        self, config: RateLimitConfig | None = None, *, clock: Clock | None = None
    ) -> None:
        config = RateLimitConfig() if config is None else config
        if type(config) is not RateLimitConfig:
            raise WrongType(f"config must be a RateLimitConfig, got {type(config).__name__}")
        clock = SystemClock() if clock is None else clock
        if not callable(getattr(clock, "now", None)):
            raise WrongType(f"clock must be a Clock, got {type(clock).__name__} {clock!r}")
        self.config: Final = config  # the limits this limiter enforces
        # SystemClock.now is time.monotonic: call it directly (one Python frame less).
        self._now: Callable[[], float] = time.monotonic if type(clock) is SystemClock else clock.now
        self._hw = _NEG_INF
        self._half_gap = 0.0
        peer = RateLimit(config.peer_ops_per_second, config.peer_burst)
        self._default = (peer._rate, peer._burst, peer._interval, peer._slack1)
        self._budget_denial = Denied(config.flow_budget_retry_after, DenialReason.FLOW_BUDGET)
        self.reset()

    def reset(self) -> None:
        """As new, but never using a time before the latest it has seen."""
        self._global = RateLimit(self.config.global_ops_per_second, self.config.global_burst)
        self._buckets: dict[Hashable, RateLimit] = {}
        self._budgets: dict[Hashable, FlowBudget] = {}
        self._next_sweep = _INF
        self._epoch = self._allowed = 0
        self._hits = [0, 0, 0, 0, 0]  # denials, indexed by DenialReason.value

    @property
    def epoch(self) -> int:
        """The latest epoch passed to :meth:`rotate_epoch` (0 before any)."""
        return self._epoch

    def _time(self) -> float:
        """The clock's time, never earlier than the latest time seen."""
        now = self._now()
        self._hw = now = now if now >= self._hw else self._hw
        return now

    def _cost(self, cost: object) -> int:
        most = self.config.max_cost
        if cost.__class__ is not int or not 0 < cost <= most:
            raise InvalidArgument(f"cost must be an int in 1..{most} (max_cost), got {cost!r}")
        return cost

    def check_rate_limit(self, peer: Hashable, cost: int = 1) -> RateLimitResult:
        """Admit ``cost`` ops for ``peer`` now if the global bucket, the peer's and its flow
        budget allow it, taking the cost from all three; a denial takes nothing.
        InvalidArgument for a cost not an int in 1..max_cost, WrongType for an unhashable peer."""
        # The fast path (a tracked peer, cost 1, no flow budgets) computes what _decide
        # does, inlined; a hypothesis property checks that the two agree.
        key = peer._raw if peer.__class__ is DeviceId else peer
        try:
            bucket = self._buckets[key]
        except (KeyError, TypeError):
            return self._decide(_key(peer), self._cost(cost), True)
        if cost is not _ONE or self._budgets:
            return self._decide(key, self._cost(cost), True)
        raw = self._now()
        now = self._hw
        if raw >= now:
            now = self._hw = raw
        glob = self._global
        g_tat = glob._tat
        p_tat = bucket._tat
        g_ready = g_tat - glob._slack1
        p_ready = p_tat - bucket._slack1
        if now >= g_ready and now >= p_ready:
            glob._tat = (g_tat if g_tat > now else now) + glob._interval
            bucket._tat = (p_tat if p_tat > now else now) + bucket._interval
            self._allowed += 1
            return ALLOWED
        result: Denied = _new_object(Denied)
        if g_ready >= p_ready:
            ready = g_ready
            _set_reason(result, _GLOBAL)
            self._hits[1] += 1  # DenialReason.GLOBAL.value
        else:
            ready = p_ready
            _set_reason(result, _PEER)
            self._hits[2] += 1  # DenialReason.PEER.value
        # _min_wait(raw, ready) inlined: the guess uses the cached half gap below ready
        # and is kept only once checked: raw + wait >= ready > raw + (the float below).
        wait = (ready - raw) - self._half_gap
        if raw + wait < ready:
            wait += wait * _EPS53
            if raw + wait < ready or raw + wait * _PRED1 >= ready:
                self._half_gap = 0.5 * (ready - ready * _PRED1)
                wait = _min_wait(raw, ready)
        elif raw + wait * _PRED1 >= ready:
            self._half_gap = 0.5 * (ready - ready * _PRED1)
            wait = _min_wait(raw, ready)
        _set_retry_after(result, wait)
        return result

    def _decide(self, key: Hashable, cost: int, consume: bool) -> RateLimitResult:
        """The decision on checked arguments; without ``consume`` it changes nothing."""
        raw = self._now()
        now = self._hw = raw if raw >= self._hw else self._hw
        budget = self._budgets.get(key)
        if budget is not None and not budget.can_charge(cost):
            self._hits[DenialReason.FLOW_BUDGET.value] += consume
            return self._budget_denial
        g_ready = self._global._ready(cost)
        bucket = self._buckets.get(key)
        if bucket is not None:
            p_ready, reason = bucket._ready(cost), DenialReason.PEER
        else:
            p_ready, reason = self._room_at(now), DenialReason.TRACKING_LIMIT
        if now >= g_ready and now >= p_ready:
            if consume:
                self._global._take(cost, now)
                if bucket is None:
                    bucket = self._buckets[key] = RateLimit._trusted(*self._default)
                bucket._take(cost, now)
                self._next_sweep = min(self._next_sweep, self._drop_time(bucket))
                if budget is not None:
                    self._budgets[key] = FlowBudget(budget.limit, budget.spent + cost, budget.epoch)
                self._allowed += 1
            return ALLOWED
        if g_ready >= p_ready:
            p_ready, reason = g_ready, DenialReason.GLOBAL
        self._hits[reason.value] += consume
        return Denied(_min_wait(raw, p_ready), reason)

    def would_exceed_limit(self, peer: Hashable, cost: int = 1) -> bool:
        """Whether :meth:`check_rate_limit` would deny now (nothing taken or counted)."""
        cost = self._cost(cost)
        return self._decide(_key(peer), cost, False) is not ALLOWED

    def _drop_time(self, bucket: RateLimit) -> float:
        """When ``bucket`` may be dropped: once full, or idle long enough if adapted."""
        if bucket._rate != self._default[0]:
            return bucket._tat + self.config.adaptive_idle_reset
        return bucket._tat

    def _room_at(self, now: float) -> float:
        """When a new peer can get a bucket: ``now`` if there is room (after a sweep)."""
        limit = self.config.max_tracked_peers
        if len(self._buckets) >= limit and now >= self._next_sweep:
            self._sweep(now)
        return now if len(self._buckets) < limit else self._next_sweep

    def _sweep(self, now: float) -> int:
        """Drop every droppable bucket at ``now``; recompute the next drop time."""
        dead = []
        self._next_sweep = _INF
        for key, bucket in self._buckets.items():
            drop = self._drop_time(bucket)
            if drop <= now:
                dead.append(key)
            elif drop < self._next_sweep:
                self._next_sweep = drop
        for key in dead:
            del self._buckets[key]
        return len(dead)

    def drop_idle_buckets(self) -> int:
        """Forget the full buckets (adapted ones once idle long enough), no spend lost; how
        many.  The actor calls it periodically; a full table sweeps too."""
        return self._sweep(self._time())

    def remove_peer(self, peer: Hashable) -> bool:
        """Forget ``peer``'s bucket and flow budget (the global spend stays); whether it had any."""
        key = _key(peer)
        had_bucket = self._buckets.pop(key, None) is not None
        return self._budgets.pop(key, None) is not None or had_bucket

    def set_flow_budget(self, peer: Hashable, limit: int, epoch: int) -> None:
        """Attach or update ``peer``'s budget: ``limit`` ops in ``epoch`` (a later epoch starts
        at 0 spent).  InvalidArgument for values outside 0..2**64-1, an earlier epoch, or
        more than ``max_tracked_peers`` budgets."""
        key = _key(peer)
        check_u64(limit, "limit")
        check_epoch(epoch)
        current, most = self._budgets.get(key), self.config.max_tracked_peers
        if current is None and len(self._budgets) >= most:
            raise InvalidArgument(
                f"peer={peer!r} cannot get a flow budget: all max_tracked_peers={most} taken"
            )
        if current is not None and epoch < current.epoch:
            raise InvalidArgument(
                f"epoch={epoch} is earlier than the epoch {current.epoch} of peer={peer!r}'s budget"
            )
        spent = 0 if current is None else current.rotate_epoch(epoch).spent
        self._budgets[key] = FlowBudget(limit, spent, epoch)

    def clear_flow_budget(self, peer: Hashable) -> bool:
        """Detach ``peer``'s flow budget; whether it had one."""
        return self._budgets.pop(_key(peer), None) is not None

    def flow_budget(self, peer: Hashable) -> FlowBudget | None:
        """``peer``'s flow budget, or None."""
        return self._budgets.get(_key(peer))

    def rotate_epoch(self, epoch: int) -> None:
        """Move every flow budget to ``epoch`` (an earlier one restarts at 0 spent)."""
        check_epoch(epoch)
        for key, budget in self._budgets.items():
            self._budgets[key] = budget.rotate_epoch(epoch)
        self._epoch = max(self._epoch, epoch)

    def peer_rate(self, peer: Hashable) -> float:
        """The current rate (ops/s) of ``peer``'s bucket."""
        bucket = self._buckets.get(_key(peer))
        return self._default[0] if bucket is None else bucket._rate

    def report_outcome(self, peer: Hashable, success: bool | Outcome) -> float:
        """AIMD, if ``adaptive``: True/SUCCESS adds ``adaptive_increase`` under load (bucket
        at most half full), False/OVERLOAD multiplies by ``adaptive_decrease``, within the
        bounds, keeping the token count.  Returns ``peer``'s rate (ops/s)."""
        key = _key(peer)
        if type(success) is bool:
            success = Outcome.SUCCESS if success else Outcome.OVERLOAD
        elif type(success) is not Outcome:
            kind = type(success).__name__
            raise WrongType(f"success must be a bool or an Outcome, got {kind} {success!r}")
        config, bucket = self.config, self._buckets.get(key)
        old = self._default[0] if bucket is None else bucket._rate
        if not config.adaptive:
            return old
        now = self._time()
        if success is Outcome.SUCCESS:
            if bucket is None or (bucket._tat - now) * old < 0.5 * config.peer_burst:
                return old  # not under load
            new = min(old + config.adaptive_increase, config.adaptive_max_ops_per_second)
        else:
            new = max(old * config.adaptive_decrease, config.adaptive_min_ops_per_second)
        if new == old or (bucket is None and self._room_at(now) > now):
            return old
        if bucket is None:
            bucket = self._buckets[key] = RateLimit._trusted(*self._default)
        # Keep the token deficit; a full bucket restarts the idle clock of its rate.
        debt = bucket._tat - now
        bucket._tat = now + _rescaled(debt, old, new) if debt > 0.0 else now
        bucket._set_rate(new)
        self._next_sweep = min(self._next_sweep, self._drop_time(bucket))
        return new

    def peer_tokens(self, peer: Hashable) -> float:
        """Tokens in ``peer``'s bucket now (``peer_burst`` if it has none)."""
        bucket = self._buckets.get(_key(peer))
        return float(self.config.peer_burst) if bucket is None else bucket._tokens(self._time())

    def global_tokens(self) -> float:
        """Tokens in the global bucket now."""
        return self._global._tokens(self._time())

    def available_tokens(self, peer: Hashable) -> float:
        """Ops ``peer`` could spend now: the least of the global tokens, its own and its
        budget's headroom (0.0 for a new peer while the table is full of spent buckets)."""
        key, now = _key(peer), self._time()
        bucket, budget = self._buckets.get(key), self._budgets.get(key)
        if bucket is not None:
            tokens = bucket._tokens(now)
        else:
            tokens = float(self.config.peer_burst) if self._room_at(now) <= now else 0.0
        headroom = _INF if budget is None else float(budget.headroom)
        return min(tokens, headroom, self._global._tokens(now))

    def statistics(self) -> RateLimiterStatistics:
        """The counters so far and the number of tracked peer buckets."""
        _, g, p, budget, tracking = self._hits
        return RateLimiterStatistics(self._allowed, g, p, budget, len(self._buckets), tracking)

    def snapshot(self) -> RateLimiterSnapshot:
        """The state as one persistable value; WrongType for a key not bytes, str or int."""
        raw = self._now()  # debts from the clock's reading (<= the limiter's time): never shorter
        default, peers = self._default[0], []
        for key in [*self._buckets, *(k for k in self._budgets if k not in self._buckets)]:
            if not isinstance(key, bytes | str | int):
                raise WrongType(f"cannot snapshot the peer key {key!r} (not bytes, str or int)")
            bucket, budget = self._buckets.get(key), self._budgets.get(key)
            if bucket is not None and (bucket._tat > raw or bucket._rate != default):
                peers.append(PeerBucketState(key, _debt_at(bucket._tat, raw), bucket._rate, budget))
            elif budget is not None:
                peers.append(PeerBucketState(key, 0.0, default, budget))
        glob = self._global
        debt = _debt_at(glob._tat, raw) if glob._tat > raw else 0.0
        return RateLimiterSnapshot(self._epoch, debt, glob._rate, tuple(peers))

    def restore(self, snapshot: RateLimiterSnapshot) -> None:
        """Replace the state with ``snapshot``'s from now (counters at 0), never admitting more
        than the original would have (no credit for the time between; a changed rate keeps
        each token deficit).  WrongType / InvalidArgument for a bad snapshot."""
        if type(snapshot) is not RateLimiterSnapshot:
            kind = type(snapshot).__name__
            raise WrongType(f"snapshot must be a RateLimiterSnapshot, got {kind} {snapshot!r}")
        check_epoch(snapshot.epoch, "snapshot.epoch")
        old_rate = _check_rate(snapshot.global_ops_per_second, "snapshot.global_ops_per_second")
        for state in snapshot.peers:
            _check_rate(state.ops_per_second, "snapshot peer ops_per_second")
            budget = state.budget or FlowBudget(0)
            for value in (budget.limit, budget.spent, budget.epoch):
                check_u64(value, "snapshot flow budget field")
        debts = [snapshot.global_debt, *(state.debt for state in snapshot.peers)]
        if not all(type(d) is float and math.isfinite(d) for d in debts):
            raise InvalidArgument(f"snapshot debts must be finite floats, got {debts!r}")
        self.reset()
        config, now, default = self.config, self._time(), self._default[0]
        self._global._tat = now + _rescaled(snapshot.global_debt, old_rate, self._global._rate)
        low, high = config.adaptive_min_ops_per_second, config.adaptive_max_ops_per_second
        for state in snapshot.peers:
            if state.budget is not None:
                self._budgets[state.key] = state.budget
            rate = min(max(state.ops_per_second, low), high) if config.adaptive else default
            if state.debt > 0.0 or rate != default:  # else a full bucket at the default rate
                bucket = self._buckets[state.key] = RateLimit._trusted(*self._default)
                bucket._set_rate(rate)
                bucket._tat = now + _rescaled(state.debt, state.ops_per_second, rate)
                self._next_sweep = min(self._next_sweep, self._drop_time(bucket))
        self._epoch = snapshot.epoch
