"""``RateLimiterActor``: one ``RateLimiter`` behind the requests of
:mod:`aura_sync.messages.rate_limit`, one core call each, the core's value the reply.

A denial is an answer (``Denied``), a bad argument an ``ErrorReply``.  The live
limiter sits in the supervisor's stash (:data:`STASH_KEY`): a restarted incarnation
continues with all its spend, so a crash never resets a limit.  A ``DropIdleBuckets``
told to itself every ``drop_idle_interval`` seconds keeps memory bounded.
"""

from __future__ import annotations

from typing import Any, Final

from aura_sync.actors._faults import FaultInjectionMixin, Ticker, check_stash, resolve_effects
from aura_sync.actors.base import AuraActor, handles
from aura_sync.effects import Clock, Scheduler, check_seconds
from aura_sync.errors import WrongType
from aura_sync.infrastructure import rate_limit as core
from aura_sync.messages import rate_limit as m

__all__ = ["DEFAULT_DROP_IDLE_INTERVAL", "STASH_KEY", "RateLimiterActor"]

STASH_KEY: Final = "aura_sync.rate_limiter"  # the live RateLimiter in the child's stash
DEFAULT_DROP_IDLE_INTERVAL: Final = 60.0  # seconds between drops of the idle buckets


class RateLimiterActor(FaultInjectionMixin, AuraActor):
    """The rate limiter actor.  ``stash``: the dict that survives restarts (a
    ``ChildContext.stash``; a limiter already in it is used, config and all);
    ``clock``/``scheduler`` default as :func:`~aura_sync.actors._faults.resolve_effects`
    does; ``drop_idle_interval`` > 0 s.  Raises WrongType / InvalidArgument."""

    def __init__(
        self,
        config: core.RateLimitConfig | None = None,
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
        clock, self._scheduler = resolve_effects(clock, scheduler)
        self._interval = check_seconds(drop_idle_interval, "drop_idle_interval", allow_zero=False)
        limiter = stash.get(STASH_KEY)
        if limiter is None:
            limiter = stash[STASH_KEY] = core.RateLimiter(config, clock=clock)
        elif not isinstance(limiter, core.RateLimiter):
            raise WrongType(
                f"stash[{STASH_KEY!r}] must be a RateLimiter, got {type(limiter).__name__}"
            )
        self.limiter: Final[core.RateLimiter] = limiter
        self._check = limiter.check_rate_limit
        self._ticker: Ticker | None = None

    def on_start(self) -> None:
        self._ticker = Ticker(self._scheduler, self._interval, self.address, m.DropIdleBuckets())
        self._ticker.arm()

    def on_stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()

    def on_crash(self, exc: BaseException) -> None:
        self.on_stop()  # the limiter, with all its spend, stays in the stash

    @handles(m.CheckRateLimit)
    def _check_rate_limit(self, msg: m.CheckRateLimit) -> core.RateLimitResult:
        return self._check(msg.peer_id, msg.cost)

    @handles(m.WouldExceedLimit)
    def _would_exceed(self, msg: m.WouldExceedLimit) -> bool:
        return self.limiter.would_exceed_limit(msg.peer_id, msg.cost)

    @handles(m.GetAvailableTokens)
    def _available(self, msg: m.GetAvailableTokens) -> float:
        return self.limiter.available_tokens(msg.peer_id)

    @handles(m.ReportOutcome)
    def _report_outcome(self, msg: m.ReportOutcome) -> float:
        return self.limiter.report_outcome(msg.peer_id, msg.outcome)

    @handles(m.GetPeerRate)
    def _peer_rate(self, msg: m.GetPeerRate) -> float:
        return self.limiter.peer_rate(msg.peer_id)

    @handles(m.SetFlowBudget)
    def _set_flow_budget(self, msg: m.SetFlowBudget) -> None:
        self.limiter.set_flow_budget(msg.peer_id, msg.limit, msg.epoch)

    @handles(m.ClearFlowBudget)
    def _clear_flow_budget(self, msg: m.ClearFlowBudget) -> bool:
        return self.limiter.clear_flow_budget(msg.peer_id)

    @handles(m.GetFlowBudget)
    def _flow_budget(self, msg: m.GetFlowBudget) -> core.FlowBudget | None:
        return self.limiter.flow_budget(msg.peer_id)

    @handles(m.RotateEpoch)
    def _rotate_epoch(self, msg: m.RotateEpoch) -> None:
        self.limiter.rotate_epoch(msg.epoch)

    @handles(m.DropIdleBuckets)
    def _drop_idle(self, msg: m.DropIdleBuckets) -> int:
        if self._ticker is not None:
            self._ticker.arm()  # the next periodic drop: an interval from this one
        return self.limiter.drop_idle_buckets()

    @handles(m.RemoveRateLimitPeer)
    def _remove_peer(self, msg: m.RemoveRateLimitPeer) -> bool:
        return self.limiter.remove_peer(msg.peer_id)

    @handles(m.ResetRateLimiter)
    def _reset(self, msg: m.ResetRateLimiter) -> None:
        self.limiter.reset()

    @handles(m.GetRateLimiterStatistics)
    def _statistics(self, msg: m.GetRateLimiterStatistics) -> core.RateLimiterStatistics:
        return self.limiter.statistics()

    @handles(m.SnapshotRateLimiter)
    def _snapshot(self, msg: m.SnapshotRateLimiter) -> core.RateLimiterSnapshot:
        return self.limiter.snapshot()

    @handles(m.RestoreRateLimiter)
    def _restore(self, msg: m.RestoreRateLimiter) -> None:
        self.limiter.restore(msg.snapshot)
