"""The supervisor actor: OTP supervision as a non-blocking sequence of tasks, and
:class:`Persistent`, what outlives its incarnations.

Each operation (start the children, restart a group, a dynamic-API call, shut
down) is a task (:mod:`aura_sync.actors._tasks`) waiting with ``WaitFor((child_id,
incarnation, phase))``, resumed by ``ChildStarted`` / ``ChildExited`` or a
``_Deadline`` timer.  One runs at a time, as in OTP; reads are answered at once; a
restart backoff is a scheduled ``BackoffElapsed``.  Rules: :mod:`aura_sync.supervisors`.
A nested supervisor keeps its :class:`Persistent` (each child's address, stash and
incarnation counter, subscribers, counters) in its parent's ``ChildContext.stash``,
so grandchildren keep their addresses and state when the supervisor in between restarts.
"""

from __future__ import annotations

import collections
import itertools
import logging
import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from aura_sync.actors._mailbox import LocalMessage
from aura_sync.actors._reply import DEFERRED, ReplySlot
from aura_sync.actors._tasks import Resume, Task, Tasks, WaitFor
from aura_sync.actors.address import ActorAddress
from aura_sync.actors.base import AuraActor, _describe, handles
from aura_sync.effects import Clock, Rng, Scheduler, TimerHandle
from aura_sync.errors import (
    AlreadyPresent,
    AuraError,
    NotFound,
    RunningChild,
    StartFailed,
    SupervisorGaveUp,
    SupervisorStopped,
    WrongType,
)
from aura_sync.messages import Ack, ErrorReply, Request
from aura_sync.messages import supervision as m
from aura_sync.messages.supervision import ChildStatus, ChildType, EventKind, ExitKind
from aura_sync.supervisors.spec import ChildContext, ChildSpec, Restart, Strategy

logger = logging.getLogger("aura_sync.supervisors")

STASH_KEY = "aura_sync.supervisor"
"""Key under which a nested supervisor keeps its :class:`Persistent` in its own stash."""


@dataclass(frozen=True, slots=True)
class ChildInfo:
    """One row of ``which_children``: ``address`` None while terminated, ``restarts``
    counts the automatic restarts."""

    id: str
    address: ActorAddress | None
    type: ChildType
    status: ChildStatus
    restarts: int


@dataclass(slots=True, eq=False)
class Slot:
    """A child's identity across restarts: address, stash, incarnation counter."""

    address: ActorAddress
    stash: dict[str, Any] = field(default_factory=dict)
    incarnation: int = 0


class Persistent:
    """Per-supervisor state that survives the supervisor's own restarts (thread-safe)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.slots: dict[str, Slot] = {}
        self.subscribers: list[Callable[[m.SupervisionEvent], None]] = []
        self.counts: dict[EventKind, int] = dict.fromkeys(EventKind, 0)
        self.restarts: dict[str, int] = {}
        self.incarnation = 0
        # Restart-group tokens and task ids: a BackoffElapsed or Resume of a dead
        # incarnation must never match a group or task of the next one.
        self.tokens = itertools.count(1)
        self.task_ids = itertools.count(1)

    def record(self, event: m.SupervisionEvent) -> list[Callable[[m.SupervisionEvent], None]]:
        """Count ``event``; return the subscribers to notify."""
        with self.lock:
            self.counts[event.kind] += 1
            return list(self.subscribers)

    def count_restart(self, child_id: str) -> None:
        """Count one automatic restart (attempt) of ``child_id``."""
        with self.lock:
            self.restarts[child_id] = self.restarts.get(child_id, 0) + 1


@dataclass(frozen=True, slots=True)
class StartChildRequest(LocalMessage, Request[ActorAddress]):
    """Add and start ``spec`` (a callable inside: in-process only, never encoded)."""

    spec: ChildSpec


_START = "start"
_STOP = "stop"
Op = Task
Stage = Generator[Any, Any, tuple[bool, str]]


Key = tuple[str, int, str]
"""What a step waits for: (child id, incarnation, phase)."""


@dataclass(frozen=True, slots=True)
class _Deadline(LocalMessage):
    """Timer, armed before the child runs: the wait for ``key`` is over."""

    key: Key


def _error(kind: type[AuraError], text: str) -> ErrorReply:
    return ErrorReply(kind.__name__, text)


@dataclass(frozen=True, slots=True)
class SupervisorConfig:
    """Everything a supervisor incarnation needs (resolved effects included)."""

    name: str
    specs: tuple[ChildSpec, ...]
    strategy: Strategy
    intensity: int
    period: float
    clock: Clock
    scheduler: Scheduler
    rng: Rng
    on_give_up: Callable[[SupervisorGaveUp], None] | None


@dataclass(slots=True, eq=False)
class _Child:
    """The supervisor's record of one child (current incarnation and status)."""

    spec: ChildSpec
    slot: Slot
    status: ChildStatus = ChildStatus.TERMINATED
    actor: AuraActor | None = None
    is_supervisor: bool = False
    pending_exit: m.ChildExited | None = None
    restart_token: int | None = None
    backoff_timer: TimerHandle | None = None
    backoff_attempt: int = 0
    last_start: float | None = None

    @property
    def id(self) -> str:
        return self.spec.id


@dataclass(frozen=True, slots=True)
class _ChildLink:
    """Link of a child's address: its thread tells the supervisor it started / exited."""

    supervisor: ActorAddress
    child_id: str

    def started(self, address: ActorAddress, incarnation: int) -> None:
        self.supervisor.tell(m.ChildStarted(self.child_id, incarnation))

    def exited(self, address: ActorAddress, incarnation: int, kind: ExitKind, reason: str) -> None:
        self.supervisor.tell(m.ChildExited(self.child_id, incarnation, kind, reason))


class SupervisorActor(AuraActor):
    """One incarnation of a supervisor (see the module docstring)."""

    _aura_reports_started = False  # it reports once all children have started

    def __init__(self, config: SupervisorConfig, persistent: Persistent) -> None:
        super().__init__()
        self._cfg = config
        self._p = persistent
        self._clock = config.clock
        self._scheduler = config.scheduler
        self._children: dict[str, _Child] = {}
        self._restart_times: collections.deque[float] = collections.deque()
        # Task ids unique across incarnations: a Resume queued for a dead one never matches.
        self._tasks = Tasks(self, config.scheduler, ids=persistent.task_ids)
        self._busy = False  # an operation is running (waiting or not)
        self._ops: collections.deque[Callable[[], Op]] = collections.deque()
        self._tokens = self._p.tokens  # unique across incarnations: see BackoffElapsed
        self._backoffs: dict[int, list[str]] = {}
        self._closing = False  # refuses new API calls (shutdown or give-up under way)
        self._finished = False  # a terminal operation ended: run nothing more

    # --- lifecycle -------------------------------------------------------------------

    def on_start(self) -> None:
        for spec in self._cfg.specs:
            self._children[spec.id] = self._new_child(spec)
        self._submit(self._op_start_all)

    def on_stop(self) -> None:
        self._end_incarnation()
        if any(ch.actor is not None for ch in self._children.values()):
            self._emergency_stop("supervisor stopped without shutting down its children")

    def on_crash(self, exc: BaseException) -> None:
        self._end_incarnation()
        self._emergency_stop(f"supervisor crashed: {_describe(exc)}")

    def _end_incarnation(self) -> None:
        """A dead incarnation leaves no restart timer and no task behind."""
        self._tasks.abandon("supervisor incarnation ended")
        for ch in self._children.values():
            if ch.backoff_timer is not None:
                ch.backoff_timer.cancel()
                ch.backoff_timer = None
        self._backoffs.clear()

    def _emergency_stop(self, why: str) -> None:
        """Stop children from a dying supervisor thread (bounded joins; crash path only)."""
        running = [(c, c.actor) for c in reversed(self._children.values()) if c.actor is not None]
        for ch, actor in running:
            self._request_stop(ch, actor, why)
        for ch, actor in running:
            thread = actor._aura_thread
            if thread is not None:
                thread.join(ch.spec.shutdown)
                if thread.is_alive():
                    self._kill(actor)
        self._close_all(why)

    # --- operation queue ---------------------------------------------------------------

    def _submit(self, op: Callable[[], Op]) -> None:
        self._ops.append(op)
        self._next()

    def _next(self) -> None:
        """Start queued operations, one at a time, until one waits (or none is left)."""
        while not self._busy and self._ops and not self._finished:
            self._busy = True
            self._tasks.spawn(self._run(self._ops.popleft()), "supervisor operation")

    def _run(self, op: Callable[[], Op]) -> Op:
        try:
            yield from op()
        finally:
            self._busy = False

    def _emit(self, kind: EventKind, child_id: str, incarnation: int, reason: str) -> None:
        event = m.SupervisionEvent(
            kind, self._cfg.name, child_id, incarnation, reason, float(self._clock.now())
        )
        for callback in self._p.record(event):
            try:
                callback(event)
            except Exception:
                logger.exception("supervision event subscriber %r raised", callback)

    # --- events from children and timers ----------------------------------------------

    def _deadline(self, key: Key, seconds: float) -> TimerHandle:
        return self._scheduler.send_after(seconds, self.address, _Deadline(key))

    @handles(_Deadline, m.ChildStarted)
    def _on_wake(self, msg: _Deadline | m.ChildStarted) -> None:
        key = msg.key if isinstance(msg, _Deadline) else (msg.child_id, msg.incarnation, _START)
        if self._tasks.notify(key, msg):  # else it came too late: ignored
            self._next()

    @handles(Resume)
    def _on_resume(self, msg: Resume) -> None:
        self._tasks.resume(msg)
        self._next()

    @handles(m.ChildExited)
    def _on_child_exited(self, msg: m.ChildExited) -> None:
        key = (msg.child_id, msg.incarnation)
        if any(self._tasks.notify((*key, phase), msg) for phase in (_START, _STOP)):
            self._next()
            return
        ch = self._children.get(msg.child_id)
        if ch is None or ch.slot.incarnation != msg.incarnation:
            return  # an earlier incarnation (abandoned, or of a previous supervisor)
        if ch.status is not ChildStatus.RUNNING:
            return
        ch.status = ChildStatus.RESTARTING
        ch.actor = None
        ch.pending_exit = msg
        failed = msg.kind.is_abnormal or ch.spec.restart is Restart.PERMANENT
        reason = f"{msg.kind.value}: {msg.reason}"
        self._emit(
            EventKind.FAILED if failed else EventKind.STOPPED, ch.id, msg.incarnation, reason
        )
        self._submit(partial(self._op_child_exited, msg))

    @handles(m.BackoffElapsed)
    def _on_backoff_elapsed(self, msg: m.BackoffElapsed) -> None:
        ids = self._backoffs.pop(msg.token, None)
        if ids is not None and not self._closing:
            self._submit(partial(self._op_start_group, ids, msg.token))

    # --- API requests ------------------------------------------------------------------------

    @handles(StartChildRequest, m.TerminateChild, m.RestartChild, m.DeleteChild)
    def _api_change(self, msg: Any) -> Any:
        """Queue a dynamic-API operation; it answers the current ask when it ends."""
        if self._closing:
            return _error(SupervisorStopped, f"supervisor {self._cfg.name} is shutting down")
        self._submit(partial(self._op_api, msg, self.current_reply()))
        return DEFERRED

    @handles(m.StopSupervisor)
    def _api_stop(self, msg: m.StopSupervisor) -> Any:
        if self._closing:
            return ()  # no threads to join: an earlier stop or give-up has them
        self._closing = True
        self._submit(partial(self._op_shutdown, self.current_reply()))
        return DEFERRED

    @handles(m.WhichChildren)
    def _api_which_children(self, msg: m.WhichChildren) -> tuple[ChildInfo, ...]:
        with self._p.lock:
            restarts = dict(self._p.restarts)
        return tuple(
            ChildInfo(
                ch.id,
                None if ch.status is ChildStatus.TERMINATED else ch.slot.address,
                ChildType.SUPERVISOR if ch.is_supervisor else ChildType.WORKER,
                ch.status,
                restarts.get(ch.id, 0),
            )
            for ch in self._children.values()
        )

    @handles(m.AddressOf)
    def _api_address_of(self, msg: m.AddressOf) -> ActorAddress | ErrorReply:
        ch = self._children.get(msg.child_id)
        return self._not_found(msg.child_id) if ch is None else ch.slot.address

    def _not_found(self, child_id: str) -> ErrorReply:
        return _error(NotFound, f"supervisor {self._cfg.name} has no child {child_id!r}")

    # --- operations -------------------------------------------------------------------------

    def _op_start_all(self) -> Op:
        for ch in list(self._children.values()):
            ok, why = yield from self._start_child(ch, EventKind.STARTED)
            if not ok:  # stop the ones started before it, in reverse
                self._closing = True
                yield from self._stop_all(f"sibling {ch.id} failed to start", "failed to start")
                self._aura_stop_with(ExitKind.START_FAILED, why)
                return
        self._aura_report_started()

    def _op_child_exited(self, msg: m.ChildExited) -> Op:
        ch = self._children.get(msg.child_id)
        if ch is None or ch.pending_exit is not msg:
            return  # absorbed: an operation in between restarted or removed the child
        ch.pending_exit = None
        restart = ch.spec.restart
        if restart is Restart.PERMANENT or (restart is Restart.TRANSIENT and msg.kind.is_abnormal):
            yield from self._restart(ch, f"{msg.kind.value}: {msg.reason}")
        else:
            self._retire(ch, f"exited ({msg.kind.value}) and is {restart.value}")

    def _restart(self, ch: _Child, reason: str) -> Op:
        if self._exceeds_intensity():
            yield from self._give_up(
                f"more than {self._cfg.intensity} restart(s) in {self._cfg.period} s; "
                f"last failure: {ch.id} ({reason})"
            )
            return
        self._p.count_restart(ch.id)
        group = self._restart_group(ch)
        for other in reversed(group):
            if other is not ch:
                yield from self._stop_child(other, f"restarting together with {ch.id}")
        token = next(self._tokens)
        ids: list[str] = []
        for member in group:
            if member is not ch and member.spec.restart is Restart.TEMPORARY:
                if self._children.get(member.id) is member:
                    self._remove(member, "temporary child stopped by a sibling's restart")
                continue
            member.status = ChildStatus.RESTARTING
            member.restart_token = token
            member.pending_exit = None
            ids.append(member.id)
        delay = self._backoff_delay(ch)
        if delay > 0:
            self._backoffs[token] = ids
            ch.backoff_timer = self._scheduler.send_after(
                delay, self.address, m.BackoffElapsed(ch.id, token)
            )
            return
        yield from self._op_start_group(ids, token)

    def _op_start_group(self, ids: list[str], token: int) -> Op:
        for child_id in ids:
            ch = self._children.get(child_id)
            if (
                ch is None
                or ch.status is not ChildStatus.RESTARTING
                or ch.restart_token != token
                or ch.pending_exit is not None
            ):
                continue
            ch.restart_token = None
            ch.backoff_timer = None
            ok, why = yield from self._start_child(ch, EventKind.RESTARTED)
            if not ok:
                # OTP's try_again: failing to restart is a new failure of this child.
                retry = m.ChildExited(ch.id, ch.slot.incarnation, ExitKind.START_FAILED, why)
                ch.status = ChildStatus.RESTARTING
                ch.pending_exit = retry
                self._submit(partial(self._op_child_exited, retry))
                return

    def _op_api(self, msg: Any, reply: ReplySlot | None) -> Op:
        if isinstance(msg, StartChildRequest):
            answer = yield from self._start_new(msg.spec)
        elif (ch := self._children.get(msg.child_id)) is None:
            answer = self._not_found(msg.child_id)
        elif isinstance(msg, m.TerminateChild):
            yield from self._stop_child(ch, "terminated")
            self._cancel_pending(ch)
            self._retire(ch, "terminated")
            answer = Ack()
        elif ch.status is not ChildStatus.TERMINATED:
            answer = _error(RunningChild, f"child {ch.id!r} is {ch.status.value}")
        elif isinstance(msg, m.DeleteChild):
            self._remove(ch, "deleted")
            answer = Ack()
        else:  # RestartChild
            ok, why = yield from self._start_child(ch, EventKind.STARTED)
            if not ok:
                ch.slot.address._close(why)
            answer = ch.slot.address if ok else _error(StartFailed, why)
        if reply is not None:
            reply.set(answer)

    def _start_new(self, spec: ChildSpec) -> Generator[Any, Any, Any]:
        existing = self._children.get(spec.id)
        if existing is not None:
            state = "started" if existing.status is not ChildStatus.TERMINATED else "present"
            return _error(AlreadyPresent, f"child {spec.id!r} is already {state}")
        ch = self._children[spec.id] = self._new_child(spec)
        ok, why = yield from self._start_child(ch, EventKind.STARTED)
        if ok:
            return ch.slot.address
        if self._children.get(spec.id) is ch:
            self._remove(ch, why)
        return _error(StartFailed, why)

    def _op_shutdown(self, reply: ReplySlot | None) -> Op:
        threads = yield from self._stop_all("supervisor stopping", "stopped")
        if reply is not None:
            reply.set(threads)
        self._aura_stop_with(ExitKind.NORMAL, "stopped")

    def _give_up(self, reason: str) -> Op:
        self._closing = True
        logger.error("supervisor %s gives up: %s", self._cfg.name, reason)
        self._emit(EventKind.GAVE_UP, "", 0, reason)
        yield from self._stop_all("supervisor gave up", "gave up")
        callback = self._cfg.on_give_up
        if callback is not None:
            try:
                callback(SupervisorGaveUp(f"supervisor {self._cfg.name} gave up: {reason}"))
            except Exception:
                logger.exception("on_give_up of supervisor %s raised", self._cfg.name)
        self._aura_stop_with(ExitKind.GAVE_UP, reason)

    def _stop_all(self, why: str, done: str) -> Generator[Any, Any, tuple[threading.Thread, ...]]:
        """Stop every child in reverse order; the threads of those that stopped in time."""
        threads: list[threading.Thread] = []
        for ch in reversed(list(self._children.values())):
            thread = ch.actor._aura_thread if ch.actor is not None else None
            stopped, _ = yield from self._stop_child(ch, why)
            if stopped and thread is not None:
                threads.append(thread)
            self._cancel_pending(ch)
        self._close_all(f"supervisor {self._cfg.name} {done}")
        self._finished = True
        return tuple(threads)

    # --- steps --------------------------------------------------------------------------------

    def _start_child(self, ch: _Child, kind: EventKind) -> Stage:
        """Start a new incarnation of ``ch``; wait for it to report; (ok, why not)."""
        slot = ch.slot
        incarnation = slot.incarnation + 1
        context = ChildContext(
            ch.id,
            slot.address,
            incarnation,
            slot.stash,
            self._scheduler,
            self._clock,
            self._cfg.rng,
            self._cfg.name,
        )
        key = (ch.id, incarnation, _START)
        timer: TimerHandle | None = None
        try:
            actor, is_supervisor = self._instantiate(ch, context)
            slot.incarnation = incarnation
            slot.address._reopen()
            timer = self._deadline(key, ch.spec.start_timeout)  # counts from before it runs
            slot.address._attach(actor, incarnation, _ChildLink(self.address, ch.id))
        except Exception as exc:
            if timer is not None:
                timer.cancel()
            why = f"start of {ch.id!r} raised {_describe(exc)}"
            logger.error("supervisor %s: %s", self._cfg.name, why, exc_info=exc)
            return self._failed_start(ch, incarnation, why)
        ch.status = ChildStatus.STARTING
        ch.actor = actor
        ch.is_supervisor = is_supervisor
        event = yield WaitFor(key)
        timer.cancel()
        if isinstance(event, m.ChildStarted):
            ch.status = ChildStatus.RUNNING
            ch.last_start = self._clock.now()
            self._emit(kind, ch.id, incarnation, "")
            return True, ""
        if isinstance(event, m.ChildExited):
            why = f"{ch.id!r} failed to start ({event.kind.value}: {event.reason})"
        else:
            self._kill(actor)
            why = f"{ch.id!r} did not start within {ch.spec.start_timeout} s (abandoned)"
        return self._failed_start(ch, incarnation, why)

    def _failed_start(self, ch: _Child, incarnation: int, why: str) -> tuple[bool, str]:
        ch.status = ChildStatus.TERMINATED
        ch.actor = None
        self._emit(EventKind.FAILED, ch.id, incarnation, why)
        return False, why

    def _stop_child(self, ch: _Child, why: str) -> Stage:
        """Stop ``ch`` if it runs and wait for its exit or its shutdown timeout."""
        actor = ch.actor
        if ch.status is not ChildStatus.RUNNING or actor is None:
            return False, "not running"
        incarnation = ch.slot.incarnation
        ch.status = ChildStatus.STOPPING
        key = (ch.id, incarnation, _STOP)
        timer = self._deadline(key, ch.spec.shutdown)
        self._request_stop(ch, actor, why)
        stopped = not isinstance((yield WaitFor(key)), _Deadline)
        timer.cancel()
        if not stopped:
            self._kill(actor)
            why = f"killed: did not stop within {ch.spec.shutdown} s"
            logger.warning("supervisor %s: child %s %s", self._cfg.name, ch.id, why)
        ch.status = ChildStatus.TERMINATED
        ch.actor = None
        self._emit(EventKind.STOPPED, ch.id, incarnation, why)
        return stopped, why

    # --- helpers ----------------------------------------------------------------------------

    def _new_child(self, spec: ChildSpec) -> _Child:
        with self._p.lock:
            slot = self._p.slots.get(spec.id)
            if slot is None:
                slot = Slot(ActorAddress(f"{self.address.name}/{spec.id}"))
                self._p.slots[spec.id] = slot
        return _Child(spec, slot)

    def _instantiate(self, ch: _Child, context: ChildContext) -> tuple[AuraActor, bool]:
        from aura_sync.supervisors.supervisor import Supervisor

        made = ch.spec.start(context)
        if isinstance(made, Supervisor):
            return made._make_actor(context), True
        if isinstance(made, AuraActor):
            return made, False
        raise WrongType(
            f"start of child {ch.id!r} returned {type(made).__name__}, "
            "expected a new AuraActor or a Supervisor"
        )

    def _request_stop(self, ch: _Child, actor: AuraActor, why: str) -> None:
        if ch.is_supervisor:
            ch.slot.address.tell(m.StopSupervisor())  # it stops its own children first
        else:
            actor._aura_stop_with(ExitKind.NORMAL, why)

    def _kill(self, actor: AuraActor) -> None:
        """Abandon an incarnation that overran a timeout (and, for a supervisor, its children)."""
        actor._aura_kill()
        if isinstance(actor, SupervisorActor):
            for ch in actor._children.values():
                if ch.actor is not None:
                    self._kill(ch.actor)

    def _cancel_pending(self, ch: _Child) -> None:
        """A child in backoff or with a pending failure is simply marked terminated."""
        if ch.status is ChildStatus.RESTARTING:
            if ch.backoff_timer is not None:
                ch.backoff_timer.cancel()
            ch.backoff_timer = None
            ch.restart_token = None
            ch.pending_exit = None
            ch.status = ChildStatus.TERMINATED

    def _retire(self, ch: _Child, why: str) -> None:
        """A child that will not run again: TEMPORARY loses its spec, others are TERMINATED."""
        ch.status = ChildStatus.TERMINATED
        ch.actor = None
        if ch.spec.restart is Restart.TEMPORARY:
            if self._children.get(ch.id) is ch:
                self._remove(ch, why)
        else:
            ch.slot.address._close(why)

    def _remove(self, ch: _Child, why: str) -> None:
        del self._children[ch.id]
        with self._p.lock:
            if self._p.slots.get(ch.id) is ch.slot:
                del self._p.slots[ch.id]
        ch.slot.address._close(why)

    def _close_all(self, why: str) -> None:
        for ch in list(self._children.values()):
            self._retire(ch, why)

    def _restart_group(self, ch: _Child) -> list[_Child]:
        strategy = self._cfg.strategy
        if strategy is Strategy.ONE_FOR_ONE:
            return [ch]
        children = list(self._children.values())
        if strategy is Strategy.REST_FOR_ONE:
            children = children[children.index(ch) :]
        return children  # terminated siblings too: OTP restarts the whole group

    def _exceeds_intensity(self) -> bool:
        now = self._clock.now()
        times = self._restart_times
        times.append(now)
        period = self._cfg.period
        while times and now - times[0] > period:
            times.popleft()
        return len(times) > self._cfg.intensity

    def _backoff_delay(self, ch: _Child) -> float:
        backoff = ch.spec.backoff
        if backoff is None:
            return 0.0
        now = self._clock.now()
        if ch.last_start is not None and now - ch.last_start >= backoff.max:
            ch.backoff_attempt = 0  # it ran long enough: a new streak starts
        delay = backoff.delay(ch.backoff_attempt, self._cfg.rng)
        ch.backoff_attempt += 1
        return delay
