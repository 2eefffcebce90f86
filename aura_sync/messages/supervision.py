"""Messages of the actor runtime and the supervisor protocol (0xA0-0xBF; 0xB0+ for tests).

Child start/exit reports, the backoff timer, the Supervisor handle's requests:
all encodable (what carries a callable or a live address is in ``supervisors._state``).
"""

from __future__ import annotations

import enum

from aura_sync.messages._base import Message, message


class ExitKind(enum.Enum):
    """Why an incarnation ended: NORMAL (stopped on request or by itself), CRASHED (an
    exception escaped a handler, ``on_start`` or ``on_stop``), START_FAILED (``on_start``
    raised), GAVE_UP (a supervisor passed its restart intensity: OTP's ``shutdown``)."""

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
    start, exited when it should not have), RESTARTED after a failure, STOPPED on
    request (or killed after its shutdown); the supervisor GAVE_UP."""

    STARTED = "started"
    FAILED = "failed"
    RESTARTED = "restarted"
    GAVE_UP = "gave_up"
    STOPPED = "stopped"


class ChildStatus(enum.Enum):
    """A child's state in ``which_children``; RESTARTING: down after a failure (maybe in
    backoff); TERMINATED: not running, spec kept (``restart_child``/``delete_child``)."""

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
    """A child incarnation finished ``on_start`` (sent by its thread to the supervisor)."""

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
class TerminateChild(Message):
    """Stop a child and keep its spec (OTP ``terminate_child``); replies ``Ack``."""

    child_id: str


@message(0xA6)
class RestartChild(Message):
    """Start a terminated child again (OTP ``restart_child``); replies with its address."""

    child_id: str


@message(0xA7)
class DeleteChild(Message):
    """Forget a terminated child's spec (OTP ``delete_child``); replies ``Ack``."""

    child_id: str


@message(0xA8)
class WhichChildren(Message):
    """Ask for every child's id, address, type, status and restart count."""


@message(0xAA)
class ChildCounts(Message):
    """OTP ``count_children``: specs, running children, supervisors and workers among specs."""

    specs: int
    active: int
    supervisors: int
    workers: int


@message(0xAB)
class AddressOf(Message):
    """Ask for the (stable) address of a child."""

    child_id: str


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
