"""Messages of the actor runtime and the supervisor protocol (0xA0-0xBF; 0xB0+ for tests).

Child start/exit reports, the backoff timer, the ``Supervisor`` handle's requests
(what carries a callable is in ``supervisors._actor``).
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

from aura_sync.messages._base import Message, Request, message

if TYPE_CHECKING:  # reply types of the actor and supervision layers, named as strings
    from aura_sync.actors.address import ActorAddress  # noqa: F401
    from aura_sync.supervisors._actor import ChildInfo


class ExitKind(enum.Enum):
    """Why an incarnation ended: NORMAL (stopped), CRASHED (an exception escaped a
    handler or ``on_stop``), START_FAILED (``on_start`` raised), GAVE_UP (a supervisor
    passed its restart intensity: OTP's ``shutdown``)."""

    NORMAL = "normal"
    CRASHED = "crashed"
    START_FAILED = "start_failed"
    GAVE_UP = "gave_up"

    @property
    def is_abnormal(self) -> bool:
        """Whether a TRANSIENT child restarts: CRASHED, START_FAILED (not GAVE_UP, as in OTP)."""
        return self is ExitKind.CRASHED or self is ExitKind.START_FAILED


class EventKind(enum.Enum):
    """Kinds of :class:`SupervisionEvent`: a child STARTED, FAILED (crashed, failed to
    start, exited when it should not have), RESTARTED, STOPPED on request (or killed
    after its shutdown); the supervisor GAVE_UP."""

    STARTED = "started"
    FAILED = "failed"
    RESTARTED = "restarted"
    GAVE_UP = "gave_up"
    STOPPED = "stopped"


class ChildStatus(enum.Enum):
    """A child's state; RESTARTING: down after a failure (maybe in backoff); TERMINATED:
    not running, spec kept (``restart_child`` / ``delete_child``)."""

    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    RESTARTING = "restarting"
    TERMINATED = "terminated"


class ChildType(enum.Enum):
    """OTP's child type: a worker actor or a nested supervisor."""

    WORKER = "worker"
    SUPERVISOR = "supervisor"


@message(0xA0)
class ChildStarted(Message):
    """A child incarnation finished ``on_start`` (told by its thread to the supervisor)."""

    child_id: str
    incarnation: int


@message(0xA1)
class ChildExited(Message):
    """A child incarnation ended; ``kind`` says why, ``reason`` explains."""

    child_id: str
    incarnation: int
    kind: ExitKind
    reason: str


@message(0xA4)
class BackoffElapsed(Message):
    """Timer: the restart backoff of ``child_id`` is over (``token`` names the restart)."""

    child_id: str
    token: int


@message(0xA5)
class TerminateChild(Request[None]):
    """OTP ``terminate_child``: stop a child, keep its spec."""

    child_id: str


@message(0xA6)
class RestartChild(Request["ActorAddress"]):
    """OTP ``restart_child``: start a terminated child again."""

    child_id: str


@message(0xA7)
class DeleteChild(Request[None]):
    """OTP ``delete_child``: forget a terminated child's spec."""

    child_id: str


@message(0xA8)
class WhichChildren(Request[tuple["ChildInfo", ...]]):
    """Every child's id, address, type, status and restart count."""


@message(0xAA)
class ChildCounts(Message):
    """OTP ``count_children``: specs, running children, supervisors and workers among specs."""

    specs: int
    active: int
    supervisors: int
    workers: int


@message(0xAB)
class AddressOf(Request["ActorAddress"]):
    """The (stable) address of a child."""

    child_id: str


@message(0xAC)
class StopSupervisor(Message):
    """Stop every child in reverse start order, then the supervisor itself."""


@message(0xAD)
class SupervisionEvent(Message):
    """Something happened to a child (``child_id`` empty: to the supervisor itself);
    ``incarnation`` counts the child's starts (1 = first); ``time`` is the
    supervisor's clock, in seconds."""

    kind: EventKind
    supervisor: str
    child_id: str
    incarnation: int
    reason: str
    time: float
