"""``RateLimiterActor``: one ``RateLimiter`` answering the requests of
:mod:`aura_sync.messages.rate_limit`, each with the core's own value.

A denial is an answer (``Denied``), a bad argument an ``ErrorReply``.  The live
limiter sits in the stash (:data:`STASH_KEY`): a restarted incarnation continues
with all its spend, so a crash never resets a limit.  A ``DropIdleBuckets`` told to
itself every ``drop_idle_interval`` seconds keeps memory bounded.
"""

from __future__ import annotations

from typing import Any, Final

from aura_sync.actors._faults import FaultInjectionMixin, Ticker, check_stash, resolve_effects
from aura_sync.actors.base import AuraActor, forward, handles
from aura_sync.effects import Clock, Scheduler, check_seconds
from aura_sync.infrastructure import rate_limit as core
from aura_sync.messages import rate_limit as m

__all__ = ["DEFAULT_DROP_IDLE_INTERVAL", "STASH_KEY", "RateLimiterActor"]

STASH_KEY: Final = "aura_sync.rate_limiter"  # the live RateLimiter in the child's stash
DEFAULT_DROP_IDLE_INTERVAL: Final = 60.0  # seconds between drops of the idle buckets


class RateLimiterActor(FaultInjectionMixin, AuraActor):
    """The rate limiter actor (a limiter already in ``stash`` is used, config and all);
    ``drop_idle_interval`` > 0 s.  Raises WrongType / InvalidArgument."""

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
        clock, scheduler = resolve_effects(clock, scheduler)
        interval = check_seconds(drop_idle_interval, "drop_idle_interval", allow_zero=False)
        if STASH_KEY not in stash:
            stash[STASH_KEY] = core.RateLimiter(config, clock=clock)
        limiter: core.RateLimiter = stash[STASH_KEY]
        self.limiter: Final = limiter
        self._check = limiter.check_rate_limit
        self._ticker = Ticker(scheduler, interval, None, m.DropIdleBuckets())

    def on_start(self) -> None:
        self._ticker.arm(self.address)

    def on_stop(self) -> None:
        self._ticker.cancel()

    def on_crash(self, exc: BaseException) -> None:
        self._ticker.cancel()  # the limiter, with all its spend, stays in the stash

    @handles(m.CheckRateLimit)  # the hot path, without forward's indirection
    def _check_rate_limit(self, msg: m.CheckRateLimit) -> core.RateLimitResult:
        return self._check(msg.peer_id, msg.cost)

    @handles(m.DropIdleBuckets)
    def _drop_idle(self, msg: m.DropIdleBuckets) -> int:
        self._ticker.arm()  # the next periodic drop: an interval from this one
        return self.limiter.drop_idle_buckets()

    _would_exceed = forward("limiter", "would_exceed_limit", m.WouldExceedLimit)
    _available = forward("limiter", "available_tokens", m.GetAvailableTokens)
    _report_outcome = forward("limiter", "report_outcome", m.ReportOutcome)
    _peer_rate = forward("limiter", "peer_rate", m.GetPeerRate)
    _set_flow_budget = forward("limiter", "set_flow_budget", m.SetFlowBudget)
    _clear_flow_budget = forward("limiter", "clear_flow_budget", m.ClearFlowBudget)
    _flow_budget = forward("limiter", "flow_budget", m.GetFlowBudget)
    _rotate_epoch = forward("limiter", "rotate_epoch", m.RotateEpoch)
    _remove_peer = forward("limiter", "remove_peer", m.RemoveRateLimitPeer)
    _reset = forward("limiter", "reset", m.ResetRateLimiter)
    _statistics = forward("limiter", "statistics", m.GetRateLimiterStatistics)
    _snapshot = forward("limiter", "snapshot", m.SnapshotRateLimiter)
    _restore = forward("limiter", "restore", m.RestoreRateLimiter)
