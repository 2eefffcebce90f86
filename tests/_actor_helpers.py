"""Shared utilities for actor and supervisor tests.

* :func:`wait_until` - wait for a condition with a timeout (never a bare sleep);
* :func:`actor_threads` - the live aura actor threads (named ``aura-actor:...``);
* :func:`no_leftover_actor_threads` - an autouse-able fixture asserting a test
  leaves no actor thread of its own behind (import it into a test module);
* small messages (tags 0xB0-0xB7, reserved for tests in the supervision range)
  and test actors: :class:`Echo` (records what it handled in its stash),
  :class:`Recorder` (reports start/stop/crash to a shared log), ...
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from aura_sync.actors.base import AuraActor, handles
from aura_sync.messages import Message, Request, message

__all__ = [
    "Crash",
    "Echo",
    "Get",
    "Log",
    "Num",
    "Ping",
    "Stop",
    "Value",
    "actor_threads",
    "no_leftover_actor_threads",
    "track_fixture",
    "wait_until",
]


def wait_until(condition: Callable[[], Any], timeout: float = 5.0, what: str = "condition") -> None:
    """Poll ``condition`` until it is truthy; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.0002
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(delay)  # a poll interval, not a wait for something
        delay = min(delay * 2, 0.01)


def actor_threads() -> list[threading.Thread]:
    """Live threads of aura actors (workers and supervisors)."""
    return [t for t in threading.enumerate() if t.name.startswith("aura-actor:") and t.is_alive()]


@pytest.fixture(autouse=True)
def no_leftover_actor_threads() -> Iterator[None]:
    """Fail a test that leaves actor threads of its own running (waits up to 5 s)."""
    before = set(actor_threads())
    yield
    wait_until(
        lambda: not (set(actor_threads()) - before),
        timeout=5.0,
        what=f"actor threads to end: {sorted(t.name for t in set(actor_threads()) - before)}",
    )


# --- test messages (0xB0-0xB7 are free for tests) ------------------------------------


@message(0xB0)
class Ping(Request["Num"]):
    """Ask for a :class:`Num` of ``n + 1``."""

    n: int


@message(0xB1)
class Num(Message):
    """A number reply."""

    n: int


@message(0xB2)
class Crash(Message):
    """Make the actor raise an unexpected exception."""

    text: str = "boom"


@message(0xB3)
class Stop(Message):
    """Make the actor stop itself (a normal, unrequested exit)."""


@message(0xB4)
class Get(Request["Value"]):
    """Ask for the actor's :class:`Value` (what it has processed)."""


@message(0xB5)
class Value(Message):
    """Numbers an actor processed, in order."""

    items: tuple[int, ...]


class Log:
    """A thread-safe list of events shared by test actors and the test."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.items: list[tuple[Any, ...]] = []

    def add(self, *item: Any) -> None:
        with self._lock:
            self.items.append(item)

    def of(self, kind: str) -> list[tuple[Any, ...]]:
        with self._lock:
            return [i for i in self.items if i[0] == kind]

    def snapshot(self) -> list[tuple[Any, ...]]:
        with self._lock:
            return list(self.items)


class Echo(AuraActor):
    """Answers Ping, records every Ping it handled in ``seen``, crashes on Crash.

    ``seen`` is kept in the stash when a context is given, so it survives restarts.
    """

    def __init__(
        self,
        name: str = "echo",
        log: Log | None = None,
        stash: dict[str, Any] | None = None,
        fail_start: bool = False,
    ) -> None:
        super().__init__()
        self.name = name
        self.log = log
        self.fail_start = fail_start
        self.seen: list[int] = stash.setdefault("seen", []) if stash is not None else []

    def on_start(self) -> None:
        if self.log is not None:
            self.log.add("start", self.name, self.incarnation)
        if self.fail_start:
            raise RuntimeError(f"{self.name} cannot start")

    def on_stop(self) -> None:
        if self.log is not None:
            self.log.add("stop", self.name, self.incarnation)

    def on_crash(self, exc: BaseException) -> None:
        if self.log is not None:
            self.log.add("crash", self.name, self.incarnation, str(exc))

    @handles(Ping)
    def _ping(self, msg: Ping) -> Num:
        self.seen.append(msg.n)
        return Num(msg.n + 1)

    @handles(Crash)
    def _crash(self, msg: Crash) -> None:
        raise RuntimeError(msg.text)

    @handles(Stop)
    def _stop_self(self, msg: Stop) -> None:
        self.stop()

    @handles(Get)
    def _get(self, msg: Get) -> Value:
        return Value(tuple(self.seen))


# --- supervisor helpers ----------------------------------------------------------------


def echo_spec(child_id: str, log: Log | None = None, **options: Any) -> Any:
    """A ChildSpec starting an :class:`Echo` named ``child_id`` that keeps ``seen`` in its stash."""
    from aura_sync.supervisors import ChildSpec

    fail_start = options.pop("fail_start", False)
    return ChildSpec(
        child_id,
        lambda ctx: Echo(child_id, log, ctx.stash, fail_start=fail_start),
        **options,
    )


@pytest.fixture(name="track")
def track_fixture() -> Iterator[Callable[[Any], Any]]:
    """``track(sup)`` registers a supervisor to be stopped after the test (returns it)."""
    started: list[Any] = []

    def add(sup: Any) -> Any:
        started.append(sup)
        return sup

    yield add
    for sup in reversed(started):
        sup.stop(timeout=10.0)


def crash_and_wait(sup: Any, child_id: str, restarts: int) -> None:
    """Crash ``child_id`` through its address and wait until it has been restarted."""
    from aura_sync.supervisors import ChildStatus

    reply = sup.address_of(child_id).ask(Crash())
    assert reply.error_type == "ActorCrashed", reply
    wait_until(
        lambda: (
            sup.restart_count(child_id) >= restarts
            and all(c.status is ChildStatus.RUNNING for c in sup.which_children())
        ),
        what=f"{child_id} restarted {restarts} time(s)",
    )
