"""Messages of the actor runtime and of the supervisor protocol (tags 0xA0-0xBF).

These are the messages that cross an actor boundary inside the supervision
machinery: a child's thread reports to its supervisor that it started or
exited; timers report start/shutdown timeouts and the end of a restart
backoff; the :class:`~aura_sync.supervisors.Supervisor` handle asks its actor
to terminate, restart or delete a child, or for counts.  All of them are
ordinary encodable messages, so supervision activity can be logged or shipped
to a monitor (:class:`SupervisionEvent` in particular).

What cannot be encoded stays out of this module: a request to *start* a child
carries a ``ChildSpec`` with a factory callable, and replies that carry a live
``ActorAddress`` (``start_child``, ``restart_child``, ``which_children``)
are in-process :class:`~aura_sync.actors.LocalMessage` envelopes defined in
:mod:`aura_sync.supervisors`.

Tags: 0xA0-0xAD are used here; 0xB0-0xBF are left to tests and examples.

Layer: messages.
"""

from __future__ import annotations

import enum
import math

from aura_sync._checks import check_u64
from aura_sync.errors import InvalidArgument, WrongType
from aura_sync.messages._base import Message, message

__all__ = [
    "AddressOf",
    "BackoffElapsed",
    "ChildCounts",
    "ChildExited",
    "ChildStarted",
    "ChildStatus",
    "ChildType",
    "CountChildren",
    "DeleteChild",
    "EventKind",
    "ExitKind",
    "RestartChild",
    "ShutdownTimedOut",
    "StartTimedOut",
    "StopSupervisor",
    "SupervisionEvent",
    "TerminateChild",
    "WhichChildren",
    "check_child_id",
]

MAX_CHILD_ID_LENGTH = 200
"""Longest accepted child id, in characters."""


def check_child_id(value: object, name: str = "child_id") -> str:
    """Return ``value`` if it is a valid child id (a non-empty str of at most 200 chars)."""
    if type(value) is not str:
        raise WrongType(f"{name} must be a str, got {type(value).__name__} {value!r}")
    if not value or len(value) > MAX_CHILD_ID_LENGTH:
        raise InvalidArgument(
            f"{name} must be 1..{MAX_CHILD_ID_LENGTH} characters, got {len(value)}: {value!r}"
        )
    return value


class ExitKind(enum.Enum):
    """Why an actor incarnation ended."""

    NORMAL = "normal"
    """It stopped on request, or stopped itself (``self.stop()``)."""
    CRASHED = "crashed"
    """An unexpected exception escaped a handler (or ``on_start`` / ``on_stop``)."""
    START_FAILED = "start_failed"
    """``on_start`` raised (pykka would only log this; we report it)."""
    GAVE_UP = "gave_up"
    """A supervisor exceeded its restart intensity and shut down (OTP's ``shutdown``)."""

    @property
    def is_abnormal(self) -> bool:
        """What makes a TRANSIENT child restart: a crash or a failed start.

        NORMAL and GAVE_UP are not: a supervisor that gives up exits as OTP's
        ``shutdown``, which a TRANSIENT parent spec does not restart.
        """
        return self is ExitKind.CRASHED or self is ExitKind.START_FAILED


class EventKind(enum.Enum):
    """Kinds of :class:`SupervisionEvent`."""

    STARTED = "started"
    """A child was started (initial start, ``start_child``, ``restart_child``)."""
    FAILED = "failed"
    """A child crashed, failed to start, or exited when it should not have."""
    RESTARTED = "restarted"
    """A child was started again by the supervisor after a failure."""
    GAVE_UP = "gave_up"
    """The supervisor exceeded its restart intensity, stopped its children and gave up."""
    STOPPED = "stopped"
    """A child was stopped on request (or killed after its shutdown timeout)."""


class ChildStatus(enum.Enum):
    """What a supervisor reports about a child in ``which_children``."""

    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    RESTARTING = "restarting"
    """Down after a failure and about to be restarted (possibly in backoff)."""
    TERMINATED = "terminated"
    """Not running; the spec is kept (``restart_child`` / ``delete_child`` apply)."""


class ChildType(enum.Enum):
    """OTP's child type: a worker actor or a nested supervisor."""

    WORKER = "worker"
    SUPERVISOR = "supervisor"


@message(0xA0)
class ChildStarted(Message):
    """A child incarnation finished ``on_start`` (sent by its thread to the supervisor)."""

    child_id: str
    incarnation: int

    def __post_init__(self) -> None:
        check_child_id(self.child_id)
        check_u64(self.incarnation, "incarnation")


@message(0xA1)
class ChildExited(Message):
    """A child incarnation ended; ``kind`` says why, ``reason`` explains."""

    child_id: str
    incarnation: int
    kind: ExitKind
    reason: str

    def __post_init__(self) -> None:
        check_child_id(self.child_id)
        check_u64(self.incarnation, "incarnation")
        if not isinstance(self.kind, ExitKind):
            raise WrongType(f"kind must be an ExitKind, got {self.kind!r}")
        if type(self.reason) is not str:
            raise WrongType(
                f"reason must be a str, got {type(self.reason).__name__} {self.reason!r}"
            )


@message(0xA2)
class StartTimedOut(Message):
    """Timer: the incarnation did not finish starting within its ``start_timeout``."""

    child_id: str
    incarnation: int

    def __post_init__(self) -> None:
        check_child_id(self.child_id)
        check_u64(self.incarnation, "incarnation")


@message(0xA3)
class ShutdownTimedOut(Message):
    """Timer: the incarnation did not stop within its ``shutdown`` timeout."""

    child_id: str
    incarnation: int

    def __post_init__(self) -> None:
        check_child_id(self.child_id)
        check_u64(self.incarnation, "incarnation")


@message(0xA4)
class BackoffElapsed(Message):
    """Timer: the restart backoff of ``child_id`` is over (``token`` names the restart)."""

    child_id: str
    token: int

    def __post_init__(self) -> None:
        check_child_id(self.child_id)
        check_u64(self.token, "token")


@message(0xA5)
class TerminateChild(Message):
    """Stop a child and keep its spec (OTP ``terminate_child``); replies ``Ack``."""

    child_id: str

    def __post_init__(self) -> None:
        check_child_id(self.child_id)


@message(0xA6)
class RestartChild(Message):
    """Start a terminated child again (OTP ``restart_child``); replies with its address."""

    child_id: str

    def __post_init__(self) -> None:
        check_child_id(self.child_id)


@message(0xA7)
class DeleteChild(Message):
    """Forget a terminated child's spec (OTP ``delete_child``); replies ``Ack``."""

    child_id: str

    def __post_init__(self) -> None:
        check_child_id(self.child_id)


@message(0xA8)
class WhichChildren(Message):
    """Ask for every child's id, address, type, status and restart count."""


@message(0xA9)
class CountChildren(Message):
    """Ask for :class:`ChildCounts`."""


@message(0xAA)
class ChildCounts(Message):
    """OTP ``count_children``: specs, running children, supervisors and workers among specs."""

    specs: int
    active: int
    supervisors: int
    workers: int

    def __post_init__(self) -> None:
        for name in ("specs", "active", "supervisors", "workers"):
            check_u64(getattr(self, name), name)


@message(0xAB)
class AddressOf(Message):
    """Ask for the (stable) address of a child."""

    child_id: str

    def __post_init__(self) -> None:
        check_child_id(self.child_id)


@message(0xAC)
class StopSupervisor(Message):
    """Stop every child in reverse start order, then the supervisor itself."""


@message(0xAD)
class SupervisionEvent(Message):
    """Something happened to a child (or to the supervisor): for subscribers and counters.

    ``supervisor`` is the supervisor's name; ``child_id`` is empty for
    supervisor-wide events (GAVE_UP); ``incarnation`` counts the child's
    starts (1 = first); ``time`` is the supervisor's clock, in seconds.
    """

    kind: EventKind
    supervisor: str
    child_id: str
    incarnation: int
    reason: str
    time: float

    def __post_init__(self) -> None:
        if not isinstance(self.kind, EventKind):
            raise WrongType(f"kind must be an EventKind, got {self.kind!r}")
        if type(self.child_id) is not str:
            raise WrongType(
                f"child_id must be a str, got {type(self.child_id).__name__} {self.child_id!r}"
            )
        if self.child_id:  # empty for supervisor-wide events
            check_child_id(self.child_id)
        check_u64(self.incarnation, "incarnation")
        for name in ("supervisor", "reason"):
            if type(getattr(self, name)) is not str:
                raise WrongType(f"{name} must be a str, got {getattr(self, name)!r}")
        if type(self.time) is not float:
            raise WrongType(f"time must be a float, got {type(self.time).__name__} {self.time!r}")
        if not math.isfinite(self.time):
            raise InvalidArgument(f"time must be finite, got {self.time!r}")
