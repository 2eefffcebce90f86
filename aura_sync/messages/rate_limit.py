"""Rate-limiting messages: every :class:`~aura_sync.infrastructure.rate_limit.RateLimiter`
operation as a request and its reply.

Tags 0x0020-0x003F.

Each request names the core operation it runs and its reply:

* :class:`CheckRateLimit` -- ``check_rate_limit(peer_id, cost)`` -> :class:`RateLimitDecision`
* :class:`ReportOutcome` -- ``report_outcome(peer_id, outcome)`` -> :class:`PeerRate`
* :class:`GetPeerRate` -- ``peer_rate(peer_id)`` -> :class:`PeerRate`
* :class:`SetFlowBudget` -- ``set_flow_budget(peer_id, limit, epoch)`` -> ``Ack``
* :class:`ClearFlowBudget` -- ``clear_flow_budget(peer_id)`` -> ``Ack``
* :class:`GetFlowBudget` -- ``flow_budget(peer_id)`` -> :class:`FlowBudgetReply`
* :class:`RotateEpoch` -- ``rotate_epoch(epoch)`` -> ``Ack``
* :class:`DropIdleBuckets` -- ``drop_idle_buckets()`` -> :class:`BucketsDropped`
* :class:`GetRateLimiterStatistics` -- ``statistics()`` -> :class:`RateLimiterStatisticsReply`

A failed request (bad cost, epoch going back, ...) is answered with an
:class:`~aura_sync.messages.common.ErrorReply`.  A denial is not a failure: it
is a :class:`RateLimitDecision` with ``allowed=False``, the exact
``retry_after`` and the :class:`~aura_sync.infrastructure.rate_limit.DenialReason`.
:meth:`RateLimitDecision.to_result` turns it back into the core's
``Allowed()``/``Denied(retry_after, reason)`` for ``match``.

Validation lives in ``__post_init__``, so a message built in code and one
decoded from bytes are checked the same way (decoding turns the error into a
:class:`~aura_sync.errors.DecodeError`).  Limits that depend on the limiter's
configuration (a cost above the burst) are checked by the core.

Layer: messages.  Imports the rate-limit core for its enums and values.
"""

from __future__ import annotations

import math
from typing import Final

from aura_sync._checks import check_peer, check_u64
from aura_sync.errors import InvalidArgument, RateLimited, WrongType
from aura_sync.ids import DeviceId, check_epoch
from aura_sync.infrastructure.rate_limit import (
    ALLOWED,
    Allowed,
    DenialReason,
    Denied,
    FlowBudget,
    Outcome,
    RateLimiterStatistics,
    RateLimitResult,
)
from aura_sync.messages._base import Message, message

__all__ = [
    "ALLOWED_DECISION",
    "BucketsDropped",
    "CheckRateLimit",
    "ClearFlowBudget",
    "DropIdleBuckets",
    "FlowBudgetReply",
    "FlowBudgetState",
    "GetFlowBudget",
    "GetPeerRate",
    "GetRateLimiterStatistics",
    "PeerRate",
    "RateLimitDecision",
    "RateLimiterStatisticsReply",
    "ReportOutcome",
    "RotateEpoch",
    "SetFlowBudget",
]

_INF: Final = math.inf


def _check_seconds(value: object, name: str) -> None:
    if type(value) is not float:
        raise WrongType(f"{name} must be a float (seconds), got {type(value).__name__} {value!r}")
    if not (math.isfinite(value) and value >= 0.0):
        raise InvalidArgument(f"{name} must be finite and >= 0 seconds, got {value!r}")


def _check_enum(value: object, enum_type: type, name: str) -> None:
    if type(value) is not enum_type:
        raise WrongType(f"{name} must be a {enum_type.__name__}, got {value!r}")


@message(0x0020)
class CheckRateLimit(Message):
    """May ``peer_id`` do an operation of ``cost`` ops now?  Reply: :class:`RateLimitDecision`.

    :ivar peer_id: the peer the operation is for.
    :ivar cost: ops it counts for (int >= 1; at most the limiter's burst, checked there).
    :raises WrongType, InvalidArgument: on a bad field.
    """

    peer_id: DeviceId
    cost: int = 1

    def __post_init__(self) -> None:
        check_peer(self.peer_id)
        check_u64(self.cost, "cost", minimum=1)


@message(0x0021)
class RateLimitDecision(Message):
    """The answer to :class:`CheckRateLimit`.

    :ivar allowed: True if the operation passed (its cost was taken).
    :ivar retry_after: seconds to wait before the same request passes
        (0.0 when allowed; see :class:`~aura_sync.infrastructure.rate_limit.Denied`).
    :ivar reason: the limit that refused it (None when allowed).
    :raises WrongType, InvalidArgument: on a bad or inconsistent field.
    """

    allowed: bool
    retry_after: float = 0.0
    reason: DenialReason | None = None

    def __post_init__(self) -> None:
        if type(self.allowed) is not bool:
            raise WrongType(
                f"allowed must be a bool, got {type(self.allowed).__name__} {self.allowed!r}"
            )
        if type(self.retry_after) is int:
            object.__setattr__(self, "retry_after", float(self.retry_after))
        _check_seconds(self.retry_after, "retry_after")
        if self.allowed:
            if self.reason is not None or self.retry_after != 0.0:
                raise InvalidArgument(
                    "an allowed decision has retry_after=0.0 and reason=None, got "
                    f"retry_after={self.retry_after!r}, reason={self.reason!r}"
                )
        else:
            _check_enum(self.reason, DenialReason, "reason of a denied decision")

    @classmethod
    def from_result(cls, result: RateLimitResult) -> RateLimitDecision:
        """The decision carrying a core result (:data:`ALLOWED_DECISION` for an allow).

        :raises WrongType: ``result`` is not an Allowed or Denied.
        """
        if type(result) is Allowed:
            return ALLOWED_DECISION
        if type(result) is Denied:
            return cls(False, result.retry_after, result.reason)
        raise WrongType(
            f"result must be an Allowed or a Denied, got {type(result).__name__} {result!r}"
        )

    def raise_if_denied(self) -> None:
        """Raise :class:`~aura_sync.errors.RateLimited` (exact ``retry_after``) if denied."""
        if not self.allowed:
            reason = self.reason.name if self.reason is not None else "denied"
            raise RateLimited(self.retry_after, f"rate limited ({reason})")

    def to_result(self) -> RateLimitResult:
        """The core's ``Allowed()`` or ``Denied(retry_after, reason)``, for ``match``."""
        if self.allowed:
            return ALLOWED
        assert self.reason is not None  # checked in __post_init__
        return Denied(self.retry_after, self.reason)


ALLOWED_DECISION: Final = RateLimitDecision(True)
"""The one allowed :class:`RateLimitDecision` (replies need no allocation)."""


@message(0x0022)
class ReportOutcome(Message):
    """Feed an operation's outcome to the adaptive mode.  Reply: :class:`PeerRate`.

    :ivar peer_id: the peer the operation went to.
    :ivar outcome: SUCCESS (additive increase under load) or OVERLOAD
        (multiplicative decrease).
    :raises WrongType: on a bad field.
    """

    peer_id: DeviceId
    outcome: Outcome

    def __post_init__(self) -> None:
        check_peer(self.peer_id)
        _check_enum(self.outcome, Outcome, "outcome")


@message(0x0023)
class GetPeerRate(Message):
    """Ask for the current rate of ``peer_id``'s bucket.  Reply: :class:`PeerRate`.

    :raises WrongType: ``peer_id`` is not a DeviceId.
    """

    peer_id: DeviceId

    def __post_init__(self) -> None:
        check_peer(self.peer_id)


@message(0x0024)
class PeerRate(Message):
    """The rate of ``peer_id``'s bucket, in ops/s (> 0, finite).

    :raises WrongType, InvalidArgument: on a bad field.
    """

    peer_id: DeviceId
    ops_per_second: float

    def __post_init__(self) -> None:
        if self.peer_id.__class__ is not DeviceId:
            check_peer(self.peer_id)
        rate = self.ops_per_second
        if rate.__class__ is float and 0.0 < rate < _INF:
            return  # the common case, valid: no call
        if type(rate) is int:
            rate = float(rate)
            object.__setattr__(self, "ops_per_second", rate)
        if type(rate) is not float:
            raise WrongType(f"ops_per_second must be a float, got {type(rate).__name__} {rate!r}")
        if not (math.isfinite(rate) and rate > 0.0):
            raise InvalidArgument(f"ops_per_second must be finite and > 0, got {rate!r}")


@message(0x0025)
class SetFlowBudget(Message):
    """Attach or update ``peer_id``'s flow budget: ``limit`` ops in ``epoch``.  Reply: Ack.

    :raises WrongType, InvalidArgument: on a bad field (limit and epoch in 0..2**64-1).
    """

    peer_id: DeviceId
    limit: int
    epoch: int

    def __post_init__(self) -> None:
        check_peer(self.peer_id)
        check_u64(self.limit, "limit")
        check_epoch(self.epoch)


@message(0x0026)
class ClearFlowBudget(Message):
    """Detach ``peer_id``'s flow budget (if any).  Reply: Ack.

    :raises WrongType: ``peer_id`` is not a DeviceId.
    """

    peer_id: DeviceId

    def __post_init__(self) -> None:
        check_peer(self.peer_id)


@message(0x0027)
class GetFlowBudget(Message):
    """Ask for ``peer_id``'s flow budget.  Reply: :class:`FlowBudgetReply`.

    :raises WrongType: ``peer_id`` is not a DeviceId.
    """

    peer_id: DeviceId

    def __post_init__(self) -> None:
        check_peer(self.peer_id)


@message(0x0028)
class FlowBudgetState(Message):
    """A :class:`~aura_sync.infrastructure.rate_limit.FlowBudget` on the wire.

    :ivar limit: ops allowed per epoch; :ivar spent: ops charged; :ivar epoch: their epoch
        (each in 0..2**64-1).
    :raises WrongType, InvalidArgument: on a bad field.
    """

    limit: int
    spent: int
    epoch: int

    def __post_init__(self) -> None:
        check_u64(self.limit, "limit")
        check_u64(self.spent, "spent")
        check_epoch(self.epoch)

    @classmethod
    def from_budget(cls, budget: FlowBudget) -> FlowBudgetState:
        """The wire form of ``budget``.

        :raises WrongType: ``budget`` is not a FlowBudget.
        """
        if type(budget) is not FlowBudget:
            raise WrongType(f"budget must be a FlowBudget, got {type(budget).__name__} {budget!r}")
        return cls(budget.limit, budget.spent, budget.epoch)

    def to_budget(self) -> FlowBudget:
        """The core's :class:`~aura_sync.infrastructure.rate_limit.FlowBudget` value."""
        return FlowBudget(self.limit, self.spent, self.epoch)


@message(0x0029)
class FlowBudgetReply(Message):
    """``peer_id``'s flow budget, or None if it has none.

    :raises WrongType: on a bad field.
    """

    peer_id: DeviceId
    budget: FlowBudgetState | None

    def __post_init__(self) -> None:
        check_peer(self.peer_id)
        if self.budget is not None and type(self.budget) is not FlowBudgetState:
            raise WrongType(f"budget must be a FlowBudgetState or None, got {self.budget!r}")


@message(0x002A)
class RotateEpoch(Message):
    """Move every flow budget to ``epoch`` (earlier ones restart at 0 spent).  Reply: Ack.

    :raises WrongType, InvalidArgument: ``epoch`` is not an int in 0..2**64-1.
    """

    epoch: int

    def __post_init__(self) -> None:
        check_epoch(self.epoch)


@message(0x002B)
class DropIdleBuckets(Message):
    """Drop every full (idle) peer bucket.  Reply: :class:`BucketsDropped`."""


@message(0x002C)
class BucketsDropped(Message):
    """How many peer buckets :class:`DropIdleBuckets` dropped (int >= 0).

    :raises WrongType, InvalidArgument: on a bad count.
    """

    count: int

    def __post_init__(self) -> None:
        check_u64(self.count, "count")


@message(0x002D)
class GetRateLimiterStatistics(Message):
    """Ask for the limiter's counters.  Reply: :class:`RateLimiterStatisticsReply`."""


@message(0x002E)
class RateLimiterStatisticsReply(Message):
    """:class:`~aura_sync.infrastructure.rate_limit.RateLimiterStatistics` on the wire.

    Every field is an int in 0..2**64-1 with the core's meaning.

    :raises WrongType, InvalidArgument: on a bad field.
    """

    operations_allowed: int
    global_limit_hits: int
    peer_limit_hits: int
    flow_budget_hits: int
    tracked_peers: int
    tracking_limit_hits: int = 0

    def __post_init__(self) -> None:
        for name in (
            "operations_allowed",
            "global_limit_hits",
            "peer_limit_hits",
            "flow_budget_hits",
            "tracked_peers",
            "tracking_limit_hits",
        ):
            check_u64(getattr(self, name), name)

    @classmethod
    def from_statistics(cls, stats: RateLimiterStatistics) -> RateLimiterStatisticsReply:
        """The wire form of ``stats``.

        :raises WrongType: ``stats`` is not a RateLimiterStatistics.
        """
        if type(stats) is not RateLimiterStatistics:
            raise WrongType(
                f"stats must be a RateLimiterStatistics, got {type(stats).__name__} {stats!r}"
            )
        return cls(
            stats.operations_allowed,
            stats.global_limit_hits,
            stats.peer_limit_hits,
            stats.flow_budget_hits,
            stats.tracked_peers,
            stats.tracking_limit_hits,
        )

    def to_statistics(self) -> RateLimiterStatistics:
        """The core's :class:`~aura_sync.infrastructure.rate_limit.RateLimiterStatistics`."""
        return RateLimiterStatistics(
            operations_allowed=self.operations_allowed,
            global_limit_hits=self.global_limit_hits,
            peer_limit_hits=self.peer_limit_hits,
            flow_budget_hits=self.flow_budget_hits,
            tracked_peers=self.tracked_peers,
            tracking_limit_hits=self.tracking_limit_hits,
        )
