"""``RateLimiterActor``: the rate-limiting concern as an actor.

Role
    Owns one :class:`~aura_sync.infrastructure.rate_limit.RateLimiter` and
    answers the messages of :mod:`aura_sync.messages.rate_limit`, one core
    call per message.  A denial is an answer, not an error: a
    :class:`~aura_sync.messages.rate_limit.RateLimitDecision` with
    ``allowed=False``, the exact ``retry_after`` and the reason.  Bad
    requests (a cost above the burst, an epoch going back) come back as
    ``ErrorReply``; the actor carries on.  ``RateLimiterClient`` in
    :mod:`aura_sync.actors.clients` wraps the asks.

Surviving restarts
    The limiter lives in the ``stash`` dict handed to every incarnation
    (a supervisor's ``ChildContext.stash``), under :data:`STASH_KEY`; a
    restarted incarnation continues with the very same limiter: the spend of
    every bucket (global and per peer, as float times on the clock), the
    flow budgets and their epoch, the adapted rates and the counters.  So a
    crash can never reset a limit: over any run, crashes included, the
    limiter admits no more than ``burst + rate * T``.

Periodic work
    Every ``drop_idle_interval`` seconds (default 60) a scheduled tick drops
    the idle (full) peer buckets so memory stays bounded; dropping never
    loses spend.  The tick is cancelled when the incarnation stops or crashes.

Layer: actors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from aura_sync.actors._faults import FaultInjectionMixin, Ticker, check_stash, resolve_effects
from aura_sync.actors._mailbox import LocalMessage
from aura_sync.actors.base import AuraActor, handles
from aura_sync.effects import Clock, Scheduler, check_seconds
from aura_sync.errors import WrongType
from aura_sync.infrastructure.rate_limit import ALLOWED, RateLimitConfig, RateLimiter
from aura_sync.messages.rate_limit import (
    ALLOWED_DECISION,
    BucketsDropped,
    CheckRateLimit,
    ClearFlowBudget,
    DropIdleBuckets,
    FlowBudgetReply,
    FlowBudgetState,
    GetFlowBudget,
    GetPeerRate,
    GetRateLimiterStatistics,
    PeerRate,
    RateLimitDecision,
    RateLimiterStatisticsReply,
    ReportOutcome,
    RotateEpoch,
    SetFlowBudget,
)

__all__ = ["DEFAULT_DROP_IDLE_INTERVAL", "STASH_KEY", "RateLimiterActor"]

STASH_KEY: Final = "aura_sync.rate_limiter"
"""Key of the :class:`RateLimiter` in the child's stash."""

DEFAULT_DROP_IDLE_INTERVAL: Final = 60.0
"""Seconds between scheduled drops of idle rate-limit buckets."""


@dataclass(frozen=True, slots=True)
class _DropTick(LocalMessage):
    """Scheduled: time to drop the idle buckets."""


_DROP_TICK: Final = _DropTick()


class RateLimiterActor(FaultInjectionMixin, AuraActor):
    """The rate limiter actor: one :class:`RateLimiter`, reached by rate-limit messages.

    Parameters
        config: the :class:`RateLimitConfig` (default: the defaults).
        clock: time source (seconds); default the scheduler's clock, else
            one process-wide :class:`~aura_sync.effects.SystemClock`.
        scheduler: delivers the idle-bucket ticks; default one on ``clock``.
        drop_idle_interval: seconds between those ticks (> 0); 60.
        stash: the dict that survives restarts (a ``ChildContext.stash``), or
            None for a private one.  If it holds a limiter already, that
            limiter (and its config) is used.
        fault_injection: honour ``InjectCrash`` (tests and demos only).

    Raises :class:`~aura_sync.errors.WrongType` /
    :class:`~aura_sync.errors.InvalidArgument` for bad arguments.

    Messages (reply): ``CheckRateLimit`` (``RateLimitDecision``);
    ``ReportOutcome``, ``GetPeerRate`` (``PeerRate``); ``SetFlowBudget``,
    ``ClearFlowBudget``, ``RotateEpoch`` (``Ack``); ``GetFlowBudget``
    (``FlowBudgetReply``); ``DropIdleBuckets`` (``BucketsDropped``);
    ``GetRateLimiterStatistics`` (``RateLimiterStatisticsReply``); ``InjectCrash``.
    """

    def __init__(
        self,
        config: RateLimitConfig | None = None,
        *,
        clock: Clock | None = None,
        scheduler: Scheduler | None = None,
        drop_idle_interval: float = DEFAULT_DROP_IDLE_INTERVAL,
        stash: dict[str, Any] | None = None,
        fault_injection: bool = False,
    ) -> None:
        super().__init__()
        self._init_faults(fault_injection)
        stash = check_stash(stash)
        clock, scheduler = resolve_effects(clock, scheduler)
        self._interval = check_seconds(drop_idle_interval, "drop_idle_interval", allow_zero=False)
        limiter = stash.get(STASH_KEY)
        if limiter is None:
            limiter = RateLimiter(config, clock=clock)
            stash[STASH_KEY] = limiter
        elif not isinstance(limiter, RateLimiter):
            raise WrongType(
                f"stash[{STASH_KEY!r}] must be a RateLimiter, got {type(limiter).__name__}"
            )
        self._limiter: RateLimiter = limiter
        self._check = limiter.check_rate_limit
        self._scheduler = scheduler
        self._ticker: Ticker | None = None

    @property
    def limiter(self) -> RateLimiter:
        """The owned core (for inspection from the actor's own thread)."""
        return self._limiter

    # --- lifecycle ---

    def on_start(self) -> None:
        """Arm the idle-bucket tick."""
        self._ticker = Ticker(self._scheduler, self._interval, self.address, _DROP_TICK)
        self._ticker.arm()

    def on_stop(self) -> None:
        """Cancel the idle-bucket tick."""
        if self._ticker is not None:
            self._ticker.cancel()

    def on_crash(self, exc: BaseException) -> None:
        """Cancel the tick (the limiter, with all its spend, stays in the stash)."""
        self.on_stop()

    # --- the hot path ---

    @handles(CheckRateLimit)
    def _check_rate_limit(self, msg: CheckRateLimit) -> RateLimitDecision:
        result = self._check(msg.peer_id, msg.cost)
        if result is ALLOWED:
            return ALLOWED_DECISION
        return RateLimitDecision.from_result(result)

    # --- adaptive mode ---

    @handles(ReportOutcome)
    def _report_outcome(self, msg: ReportOutcome) -> PeerRate:
        return PeerRate(msg.peer_id, self._limiter.report_outcome(msg.peer_id, msg.outcome))

    @handles(GetPeerRate)
    def _peer_rate(self, msg: GetPeerRate) -> PeerRate:
        return PeerRate(msg.peer_id, self._limiter.peer_rate(msg.peer_id))

    # --- flow budgets ---

    @handles(SetFlowBudget)
    def _set_flow_budget(self, msg: SetFlowBudget) -> None:
        self._limiter.set_flow_budget(msg.peer_id, msg.limit, msg.epoch)

    @handles(ClearFlowBudget)
    def _clear_flow_budget(self, msg: ClearFlowBudget) -> None:
        self._limiter.clear_flow_budget(msg.peer_id)

    @handles(GetFlowBudget)
    def _flow_budget(self, msg: GetFlowBudget) -> FlowBudgetReply:
        budget = self._limiter.flow_budget(msg.peer_id)
        state = None if budget is None else FlowBudgetState.from_budget(budget)
        return FlowBudgetReply(msg.peer_id, state)

    @handles(RotateEpoch)
    def _rotate_epoch(self, msg: RotateEpoch) -> None:
        self._limiter.rotate_epoch(msg.epoch)

    # --- maintenance and statistics ---

    @handles(DropIdleBuckets)
    def _drop_idle(self, msg: DropIdleBuckets) -> BucketsDropped:
        return BucketsDropped(self._limiter.drop_idle_buckets())

    @handles(_DropTick)
    def _drop_tick(self, msg: _DropTick) -> None:
        if self._ticker is not None:
            self._ticker.arm()
        self._limiter.drop_idle_buckets()

    @handles(GetRateLimiterStatistics)
    def _statistics(self, msg: GetRateLimiterStatistics) -> RateLimiterStatisticsReply:
        return RateLimiterStatisticsReply.from_statistics(self._limiter.statistics())
