"""Rate-limiting requests, one per ``RateLimiter`` operation, each naming the core's return
type (tags 0x0020-0x003F).  Replies are the core's own values; the core checks the values."""

from aura_sync.ids import DeviceId
from aura_sync.infrastructure import rate_limit as core
from aura_sync.messages._base import Request, message


@message(0x0020)
class CheckRateLimit(Request[core.RateLimitResult]):
    """``check_rate_limit(peer_id, cost)``: ``Allowed()`` or ``Denied(retry_after, reason)``."""

    peer_id: DeviceId
    cost: int = 1


@message(0x0022)
class ReportOutcome(Request[float]):
    """``report_outcome(peer_id, outcome)``: the peer's rate after it (ops/s)."""

    peer_id: DeviceId
    outcome: core.Outcome


@message(0x0023)
class GetPeerRate(Request[float]):
    """``peer_rate(peer_id)``."""

    peer_id: DeviceId


@message(0x0025)
class SetFlowBudget(Request[None]):
    """``set_flow_budget(peer_id, limit, epoch)``."""

    peer_id: DeviceId
    limit: int
    epoch: int


@message(0x0026)
class ClearFlowBudget(Request[bool]):
    """``clear_flow_budget(peer_id)``: True if it had one."""

    peer_id: DeviceId


@message(0x0027)
class GetFlowBudget(Request[core.FlowBudget | None]):
    """``flow_budget(peer_id)``."""

    peer_id: DeviceId


@message(0x002A)
class RotateEpoch(Request[None]):
    """``rotate_epoch(epoch)``."""

    epoch: int


@message(0x002B)
class DropIdleBuckets(Request[int]):
    """``drop_idle_buckets()``: how many were dropped."""


@message(0x002D)
class GetRateLimiterStatistics(Request[core.RateLimiterStatistics]):
    """``statistics()``."""


@message(0x002F)
class GetAvailableTokens(Request[float]):
    """``available_tokens(peer_id)``."""

    peer_id: DeviceId


@message(0x0030)
class WouldExceedLimit(Request[bool]):
    """``would_exceed_limit(peer_id, cost)`` (consumes nothing)."""

    peer_id: DeviceId
    cost: int = 1


@message(0x0031)
class RemoveRateLimitPeer(Request[bool]):
    """``remove_peer(peer_id)``: True if the limiter held anything for it."""

    peer_id: DeviceId


@message(0x0032)
class ResetRateLimiter(Request[None]):
    """``reset()``."""


@message(0x0033)
class SnapshotRateLimiter(Request[core.RateLimiterSnapshot]):
    """``snapshot()``: what would be persisted."""


@message(0x0034)
class RestoreRateLimiter(Request[None]):
    """``restore(snapshot)``."""

    snapshot: core.RateLimiterSnapshot
