"""The task runtime (``aura_sync.actors._tasks``): generators resumed on their actor's thread.

Virtual time (``ManualClock``) throughout, no sockets; every wait is on a
condition with a timeout.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import pytest
from test_actors_support import no_leftover_threads, wait_until  # noqa: F401  (fixture)

from aura_sync.actors import DEFERRED, AuraActor, LocalMessage, ReplySlot, handles, spawn
from aura_sync.actors._tasks import (
    Ask,
    Await,
    Resume,
    Send,
    Sleep,
    Task,
    TaskHost,
    Tasks,
    WaitFor,
    call,
)
from aura_sync.effects import ManualClock, Scheduler
from aura_sync.errors import AskTimeout, AuraError, InvalidArgument, RequestTimeout
from aura_sync.messages import Ack, Message, Request, message

pytestmark = pytest.mark.usefixtures("no_leftover_threads")


@message(0xFE20)
class Double(Request[int]):
    value: int


@message(0xFE21)
class Note(Request[None]):
    text: str


@message(0xFE22)
class Hold(Request[int]):
    """The server keeps the reply slot until told to answer (``Release``)."""


@dataclass(frozen=True, slots=True)
class Answer(LocalMessage):
    value: int


class Server(AuraActor):
    def __init__(self) -> None:
        super().__init__()
        self.held: list[ReplySlot] = []

    @handles(Double)
    def _double(self, msg: Double) -> int:
        if msg.value < 0:
            raise InvalidArgument(f"value must be >= 0, got {msg.value}")
        return msg.value * 2

    @handles(Note)
    def _note(self, msg: Note) -> None:
        return None

    @handles(Hold)
    def _hold(self, msg: Hold) -> Any:
        slot = self.current_reply()
        assert slot is not None
        self.held.append(slot)
        return DEFERRED

    @handles(Answer)
    def _answer(self, msg: Answer) -> None:
        for slot in self.held:
            slot.set(msg.value)


@dataclass(frozen=True, slots=True)
class Run(LocalMessage):
    """Start a task made by ``make(host)`` on the host's thread."""

    make: Callable[[Host], Task]


@dataclass(frozen=True, slots=True)
class Poke(LocalMessage):
    key: str
    value: Any


@dataclass(frozen=True, slots=True)
class Boom(LocalMessage):
    """Crash the host (a non-AuraError in a handler)."""


class Host(TaskHost, AuraActor):
    """Runs tasks; records what they saw in ``log`` (read from the test thread)."""

    def __init__(self, scheduler: Scheduler) -> None:
        super().__init__()
        self.log: list[Any] = []
        self.given_back: list[tuple[Any, bool]] = []
        self.threads: set[int] = set()
        self.answered: dict[str, int] = {}
        self._tasks = Tasks(self, scheduler, give_back=self._give_back, answered=self.answered)

    def _give_back(self, ask: Ask, reply: Any, delivered: bool) -> None:
        self.given_back.append((reply, delivered))

    @handles(Run)
    def _run(self, msg: Run) -> None:
        self._tasks.spawn(msg.make(self), "test")

    @handles(Poke)
    def _poke(self, msg: Poke) -> None:
        self.log.append(("notified", self._tasks.notify(msg.key, msg.value)))

    @handles(Boom)
    def _boom(self, msg: Boom) -> None:
        raise RuntimeError("boom")

    def on_stop(self) -> None:
        self._tasks.abandon("stopping")

    def on_crash(self, exc: BaseException) -> None:
        self._tasks.abandon("crashed")

    def tasks(self) -> int:
        return len(self._tasks._running)


class Rig:
    def __init__(self) -> None:
        self.clock = ManualClock()
        self.scheduler = Scheduler(self.clock)
        self.server = spawn(Server())
        self.host_actor = Host(self.scheduler)
        self.host = spawn(self.host_actor)

    @property
    def log(self) -> list[Any]:
        return self.host_actor.log

    def run(self, make: Callable[[Host], Task]) -> None:
        self.host.tell(Run(make))

    def wait_log(self, n: int) -> None:
        wait_until(lambda: len(self.log) >= n, what=f"{n} log entries")


@pytest.fixture
def rig() -> Iterator[Rig]:
    r = Rig()
    try:
        yield r
    finally:
        r.host.stop()
        r.server.stop()


def test_a_call_resumes_with_the_typed_reply_on_the_actors_own_thread(rig: Rig) -> None:
    def task(host: Host) -> Task:
        doubled: int = yield from call(rig.server, Double(21), 1.0)
        host.log.append(doubled)
        noted = yield Ask(rig.server, Note("x"), 1.0)  # Ack resumes as None
        host.log.append(noted)
        host.log.append(threading.current_thread() is host._aura_thread)

    rig.run(task)
    rig.wait_log(3)
    assert rig.log == [42, None, True]
    assert rig.host_actor.answered == {rig.server.name: 2}


def test_an_error_reply_is_thrown_into_the_task_as_its_exception(rig: Rig) -> None:
    def task(host: Host) -> Task:
        try:
            yield from call(rig.server, Double(-1), 1.0)
        except InvalidArgument as exc:
            host.log.append(str(exc))
        host.log.append((yield from call(rig.server, Double(1), 1.0)))

    rig.run(task)
    rig.wait_log(2)
    assert rig.log == ["value must be >= 0, got -1", 2]


def test_an_ask_times_out_on_the_scheduler_and_a_late_reply_is_given_back(rig: Rig) -> None:
    def task(host: Host) -> Task:
        try:
            yield from call(rig.server, Hold(), 3.0)
        except AskTimeout as exc:
            host.log.append(type(exc).__name__)

    rig.run(task)
    wait_until(lambda: len(rig.server._actor.held) == 1, what="the held ask")  # type: ignore[union-attr]
    rig.clock.advance(2.9)
    assert rig.log == [] and rig.host_actor.tasks() == 1
    rig.clock.advance(0.1)
    rig.wait_log(1)
    assert rig.log == ["AskTimeout"]
    rig.server.tell(Answer(7))  # the reply comes after all: the replier learns nobody took it
    wait_until(lambda: rig.host_actor.given_back == [(7, False)], what="the give-back")
    assert rig.host_actor.answered == {}


def test_sleep_resumes_only_once_virtual_time_has_passed(rig: Rig) -> None:
    def task(host: Host) -> Task:
        host.log.append("before")
        yield Sleep(5.0)
        host.log.append("after")

    rig.run(task)
    rig.wait_log(1)
    rig.clock.advance(4.99)
    assert rig.host_actor.tasks() == 1 and rig.log == ["before"]
    rig.clock.advance(0.01)
    rig.wait_log(2)
    assert rig.log == ["before", "after"]


class FakeConnection:
    """A :class:`Requester` whose futures the test completes."""

    def __init__(self) -> None:
        self.sent: list[tuple[Message, float, Future[Any]]] = []
        self.refuse = False

    def request(self, msg: Message, timeout: float) -> Future[Any]:
        if self.refuse:
            raise RequestTimeout("refused at once")
        future: Future[Any] = Future()
        self.sent.append((msg, timeout, future))
        return future


def test_a_network_request_resumes_with_its_reply_or_its_exception(rig: Rig) -> None:
    conn = FakeConnection()

    def task(host: Host) -> Task:
        reply = yield Send(conn, Note("a"), 2.0)
        host.log.append(reply)
        try:
            yield Send(conn, Note("b"), 2.0)
        except RequestTimeout as exc:
            host.log.append(str(exc))
        conn.refuse = True
        try:  # failing to even send resumes the task with the error at once
            yield Send(conn, Note("c"), 2.0)
        except RequestTimeout as exc:
            host.log.append(str(exc))

    rig.run(task)
    wait_until(lambda: len(conn.sent) == 1, what="the first request")
    assert conn.sent[0][:2] == (Note("a"), 2.0)
    conn.sent[0][2].set_result(Ack())  # a network Ack stays an Ack
    wait_until(lambda: len(conn.sent) == 2, what="the second request")
    conn.sent[1][2].set_exception(RequestTimeout("no reply in 2 s"))
    rig.wait_log(3)
    assert rig.log == [Ack(), "no reply in 2 s", "refused at once"]


def test_await_resumes_with_the_result_or_times_out(rig: Rig) -> None:
    done: Future[Any] = Future()
    never: Future[Any] = Future()

    def task(host: Host) -> Task:
        host.log.append((yield Await(done, 1.0)))
        try:
            yield Await(never, 1.0)
        except AskTimeout:
            host.log.append("timeout")

    rig.run(task)
    done.set_result("ready")
    rig.wait_log(1)
    wait_until(lambda: rig.clock.pending_timers() == 1, what="the second await's timer")
    rig.clock.advance(1.0)
    rig.wait_log(2)
    assert rig.log == ["ready", "timeout"]
    never.set_result("too late")  # nobody waits any more: nothing happens
    assert rig.host_actor.tasks() == 0


def test_wait_for_is_resumed_by_notify_or_its_timeout(rig: Rig) -> None:
    def task(host: Host) -> Task:
        host.log.append((yield WaitFor("child-up")))
        try:
            yield WaitFor("child-down", 2.0)
        except AskTimeout:
            host.log.append("timeout")

    rig.run(task)
    rig.host.tell(Poke("other", 0))
    rig.host.tell(Poke("child-up", 11))
    rig.wait_log(3)
    assert rig.log == [("notified", False), 11, ("notified", True)]
    wait_until(lambda: rig.clock.pending_timers() == 1, what="the wait's timer")
    rig.clock.advance(2.0)
    rig.wait_log(4)
    assert rig.log[3] == "timeout"
    rig.host.tell(Poke("child-down", 0))  # too late: nobody waits for it any more
    rig.wait_log(5)
    assert rig.log[4] == ("notified", False)


def test_an_aura_error_ends_only_its_task(rig: Rig) -> None:
    def failing(host: Host) -> Task:
        yield Sleep(1.0)
        raise AuraError("this task gives up")

    def other(host: Host) -> Task:
        yield Sleep(2.0)
        host.log.append("other finished")

    rig.run(failing)
    rig.run(other)
    wait_until(lambda: rig.clock.pending_timers() == 2, what="both sleeps")
    rig.clock.advance(1.0)
    wait_until(lambda: rig.host_actor.tasks() == 1, what="the failed task to end")
    rig.clock.advance(1.0)
    rig.wait_log(1)
    assert rig.log == ["other finished"] and rig.host.is_alive()


def test_abandon_closes_the_tasks_and_gives_back_replies_that_come_later(rig: Rig) -> None:
    host = rig.host_actor

    def task(h: Host) -> Task:
        try:
            yield from call(rig.server, Hold(), 30.0)
        finally:
            h.log.append("closed")

    rig.run(task)
    wait_until(lambda: len(rig.server._actor.held) == 1, what="the held ask")  # type: ignore[union-attr]
    rig.host.tell(Boom())  # the host crashes: its tasks are abandoned
    wait_until(lambda: not rig.host.is_alive(), what="the crash")
    assert host.log == ["closed"]
    rig.server.tell(Answer(5))  # delivered, but to nobody: given back
    wait_until(lambda: host.given_back == [(5, True)], what="the give-back")
    assert rig.clock.pending_timers() == 0  # the ask's timeout was cancelled


def test_a_resume_for_an_earlier_step_never_reaches_a_later_one() -> None:
    clock = ManualClock()
    seen: list[Any] = []
    told: list[Resume] = []

    class Sink:
        name = "sink"

        def tell(self, msg: Resume) -> None:
            told.append(msg)

    class Owner:
        address = Sink()

    tasks = Tasks(Owner(), Scheduler(clock))  # type: ignore[arg-type]
    fut1: Future[Any] = Future()
    fut2: Future[Any] = Future()

    def task() -> Task:
        try:
            yield Await(fut1, 1.0)
        except AskTimeout:
            seen.append("timeout")
        seen.append((yield Await(fut2, 5.0)))

    tasks.spawn(task(), "t")
    clock.advance(1.0)  # step 1 times out ...
    fut1.set_result("late")  # ... and its future completes afterwards: told once only
    assert len(told) == 1
    tasks.resume(told[0])
    assert seen == ["timeout"]
    tasks.resume(Resume(told[0].task, 1, "stale"))  # an answer for step 1 is dropped
    assert seen == ["timeout"] and len(tasks._running) == 1
    fut2.set_result("fresh")
    assert told[-1].step == 2
    tasks.resume(told[-1])
    assert seen == ["timeout", "fresh"] and len(tasks._running) == 0


def test_a_step_that_is_not_a_step_crashes_the_actor(rig: Rig) -> None:
    def task(host: Host) -> Task:
        yield "not a step"  # type: ignore[misc]

    rig.run(task)
    wait_until(lambda: not rig.host.is_alive(), what="the crash")
