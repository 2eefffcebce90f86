"""One task runtime for actors: generators suspended on what they wait for.

A task runs on its actor's thread; it yields a step and is resumed there with its
result or its error thrown in: :class:`Ask` another actor (``yield from call(...)``
is the typed form; ``Ack`` resumes with None), :class:`Send` a network request,
:class:`Await` a future, :class:`Sleep`, or :class:`WaitFor` a :meth:`Tasks.notify`.
A resume reaches only the step it was meant for; a reply for nobody goes to the
``give_back`` hook (so a loan or session is returned); an ``AuraError`` escaping a
task ends that task only, any other exception crashes the actor.  Use: one
:class:`Tasks` per actor, :class:`TaskHost` mixed in, :meth:`Tasks.abandon` when it ends.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable, Generator, Hashable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast

from aura_sync.actors._reply import ReplySlot, ask_timeout
from aura_sync.actors.base import LocalMessage, handles
from aura_sync.effects import Scheduler, TimerHandle
from aura_sync.errors import AskTimeout, AuraError
from aura_sync.messages import Ack, ErrorReply, Message, Request

if TYPE_CHECKING:
    from aura_sync.actors.address import ActorAddress
    from aura_sync.actors.base import AuraActor

__all__ = [
    "Ask",
    "Await",
    "Requester",
    "Resume",
    "Send",
    "Sleep",
    "Step",
    "Task",
    "TaskHost",
    "Tasks",
    "WaitFor",
    "call",
]

_log = logging.getLogger("aura_sync.actors.tasks")
R = TypeVar("R")


class Requester(Protocol):
    """What :class:`Send` needs of a connection."""

    def request(self, message: Message, timeout: float) -> Future[Any]:
        """Send ``message``; the future completes with the reply (or an error)."""


@dataclass(frozen=True, slots=True)
class Ask:
    """Ask ``target`` for ``message``; resumed with the reply (errors thrown)."""

    target: ActorAddress
    message: Any
    timeout: float


@dataclass(frozen=True, slots=True)
class Send:
    """A network request on ``connection``; resumed with the reply (errors thrown)."""

    connection: Requester
    message: Message
    timeout: float


@dataclass(frozen=True, slots=True)
class Await:
    """Wait for ``future``; after ``timeout`` seconds :class:`AskTimeout` is thrown."""

    future: Future[Any]
    timeout: float


@dataclass(frozen=True, slots=True)
class Sleep:
    """Resume after ``delay`` seconds (scheduler time) with ``None``."""

    delay: float


@dataclass(frozen=True, slots=True)
class WaitFor:
    """Resume when :meth:`Tasks.notify` is called with ``key``; ``timeout`` None waits on."""

    key: Hashable
    timeout: float | None = None


Step = Ask | Send | Await | Sleep | WaitFor
Task = Generator[Step, Any, None]
GiveBack = Callable[[Ask, Any, bool], None]
"""``give_back(ask, reply, delivered)``: a reply nobody will use (``delivered`` False: the
replier's ``slot.set`` returned False)."""


def call(target: ActorAddress, request: Request[R], timeout: float) -> Generator[Step, Any, R]:
    """``reply = yield from call(address, request, timeout)``: the typed ask of a task."""
    reply = yield Ask(target, request, timeout)
    return cast(R, reply)


@dataclass(frozen=True, slots=True)
class Resume(LocalMessage):
    """What task ``task`` waited for at step ``step`` has arrived."""

    task: int
    step: int
    value: Any
    ask: Ask | None = None


class _Slot(ReplySlot):
    """Reply slot of an :class:`Ask`: forwards the reply to the owner as a :class:`Resume`."""

    __slots__ = ("_ask", "_give_back", "_owner", "_step", "_task", "orphaned", "timed_out")

    def __init__(
        self, owner: ActorAddress, task: int, step: int, ask: Ask, give_back: GiveBack
    ) -> None:
        super().__init__()
        self._owner = owner
        self._task = task
        self._step = step
        self._ask = ask
        self._give_back = give_back
        self.orphaned = False
        self.timed_out = False

    def set(self, reply: Any) -> bool:
        if super().set(reply):
            return True
        if self.timed_out:
            self._give_back(self._ask, reply, False)
        return False

    def _deliver(self, reply: Any) -> None:
        if self.orphaned:
            self._give_back(self._ask, reply, True)
        else:
            self._owner.tell(Resume(self._task, self._step, reply, ask=self._ask))


@dataclass(slots=True)
class _Running:
    gen: Task
    label: str
    step: int = 0
    timer: TimerHandle | None = None
    slot: _Slot | None = None
    waiting: Hashable | None = None


def _no_give_back(ask: Ask, reply: Any, delivered: bool) -> None:
    if not isinstance(reply, Ack | ErrorReply):
        _log.debug("event=unused_reply ask=%s reply=%s", type(ask.message).__name__, reply)


class Tasks:
    """The tasks of one actor incarnation, resumed through ``owner``'s address; ``ids``
    (share one across incarnations), ``give_back`` (replies nobody will use; default:
    drop them), ``answered`` (if given, counts the asks answered per target name)."""

    def __init__(
        self,
        owner: AuraActor,
        scheduler: Scheduler,
        *,
        ids: itertools.count[int] | None = None,
        give_back: GiveBack | None = None,
        answered: dict[str, int] | None = None,
    ) -> None:
        self._owner = owner
        self._scheduler = scheduler
        self._ids = ids if ids is not None else itertools.count(1)
        self._give_back = give_back or _no_give_back
        self._answered = answered
        self._running: dict[int, _Running] = {}
        self._waiting: dict[Hashable, int] = {}

    def spawn(self, gen: Task, label: str) -> int:
        """Start ``gen`` now (it runs to its first step); returns its task id."""
        task_id = next(self._ids)
        self._running[task_id] = _Running(gen, label)
        self._step(task_id, None, None)
        return task_id

    def notify(self, key: Hashable, value: Any = None) -> bool:
        """Resume the task waiting on ``key`` with ``value`` now; False if none waits."""
        task_id = self._waiting.pop(key, None)
        if task_id is None:
            return False
        task = self._running[task_id]
        self._settle(task)
        self._step(task_id, value, None)
        return True

    def resume(self, msg: Resume) -> None:
        """Handle a :class:`Resume` (the actor's handler calls this)."""
        task = self._running.get(msg.task)
        if task is None or task.step != msg.step:
            if msg.ask is not None:  # late answer for an abandoned or timed-out wait
                self._give_back(msg.ask, msg.value, True)
            return
        self._settle(task)
        value: Any = msg.value
        error: BaseException | None = None
        if msg.ask is not None:
            timed_out = isinstance(value, ErrorReply) and value.error_type == "AskTimeout"
            if self._answered is not None and not timed_out:
                name = msg.ask.target.name
                self._answered[name] = self._answered.get(name, 0) + 1
            if value.__class__ is Ack:
                value = None
        if isinstance(value, Future):
            error = value.exception()
            value = value.result() if error is None else None
        elif isinstance(value, BaseException):
            value, error = None, value
        if isinstance(value, ErrorReply):
            error = value.to_exception()
            value = None
        self._step(msg.task, value, error)

    def abandon(self, why: str) -> None:
        """End every task (stop or crash): close them; late replies are given back."""
        running = list(self._running.values())
        self._running.clear()
        self._waiting.clear()
        for task in running:
            if task.timer is not None:
                task.timer.cancel()
            if task.slot is not None:
                task.slot.orphaned = True
            task.gen.close()
        if running:
            _log.debug("event=tasks_abandoned count=%d reason=%r", len(running), why)

    # --- internals ----------------------------------------------------------------

    def _settle(self, task: _Running) -> None:
        task.slot = None
        if task.timer is not None:
            task.timer.cancel()
            task.timer = None
        if task.waiting is not None:
            self._waiting.pop(task.waiting, None)
            task.waiting = None

    def _step(self, task_id: int, value: Any, error: BaseException | None) -> None:
        task = self._running.get(task_id)
        if task is None:
            return
        while True:
            try:
                step = task.gen.send(value) if error is None else task.gen.throw(error)
            except BaseException as exc:  # the task ended: an AuraError ends it only
                self._running.pop(task_id, None)
                if isinstance(exc, AuraError):
                    _log.info("event=task_failed task=%s error=%r", task.label, str(exc))
                elif not isinstance(exc, StopIteration):
                    raise
                return
            task.step += 1
            value, error = None, None
            try:
                self._perform(task_id, task, step)
            except AuraError as exc:  # could not even start: resume with the error at once
                error = exc
                continue
            return

    def _perform(self, task_id: int, task: _Running, step: Step) -> None:
        n = task.step
        owner = self._owner.address

        def resume_after(delay: float, value: Any) -> TimerHandle:
            return self._scheduler.call_after(delay, lambda: owner.tell(Resume(task_id, n, value)))

        if isinstance(step, Ask):
            slot = _Slot(owner, task_id, n, step, self._give_back)
            task.slot = slot

            def expire() -> None:
                slot.timed_out = True
                late = ask_timeout(step.target, step.message, step.timeout)
                slot.set(ErrorReply.from_exception(late))

            task.timer = self._scheduler.call_after(step.timeout, expire)
            step.target.ask_with(step.message, slot)
        elif isinstance(step, Send):
            future = step.connection.request(step.message, step.timeout)
            future.add_done_callback(lambda f: owner.tell(Resume(task_id, n, f)))
        elif isinstance(step, Await):
            once = threading.Lock()

            def finish(value: Any) -> None:
                if once.acquire(False):
                    owner.tell(Resume(task_id, n, value))

            task.timer = self._scheduler.call_after(
                step.timeout, lambda: finish(AskTimeout(f"not done within {step.timeout} s"))
            )
            step.future.add_done_callback(finish)
        elif isinstance(step, Sleep):
            task.timer = resume_after(step.delay, None)
        elif isinstance(step, WaitFor):
            if step.key in self._waiting:
                raise AuraError(f"two tasks wait for {step.key!r}")
            self._waiting[step.key] = task_id
            task.waiting = step.key
            if step.timeout is not None:
                missed = AskTimeout(f"no {step.key!r} within {step.timeout} s")
                task.timer = resume_after(step.timeout, missed)
        else:
            raise TypeError(f"a task yielded {step!r}, not a step")


class TaskHost:
    """Mixin for an actor running :class:`Tasks` in ``self._tasks``: handles :class:`Resume`."""

    _tasks: Tasks

    @handles(Resume)
    def _on_task_resume(self, msg: Resume) -> None:
        self._tasks.resume(msg)
