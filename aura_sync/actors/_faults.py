"""Fault injection (crash on request, for chaos tests and the demo) and small actor helpers.

With fault injection enabled, :class:`FaultInjectionMixin` answers
:class:`~aura_sync.messages.faults.InjectCrash` by raising :class:`InjectedCrash`
(not an ``AuraError``, so it is a real crash the supervisor restarts); disabled
(the default), the request gets ``ErrorReply(InvalidArgument)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aura_sync._checks import check_bool
from aura_sync.actors.base import handles
from aura_sync.effects import Clock, MessageTarget, Scheduler, TimerHandle, system_effects
from aura_sync.errors import InvalidArgument, WrongType
from aura_sync.messages.faults import InjectCrash

__all__ = ["FaultInjectionMixin", "InjectedCrash", "Ticker", "check_stash", "resolve_effects"]


def check_stash(stash: object) -> dict[str, Any]:
    """Return ``stash`` (a dict), or a new private dict for None; else WrongType."""
    if stash is None:
        return {}
    if not isinstance(stash, dict):
        raise WrongType(f"stash must be a dict or None, got {type(stash).__name__} {stash!r}")
    return stash


def resolve_effects(clock: Clock | None, scheduler: Scheduler | None) -> tuple[Clock, Scheduler]:
    """The clock and scheduler an actor uses: a scheduler's own clock, a new scheduler
    on a lone clock, else the process-wide pair (one timer thread); types checked."""
    if scheduler is not None and not isinstance(scheduler, Scheduler):
        raise WrongType(f"scheduler must be a Scheduler, got {scheduler!r}")
    if clock is None:
        return system_effects() if scheduler is None else (scheduler.clock, scheduler)
    if not isinstance(clock, Clock):
        raise WrongType(f"clock must be a Clock, got {type(clock).__name__} {clock!r}")
    return clock, Scheduler(clock) if scheduler is None else scheduler


@dataclass(slots=True, eq=False)
class Ticker:
    """``message`` to ``target`` every ``interval`` seconds, without a thread: the actor
    calls :meth:`arm` in ``on_start`` (with its address, if the ticker was made before
    the actor had one) and on each tick, :meth:`cancel` when it ends."""

    scheduler: Scheduler
    interval: float
    target: MessageTarget | None
    message: object
    _handle: TimerHandle | None = field(default=None, init=False)

    def arm(self, target: MessageTarget | None = None) -> None:
        """Schedule the next tick ``interval`` seconds from now (replacing a pending one)."""
        self.cancel()
        self.target = target or self.target
        assert self.target is not None
        self._handle = self.scheduler.send_after(self.interval, self.target, self.message)

    def cancel(self) -> None:
        """Cancel the pending tick, if any (idempotent)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


class InjectedCrash(Exception):
    """Raised by an actor asked to crash (not an ``AuraError``: it must count as a crash)."""


class FaultInjectionMixin:
    """The :class:`~aura_sync.messages.faults.InjectCrash` handler: put it before
    ``AuraActor`` in the bases and call :meth:`_init_faults` from ``__init__``."""

    _fault_injection: bool = False

    def _init_faults(self, fault_injection: bool) -> None:
        check_bool(fault_injection, "fault_injection")
        self._fault_injection = fault_injection

    @handles(InjectCrash)
    def _on_inject_crash(self, msg: InjectCrash) -> None:
        if not self._fault_injection:
            raise InvalidArgument(
                f"{self} refuses InjectCrash(reason={msg.reason!r}): fault injection is disabled "
                "(create the actor with fault_injection=True)"
            )
        raise InjectedCrash(msg.reason)
