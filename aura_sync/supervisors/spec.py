"""Child specifications (OTP's id, start, restart, shutdown; plus backoff and start_timeout),
checked when built, and the :class:`ChildContext` a child factory gets."""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from aura_sync.actors.address import ActorAddress
from aura_sync.effects import Clock, Rng, Scheduler, check_seconds
from aura_sync.errors import InvalidArgument, WrongType

if TYPE_CHECKING:
    from aura_sync.actors.base import AuraActor
    from aura_sync.supervisors.supervisor import Supervisor


class Restart(enum.Enum):
    """When a child is restarted after it exits (OTP restart types)."""

    PERMANENT = "permanent"
    """Always restarted, whatever the reason it exited (unless the supervisor stopped it)."""
    TRANSIENT = "transient"
    """Restarted only after an abnormal exit (crash, failed start)."""
    TEMPORARY = "temporary"
    """Never restarted; its spec is removed once it exits."""


class Strategy(enum.Enum):
    """Which children are restarted when one fails (OTP strategies)."""

    ONE_FOR_ONE = "one_for_one"
    """Only the failed child."""
    ONE_FOR_ALL = "one_for_all"
    """All children: the others are stopped in reverse order, then all started in order."""
    REST_FOR_ONE = "rest_for_one"
    """The failed child and those started after it (stopped in reverse, started in order)."""


PERMANENT: Final = Restart.PERMANENT
TRANSIENT: Final = Restart.TRANSIENT
TEMPORARY: Final = Restart.TEMPORARY
ONE_FOR_ONE: Final = Strategy.ONE_FOR_ONE
ONE_FOR_ALL: Final = Strategy.ONE_FOR_ALL
REST_FOR_ONE: Final = Strategy.REST_FOR_ONE

_MAX_DOUBLINGS = 64
MAX_CHILD_ID_LENGTH = 200
"""Longest accepted child id (and supervisor name), in characters."""


def check_child_id(value: object, name: str = "child_id") -> str:
    """``value`` if it is a str of 1..200 characters; else WrongType / InvalidArgument."""
    if type(value) is not str:
        raise WrongType(f"{name} must be a str, got {type(value).__name__} {value!r}")
    if not value or len(value) > MAX_CHILD_ID_LENGTH:
        raise InvalidArgument(f"{name} must be 1..{MAX_CHILD_ID_LENGTH} characters, got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class RestartBackoff:
    """Delay before restarting a failed child: restart k (0-based) of a streak waits
    ``min(max, min * 2**k) * (1 - jitter * U(0, 1))`` seconds (``jitter`` in [0, 1]);
    a child that ran ``max`` seconds before failing starts a new streak.  The wait
    is a scheduled message: the address keeps queueing meanwhile."""

    min: float = 0.1
    max: float = 30.0
    jitter: float = 0.0

    def __post_init__(self) -> None:
        low = check_seconds(self.min, "backoff min")
        high = check_seconds(self.max, "backoff max")
        if high < low:
            raise InvalidArgument(f"backoff max must be >= min ({low} s), got {high} s")
        jitter = self.jitter
        if isinstance(jitter, bool) or not isinstance(jitter, int | float):
            raise WrongType(f"backoff jitter must be a number, got {type(jitter).__name__}")
        if math.isnan(jitter) or not 0.0 <= jitter <= 1.0:
            raise InvalidArgument(f"backoff jitter must be in [0, 1], got {jitter!r}")
        object.__setattr__(self, "min", low)
        object.__setattr__(self, "max", high)
        object.__setattr__(self, "jitter", float(jitter))

    def delay(self, attempt: int, rng: Rng) -> float:
        """Seconds to wait before restart number ``attempt`` (0-based) of a streak."""
        base = min(self.max, self.min * 2.0 ** min(attempt, _MAX_DOUBLINGS))
        if self.jitter:
            base *= 1.0 - self.jitter * rng.random()
        return base


@dataclass(frozen=True, slots=True)
class ChildContext:
    """What a child's factory gets: ``incarnation`` (1 first), the stable ``address``,
    the ``stash`` every incarnation shares, the supervisor's effects and name."""

    child_id: str
    address: ActorAddress
    incarnation: int
    stash: dict[str, Any]
    scheduler: Scheduler
    clock: Clock
    rng: Rng
    supervisor: str


StartFactory = Callable[[ChildContext], "AuraActor | Supervisor"]


@dataclass(frozen=True, slots=True)
class ChildSpec:
    """An OTP child spec: ``start(ChildContext)`` returns a new unstarted actor or
    ``Supervisor`` (on the supervisor's thread: quick); ``shutdown``: seconds a stop may
    take before the child is abandoned (a nested supervisor's: at least the sum of its
    children's); ``start_timeout``: seconds ``on_start`` may take."""

    id: str
    start: StartFactory
    restart: Restart = Restart.PERMANENT
    shutdown: float = 5.0
    backoff: RestartBackoff | None = None
    start_timeout: float = 5.0

    def __post_init__(self) -> None:
        check_child_id(self.id, "ChildSpec id")
        if not callable(self.start):
            raise WrongType(f"ChildSpec {self.id!r}: start must be callable, got {self.start!r}")
        if not isinstance(self.restart, Restart):
            raise InvalidArgument(
                f"ChildSpec {self.id!r}: restart must be PERMANENT, TRANSIENT or TEMPORARY, "
                f"got {self.restart!r}"
            )
        for name in ("shutdown", "start_timeout"):
            what = f"ChildSpec {self.id!r} {name}"
            seconds = check_seconds(getattr(self, name), what, allow_zero=name == "shutdown")
            object.__setattr__(self, name, seconds)
        if self.backoff is not None and not isinstance(self.backoff, RestartBackoff):
            raise WrongType(
                f"ChildSpec {self.id!r}: backoff must be a RestartBackoff or None, "
                f"got {self.backoff!r}"
            )
