"""OTP-style supervision: :class:`Supervisor`, :class:`ChildSpec`, strategies, escalation.

A supervisor starts its children in order, stops them in reverse, and restarts
the ones that fail according to its :class:`Strategy` and each child's
:class:`Restart` type; more than ``intensity`` restarts within ``period``
seconds make it stop everything and fail to its parent (or call
``on_give_up`` at the root).  Beyond OTP: a child's address is stable across
restarts and keeps its queued messages, ``ChildContext.stash`` carries state
across incarnations, restarts can back off (:class:`RestartBackoff`), and
:class:`SupervisionEvent` s can be subscribed to and are counted.

Layer: supervision (imports actors, messages, effects).
"""

from aura_sync.messages.supervision import (
    ChildCounts,
    ChildStatus,
    ChildType,
    EventKind,
    ExitKind,
    SupervisionEvent,
)
from aura_sync.supervisors._state import ChildInfo
from aura_sync.supervisors.infrastructure import (
    CACHE,
    CHILD_IDS,
    PEER_MANAGER,
    POOL,
    RATE_LIMITER,
    Infrastructure,
    InfrastructureConfig,
    infrastructure_supervisor,
)
from aura_sync.supervisors.spec import (
    ONE_FOR_ALL,
    ONE_FOR_ONE,
    PERMANENT,
    REST_FOR_ONE,
    TEMPORARY,
    TRANSIENT,
    ChildContext,
    ChildSpec,
    Restart,
    RestartBackoff,
    Strategy,
)
from aura_sync.supervisors.supervisor import DEFAULT_CALL_TIMEOUT, Supervisor

__all__ = [
    "CACHE",
    "CHILD_IDS",
    "DEFAULT_CALL_TIMEOUT",
    "ONE_FOR_ALL",
    "ONE_FOR_ONE",
    "PEER_MANAGER",
    "PERMANENT",
    "POOL",
    "RATE_LIMITER",
    "REST_FOR_ONE",
    "TEMPORARY",
    "TRANSIENT",
    "ChildContext",
    "ChildCounts",
    "ChildInfo",
    "ChildSpec",
    "ChildStatus",
    "ChildType",
    "EventKind",
    "ExitKind",
    "Infrastructure",
    "InfrastructureConfig",
    "Restart",
    "RestartBackoff",
    "Strategy",
    "SupervisionEvent",
    "Supervisor",
    "infrastructure_supervisor",
]
