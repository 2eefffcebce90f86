"""Fault injection (crash on request, for chaos tests and the demo) and small actor helpers.

With fault injection enabled, :class:`FaultInjectionMixin` answers
:class:`~aura_sync.messages.faults.InjectCrash` by raising
:class:`InjectedCrash` (not an :class:`~aura_sync.errors.AuraError`, so it is a
real crash: the supervisor restarts the actor); disabled (the default), the
request gets ``ErrorReply(InvalidArgument)``.  :func:`check_stash` and
:class:`Ticker` (a re-arming scheduled message) serve the infrastructure actors.
"""

from __future__ import annotations

from typing import Any

from aura_sync._checks import check_bool
from aura_sync.actors.base import handles
from aura_sync.effects import (
    Clock,
    MessageTarget,
    Scheduler,
    TimerHandle,
    system_effects,
)
from aura_sync.errors import InvalidArgument, WrongType
from aura_sync.messages.faults import InjectCrash

__all__ = [
    "FaultInjectionMixin",
    "InjectedCrash",
    "Ticker",
    "check_scheduler",
    "check_stash",
    "resolve_effects",
]


def check_stash(stash: object) -> dict[str, Any]:
    """Return ``stash`` (a dict), or a new private dict for None.

    Raises :class:`~aura_sync.errors.WrongType` for anything else.
    """
    if stash is None:
        return {}
    if not isinstance(stash, dict):
        raise WrongType(f"stash must be a dict or None, got {type(stash).__name__} {stash!r}")
    return stash


def check_scheduler(scheduler: object) -> Scheduler:
    """Return ``scheduler`` if it is a :class:`~aura_sync.effects.Scheduler`; else WrongType."""
    if not isinstance(scheduler, Scheduler):
        raise WrongType(
            f"scheduler must be a Scheduler, got {type(scheduler).__name__} {scheduler!r}"
        )
    return scheduler


def resolve_effects(clock: Clock | None, scheduler: Scheduler | None) -> tuple[Clock, Scheduler]:
    """The clock and scheduler an actor uses: defaults filled in, types checked.

    With only a scheduler, its clock is used; with only a clock, a scheduler
    on it; with neither, one process-wide :class:`~aura_sync.effects.SystemClock`
    and scheduler (so unconfigured actors share one timer thread).
    """
    if scheduler is not None:
        check_scheduler(scheduler)
    if clock is None:
        if scheduler is not None:
            return scheduler.clock, scheduler
        return system_effects()
    if not isinstance(clock, Clock):
        raise WrongType(f"clock must be a Clock, got {type(clock).__name__} {clock!r}")
    if scheduler is None:
        scheduler = Scheduler(clock)
    return clock, scheduler


class Ticker:
    """Periodic work without a thread: ``message`` to ``target`` every ``interval`` seconds.

    The actor calls :meth:`arm` in ``on_start`` and on each tick (at most one
    tick is ever pending) and :meth:`cancel` in ``on_stop``/``on_crash``.  Used
    from the actor's thread only, with a checked scheduler and interval.
    """

    __slots__ = ("_handle", "interval", "message", "scheduler", "target")

    def __init__(
        self, scheduler: Scheduler, interval: float, target: MessageTarget, message: object
    ) -> None:
        self.scheduler = scheduler
        self.interval = interval
        self.target = target
        self.message = message
        self._handle: TimerHandle | None = None

    def arm(self) -> None:
        """Schedule the next tick ``interval`` seconds from now (replacing a pending one)."""
        self.cancel()
        self._handle = self.scheduler.send_after(self.interval, self.target, self.message)

    def cancel(self) -> None:
        """Cancel the pending tick, if any (idempotent)."""
        handle = self._handle
        if handle is not None:
            handle.cancel()
            self._handle = None


class InjectedCrash(Exception):
    """Raised by an actor asked to crash with :class:`~aura_sync.messages.faults.InjectCrash`.

    Not an :class:`~aura_sync.errors.AuraError` on purpose: it must count as
    an unexpected failure so that the supervisor restarts the actor.
    """


class FaultInjectionMixin:
    """Adds the :class:`~aura_sync.messages.faults.InjectCrash` handler to an actor.

    Put it before :class:`~aura_sync.actors.AuraActor` in the bases and call
    :meth:`_init_faults` from ``__init__``.  The flag is per incarnation: the
    factory that creates each incarnation decides.
    """

    _fault_injection: bool = False

    def _init_faults(self, fault_injection: bool) -> None:
        """Enable (True) or disable (False) fault injection; raises WrongType for a non-bool."""
        check_bool(fault_injection, "fault_injection")
        self._fault_injection = fault_injection

    @property
    def fault_injection(self) -> bool:
        """Whether this actor honours :class:`~aura_sync.messages.faults.InjectCrash`."""
        return self._fault_injection

    @handles(InjectCrash)
    def _on_inject_crash(self, msg: InjectCrash) -> None:
        """Crash (raise :class:`InjectedCrash`) if enabled; else refuse with InvalidArgument."""
        if not self._fault_injection:
            raise InvalidArgument(
                f"{self} refuses InjectCrash(reason={msg.reason!r}): fault injection is disabled "
                "(create the actor with fault_injection=True)"
            )
        raise InjectedCrash(msg.reason)
