"""The :class:`Supervisor` handle: configure, start, observe and steer a supervisor.

Every dynamic call is an ask of its actor (:mod:`aura_sync.supervisors._actor`)
with a timeout (``AskTimeout``; ``SupervisorStopped`` once it stopped or gave
up).  A child factory may return a ``Supervisor``: the parent starts it, and it
keeps its children's slots in its own stash; unset effects are the parent's.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import TypeVar

from aura_sync._checks import check_int
from aura_sync.actors._faults import resolve_effects
from aura_sync.actors.address import ActorAddress
from aura_sync.actors.base import AuraActor, current_actor
from aura_sync.effects import Clock, Rng, Scheduler, SystemRng, check_seconds
from aura_sync.errors import (
    ActorStopped,
    InvalidArgument,
    NotFound,
    StartFailed,
    SupervisorError,
    SupervisorGaveUp,
    SupervisorStopped,
    WrongType,
)
from aura_sync.messages import Request
from aura_sync.messages import supervision as m
from aura_sync.messages.supervision import ChildCounts, ChildStatus, ChildType, EventKind, ExitKind
from aura_sync.supervisors._actor import (
    STASH_KEY,
    ChildInfo,
    Persistent,
    StartChildRequest,
    SupervisorActor,
    SupervisorConfig,
)
from aura_sync.supervisors.spec import ChildContext, ChildSpec, Strategy, check_child_id

__all__ = ["DEFAULT_CALL_TIMEOUT", "Supervisor"]

DEFAULT_CALL_TIMEOUT = 10.0
"""Seconds a dynamic call (``start_child``, ...) waits for the supervisor by default."""

R = TypeVar("R")
_ACTIVE = (ChildStatus.STARTING, ChildStatus.RUNNING, ChildStatus.STOPPING)


@dataclass(slots=True, eq=False)
class _RootMonitor:
    """Link of a root supervisor's address: ``start()`` waits on it; closes the address at exit."""

    started_event: threading.Event = field(default_factory=threading.Event)
    exited_event: threading.Event = field(default_factory=threading.Event)
    kind: ExitKind | None = None
    reason: str = ""

    def started(self, address: ActorAddress, incarnation: int) -> None:
        self.started_event.set()

    def exited(self, address: ActorAddress, incarnation: int, kind: ExitKind, reason: str) -> None:
        self.kind = kind
        self.reason = reason
        address._close(f"supervisor {kind.value}: {reason}")
        self.exited_event.set()
        self.started_event.set()


class Supervisor:
    """An OTP-style supervisor (the rules: :mod:`aura_sync.supervisors`).

    ``children``: specs with unique ids, in start order; more than ``intensity``
    restarts within ``period`` seconds make it give up; effects default to the
    system's (the parent's when nested); ``on_give_up(SupervisorGaveUp)`` runs in
    its thread; ``name`` prefixes child address names; ``call_timeout``: default
    seconds of the dynamic calls.  Raises WrongType / InvalidArgument.
    """

    def __init__(
        self,
        children: Iterable[ChildSpec] = (),
        *,
        strategy: Strategy = Strategy.ONE_FOR_ONE,
        intensity: int = 1,
        period: float = 5.0,
        clock: Clock | None = None,
        scheduler: Scheduler | None = None,
        rng: Rng | None = None,
        on_give_up: Callable[[SupervisorGaveUp], None] | None = None,
        name: str = "supervisor",
        call_timeout: float = DEFAULT_CALL_TIMEOUT,
    ) -> None:
        if isinstance(children, ChildSpec | str | bytes) or not isinstance(children, Iterable):
            raise WrongType(f"children must be an iterable of ChildSpec, got {children!r}")
        specs = tuple(children)
        seen: set[str] = set()
        for spec in specs:
            if not isinstance(spec, ChildSpec):
                raise WrongType(f"children must be ChildSpec objects, got {spec!r}")
            if spec.id in seen:
                raise InvalidArgument(f"duplicate child id {spec.id!r} in children")
            seen.add(spec.id)
        if not isinstance(strategy, Strategy):
            raise InvalidArgument(
                f"strategy must be ONE_FOR_ONE, ONE_FOR_ALL or REST_FOR_ONE, got {strategy!r}"
            )
        check_int(intensity, "intensity", minimum=0)
        period = check_seconds(period, "period", allow_zero=False)
        effects = {"clock": (clock, Clock), "scheduler": (scheduler, Scheduler), "rng": (rng, Rng)}
        for what, (value, kind) in effects.items():
            if value is not None and not isinstance(value, kind):
                raise WrongType(f"{what} must be a {kind.__name__}, got {value!r}")
        if on_give_up is not None and not callable(on_give_up):
            raise WrongType(f"on_give_up must be callable or None, got {on_give_up!r}")
        check_child_id(name, "name")
        self._clock = clock
        self._scheduler = scheduler
        self._rng = rng
        self._name = name
        self._strategy = strategy
        self._call_timeout = check_seconds(call_timeout, "call_timeout", allow_zero=False)
        self._settings = partial(
            SupervisorConfig, name, specs, strategy, intensity, period, on_give_up=on_give_up
        )
        self._persistent = Persistent()
        self._address: ActorAddress | None = None
        self._monitor: _RootMonitor | None = None
        self._actor: SupervisorActor | None = None
        self._nested = False
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        state = "running" if self.is_alive() else "stopped"
        return f"<Supervisor {self._name} {self._strategy.name} ({state})>"

    # --- lifecycle -------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The supervisor's name (its address name; child addresses are ``name/id``)."""
        return self._name

    @property
    def address(self) -> ActorAddress:
        """The supervisor actor's address; raises SupervisorStopped if never started."""
        address = self._address
        if address is None:
            raise SupervisorStopped(f"supervisor {self._name} was never started")
        return address

    def is_alive(self) -> bool:
        """Whether the supervisor is running (or being restarted by its parent)."""
        address = self._address
        return address is not None and address.is_alive()

    def start(self, timeout: float = 30.0) -> Supervisor:
        """Start this root supervisor and its children in order, waiting up to ``timeout``
        seconds (not from an actor); returns ``self``.  Raises ``StartFailed`` (the
        started children are stopped again), ``SupervisorError`` if running or nested."""
        timeout = check_seconds(timeout, "timeout", allow_zero=False)
        monitor = self._launch()
        if current_actor() is not None:
            return self  # an actor must not block: it will hear about failures later
        started = monitor.started_event.wait(timeout)
        thread = self._actor._aura_thread if self._actor is not None else None
        if started and monitor.kind is not None and thread is not None:
            thread.join(timeout)  # its children are stopped: return once it is gone too
        if not started:
            self.address.tell(m.StopSupervisor())
            raise StartFailed(f"supervisor {self._name} did not start within {timeout} s")
        if monitor.kind is not None:
            raise StartFailed(f"supervisor {self._name} failed to start: {monitor.reason}")
        return self

    async def start_async(self, timeout: float = 30.0) -> Supervisor:
        """:meth:`start` for asyncio: awaits the children's start without blocking the loop."""
        return await asyncio.to_thread(self.start, timeout)

    def _launch(self) -> _RootMonitor:
        with self._lock:
            if self._nested:
                raise SupervisorError(
                    f"supervisor {self._name} is the child of another supervisor, which starts it"
                )
            if self._monitor is not None and not self._monitor.exited_event.is_set():
                raise SupervisorError(f"supervisor {self._name} is already running")
            address = self._address or ActorAddress(self._name)
            address._reopen()
            monitor = _RootMonitor()
            self._persistent.incarnation += 1
            actor = SupervisorActor(self._config(None), self._persistent)
            self._address, self._monitor, self._actor = address, monitor, actor
            address._attach(actor, self._persistent.incarnation, monitor)
        return monitor

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the children in reverse order, then the supervisor; idempotent.  Waits up
        to ``timeout`` seconds overall (from an actor it only tells).  A nested one is
        stopped by its parent's ``terminate_child``."""
        timeout = check_seconds(timeout, "timeout", allow_zero=False)
        address = self._address
        if address is None or not address.is_alive():
            return
        if current_actor() is not None:
            address.tell(m.StopSupervisor())
            return
        deadline = time.monotonic() + timeout
        reply = address.ask(m.StopSupervisor(), timeout)
        threads: list[threading.Thread] = list(reply) if isinstance(reply, tuple) else []
        if self._actor is not None and self._actor._aura_thread is not None:
            threads.append(self._actor._aura_thread)  # and the supervisor's own
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> Supervisor:
        if not self.is_alive():
            self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- dynamic API -----------------------------------------------------------------

    def start_child(self, spec: ChildSpec, timeout: float | None = None) -> ActorAddress:
        """Add ``spec``, start it after the others, return its address (AlreadyPresent,
        StartFailed: the spec is not kept)."""
        if not isinstance(spec, ChildSpec):
            raise WrongType(f"spec must be a ChildSpec, got {type(spec).__name__} {spec!r}")
        return self._call(StartChildRequest(spec), timeout)

    def terminate_child(self, child_id: str, timeout: float | None = None) -> None:
        """Stop a child and keep its spec (not a TEMPORARY one's); idempotent (NotFound)."""
        self._call(m.TerminateChild(check_child_id(child_id)), timeout)

    def restart_child(self, child_id: str, timeout: float | None = None) -> ActorAddress:
        """Start a terminated child again; return its (unchanged) address (NotFound,
        RunningChild if it runs or is being restarted, StartFailed)."""
        return self._call(m.RestartChild(check_child_id(child_id)), timeout)

    def delete_child(self, child_id: str, timeout: float | None = None) -> None:
        """Forget a terminated child's spec; its address closes for good (NotFound,
        RunningChild)."""
        self._call(m.DeleteChild(check_child_id(child_id)), timeout)

    def which_children(self, timeout: float | None = None) -> tuple[ChildInfo, ...]:
        """Every child in start order: id, address (None if terminated), type, status, restarts."""
        return self._call(m.WhichChildren(), timeout)

    def count_children(self, timeout: float | None = None) -> ChildCounts:
        """OTP ``count_children``: specs, active, supervisors, workers."""
        rows = self.which_children(timeout)
        supervisors = sum(1 for c in rows if c.type is ChildType.SUPERVISOR)
        active = sum(1 for c in rows if c.status in _ACTIVE)
        return ChildCounts(len(rows), active, supervisors, len(rows) - supervisors)

    def address_of(self, child_id: str, timeout: float | None = None) -> ActorAddress:
        """The stable address of a child (valid across its restarts). Raises NotFound."""
        return self._call(m.AddressOf(check_child_id(child_id)), timeout)

    def child_address(self, child_id: str) -> ActorAddress:
        """A child's stable address read without an ask (for a child factory); NotFound."""
        if not isinstance(child_id, str):
            raise WrongType(f"child_id must be a str, got {type(child_id).__name__} {child_id!r}")
        persistent = self._persistent
        with persistent.lock:
            slot = persistent.slots.get(child_id)
        if slot is None:
            raise NotFound(f"supervisor {self.name!r} has no child {child_id!r}")
        return slot.address

    # --- observation -----------------------------------------------------------------

    def subscribe(self, callback: Callable[[m.SupervisionEvent], None]) -> Callable[[], None]:
        """Call ``callback(event)`` for every supervision event, in the supervisor's thread
        (quick, no dynamic calls; exceptions logged; survives restarts); returns an
        unsubscribe function."""
        if not callable(callback):
            raise WrongType(f"callback must be callable, got {callback!r}")
        persistent = self._persistent
        with persistent.lock:
            persistent.subscribers.append(callback)

        def unsubscribe() -> None:
            with persistent.lock:
                if callback in persistent.subscribers:
                    persistent.subscribers.remove(callback)

        return unsubscribe

    def events(self) -> dict[EventKind, int]:
        """How many events of each kind happened so far (all kinds present)."""
        with self._persistent.lock:
            return dict(self._persistent.counts)

    def restart_count(self, child_id: str) -> int:
        """How many times ``child_id`` was restarted after a failure (0 if never/unknown)."""
        check_child_id(child_id)
        with self._persistent.lock:
            return self._persistent.restarts.get(child_id, 0)

    # --- internals -------------------------------------------------------------------

    def _config(self, context: ChildContext | None) -> SupervisorConfig:
        """An incarnation's settings: its own effects, else the parent's, else the system's."""
        clock, scheduler = self._clock, self._scheduler
        if clock is None and scheduler is None and context is not None:
            clock, scheduler = context.clock, context.scheduler
        else:  # with neither: the process-wide pair the actors default to (one timer thread)
            clock, scheduler = resolve_effects(clock, scheduler)
        rng = self._rng or (context.rng if context is not None else None) or SystemRng()
        return self._settings(clock=clock, scheduler=scheduler, rng=rng)

    def _make_actor(self, context: ChildContext) -> AuraActor:
        """Called by a parent supervisor: a new incarnation bound to ``context.address``."""
        with self._lock:
            if self._monitor is not None and not self._monitor.exited_event.is_set():
                raise SupervisorError(
                    f"supervisor {self._name} is running as a root; it cannot also be a child"
                )
            persistent = context.stash.setdefault(STASH_KEY, self._persistent)
            self._persistent = persistent
            self._nested = True
            self._address = context.address
            actor = SupervisorActor(self._config(context), persistent)
            self._actor = actor
            return actor

    def _call(self, message: Request[R], timeout: float | None) -> R:
        address = self.address
        caller = current_actor()
        if caller is not None and caller._aura_address is address:
            # A child factory or an event subscriber runs in the supervisor's own thread:
            # the ask could only time out, so say so at once.
            raise SupervisorError(
                f"supervisor {self._name}: {type(message).__name__} called from the "
                "supervisor's own thread (a child factory or an event subscriber) would "
                "wait for itself; use child_address() there, or tell from elsewhere"
            )
        seconds = self._call_timeout if timeout is None else timeout
        try:
            return address.call(message, seconds)
        except ActorStopped as exc:
            if isinstance(exc, SupervisorStopped):
                raise
            raise SupervisorStopped(f"supervisor {self._name} is stopped ({exc})") from None
