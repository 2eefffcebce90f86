"""OTP-style supervision: :class:`Supervisor`, :class:`ChildSpec`, strategies, events.

OTP rules: children start in order and stop in reverse; PERMANENT children
restart after any exit, TRANSIENT after a crash or a failed start, TEMPORARY
never; ONE_FOR_ALL / REST_FOR_ONE restart the whole group, siblings stopped
with ``terminate_child`` included; more than ``intensity`` restarts within
``period`` seconds make a supervisor stop every child, call ``on_give_up``
and exit GAVE_UP, OTP's ``shutdown`` (a PERMANENT parent spec restarts it, a
TRANSIENT one does not); a failed restart is a new failure (``try_again``).
Beyond OTP: a child's address is stable across restarts and keeps its queued
messages, ``ChildContext.stash`` carries state across incarnations, restarts
can back off (:class:`RestartBackoff`), events can be subscribed to.
"""

from aura_sync.messages.supervision import (
    ChildCounts,
    ChildStatus,
    ChildType,
    EventKind,
    ExitKind,
    SupervisionEvent,
)
from aura_sync.supervisors._actor import ChildInfo
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
