"""Beyond OTP: (a) stable addresses, (b) no message lost across a crash, (c) restart
backoff, (d) state that survives restarts, (e) the on_crash hook, (f) supervision events."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Callable
from typing import Any

import pytest
from _actor_helpers import (
    Crash,
    Echo,
    Get,
    Log,
    Num,
    Ping,
    Value,
    crash_and_wait,
    echo_spec,
    no_leftover_actor_threads,  # noqa: F401  (autouse fixture)
    track_fixture,  # noqa: F401  (fixture "track")
    wait_until,
)

from aura_sync.actors._mailbox import LocalMessage
from aura_sync.actors.base import handles
from aura_sync.effects import ManualClock, SeededRng
from aura_sync.messages import codec
from aura_sync.supervisors import (
    ChildSpec,
    ChildStatus,
    EventKind,
    RestartBackoff,
    SupervisionEvent,
    Supervisor,
)

Track = Callable[[Supervisor], Supervisor]


# --- (a) -------------------------------------------------------------------------------


def test_a_an_address_taken_before_a_crash_works_after_it(track: Track) -> None:
    sup = track(Supervisor([echo_spec("e")], intensity=3)).start()  # real clock and timers
    address = sup.address_of("e")
    assert address.call(Ping(1), 5.0).n == 2
    crash_and_wait(sup, "e", 1)
    assert address.call(Ping(2), 5.0).n == 3
    assert sup.address_of("e") is address
    assert sup.which_children()[0].address is address


# --- (b) -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Block(LocalMessage):
    gate: threading.Event
    entered: threading.Event


class Gated(Echo):
    @handles(Block)
    def _block(self, msg: Block) -> None:
        msg.entered.set()
        msg.gate.wait(10.0)


def test_b_messages_queued_behind_a_crash_all_reach_the_next_incarnation(track: Track) -> None:
    sup = track(
        Supervisor([ChildSpec("q", lambda ctx: Gated("q", stash=ctx.stash))], clock=ManualClock())
    ).start()
    address = sup.address_of("q")
    gate, entered = threading.Event(), threading.Event()
    address.tell(Block(gate, entered))
    assert entered.wait(5.0)

    async def scenario() -> tuple[Any, list[Any]]:
        crash = asyncio.create_task(address.ask_async(Crash("poison"), timeout=10.0))
        pings = [asyncio.create_task(address.ask_async(Ping(i), timeout=10.0)) for i in range(1000)]
        await asyncio.sleep(0)  # every task has queued its message
        assert address.queued() == 1001
        gate.set()
        return await crash, list(await asyncio.gather(*pings))

    crash_reply, replies = asyncio.run(scenario())
    assert crash_reply.error_type == "ActorCrashed" and "poison" in crash_reply.message
    assert replies == [Num(i + 1) for i in range(1000)]
    assert address.ask(Get()) == Value(tuple(range(1000)))  # in order, across incarnations
    assert sup.restart_count("q") == 1


# --- (c) -------------------------------------------------------------------------------


def test_c_restart_backoff_delays_the_restart_while_messages_queue(track: Track) -> None:
    clock = ManualClock()
    sup = track(
        Supervisor(
            [echo_spec("b", backoff=RestartBackoff(min=1.0, max=4.0))], intensity=10, clock=clock
        )
    ).start()
    address = sup.address_of("b")

    def status() -> ChildStatus:
        return sup.which_children()[0].status

    address.ask(Crash())
    wait_until(lambda: sup.restart_count("b") == 1 and status() is ChildStatus.RESTARTING)
    assert clock.next_deadline() == pytest.approx(1.0)
    for i in range(50):
        address.tell(Ping(i))
    clock.advance(0.999)
    assert status() is ChildStatus.RESTARTING
    assert address.queued() == 50  # queued, not lost, not answered
    clock.advance(0.001)
    wait_until(lambda: status() is ChildStatus.RUNNING, what="restart after the backoff")
    assert address.ask(Get()) == Value(tuple(range(50)))

    address.ask(Crash())  # a second failure soon after: the delay doubles
    wait_until(lambda: sup.restart_count("b") == 2 and status() is ChildStatus.RESTARTING)
    assert clock.next_deadline() == pytest.approx(clock.now() + 2.0)
    clock.advance(2.0)
    wait_until(lambda: status() is ChildStatus.RUNNING)

    clock.advance(4.0)  # ran for `max` seconds: the streak is over
    address.ask(Crash())
    wait_until(lambda: sup.restart_count("b") == 3 and status() is ChildStatus.RESTARTING)
    assert clock.next_deadline() == pytest.approx(clock.now() + 1.0)
    clock.advance(1.0)
    wait_until(lambda: status() is ChildStatus.RUNNING)


def test_c_stop_during_a_backoff_does_not_wait_for_it(track: Track) -> None:
    clock = ManualClock()
    sup = Supervisor([echo_spec("b", backoff=RestartBackoff(min=30.0, max=60.0))], clock=clock)
    sup.start()
    sup.address_of("b").ask(Crash())
    wait_until(lambda: sup.which_children()[0].status is ChildStatus.RESTARTING)
    sup.stop(timeout=5.0)
    assert not sup.is_alive()


def test_c_a_supervisor_that_ends_abruptly_leaves_no_backoff_timer() -> None:
    clock = ManualClock()
    sup = Supervisor([echo_spec("b", backoff=RestartBackoff(min=30.0, max=60.0))], clock=clock)
    sup.start()
    sup.address_of("b").ask(Crash())
    wait_until(lambda: sup.which_children()[0].status is ChildStatus.RESTARTING)
    assert clock.pending_timers() == 1  # the restart, 30 s away
    actor = sup._actor
    assert actor is not None
    actor.stop()  # not a shutdown: the incarnation simply ends (as after a crash)
    wait_until(lambda: not sup.is_alive(), what="the supervisor to end")
    assert clock.pending_timers() == 0


def test_c_backoff_delays_double_are_capped_and_jittered() -> None:
    rng = SeededRng(7)
    plain = RestartBackoff(min=0.5, max=3.0)
    assert [plain.delay(k, rng) for k in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert plain.delay(10_000, rng) == 3.0  # no overflow for long streaks
    jittered = RestartBackoff(min=1.0, max=8.0, jitter=0.5)
    for k in range(6):
        full = min(8.0, 2.0**k)
        assert full / 2 <= jittered.delay(k, rng) <= full
    assert RestartBackoff(1.0, 8.0, 0.5).delay(3, SeededRng(1)) == RestartBackoff(
        1.0, 8.0, 0.5
    ).delay(3, SeededRng(1))


# --- (d) -------------------------------------------------------------------------------


def test_d_the_stash_survives_a_restart(track: Track) -> None:
    sup = track(Supervisor([echo_spec("s")], clock=ManualClock())).start()
    address = sup.address_of("s")
    address.ask(Ping(1))
    address.ask(Ping(2))
    crash_and_wait(sup, "s", 1)
    address.ask(Ping(3))
    assert address.ask(Get()) == Value((1, 2, 3))


def test_d_the_stash_and_address_survive_the_restart_of_a_supervisor_in_between(
    track: Track,
) -> None:
    inner = Supervisor([echo_spec("w")], intensity=0, name="inner")
    root = track(
        Supervisor(
            [ChildSpec("inner", lambda ctx: inner, shutdown=10.0)],
            intensity=3,
            clock=ManualClock(),
            name="root",
        )
    ).start()
    worker = inner.address_of("w")
    worker.ask(Ping(41))
    worker.ask(Crash())  # intensity 0: inner gives up; root restarts inner
    wait_until(lambda: root.restart_count("inner") == 1)
    wait_until(lambda: worker.ask(Get()) == Value((41,)), what="w back with its stash")
    assert inner.address_of("w") is worker


# --- (e) -------------------------------------------------------------------------------


def test_e_on_crash_runs_with_the_exception_before_the_next_incarnation(track: Track) -> None:
    log = Log()
    sup = track(Supervisor([echo_spec("p", log)], clock=ManualClock())).start()
    sup.address_of("p").ask(Crash("disk on fire"))
    wait_until(lambda: len(log.of("start")) == 2)
    assert log.snapshot() == [
        ("start", "p", 1),
        ("crash", "p", 1, "disk on fire"),
        ("start", "p", 2),
    ]


# --- (f) -------------------------------------------------------------------------------


def test_f_supervision_events_are_delivered_and_counted(track: Track) -> None:
    clock = ManualClock(100.0)
    sup = Supervisor([echo_spec("a"), echo_spec("b")], clock=clock, name="obs")
    events: list[SupervisionEvent] = []
    sup.subscribe(events.append)

    def broken(event: SupervisionEvent) -> None:
        raise RuntimeError("a subscriber bug must not hurt the supervisor")

    sup.subscribe(broken)
    track(sup).start()
    crash_and_wait(sup, "b", 1)
    assert [(e.kind, e.child_id, e.incarnation) for e in events] == [
        (EventKind.STARTED, "a", 1),
        (EventKind.STARTED, "b", 1),
        (EventKind.FAILED, "b", 1),
        (EventKind.RESTARTED, "b", 2),
    ]
    assert all(e.supervisor == "obs" and e.time == 100.0 for e in events)
    assert "RuntimeError: boom" in events[2].reason
    assert codec.decode(codec.encode(events[2])) == events[2]  # events are wire messages
    counts = sup.events()
    assert counts[EventKind.STARTED] == 2 and counts[EventKind.FAILED] == 1
    assert counts[EventKind.RESTARTED] == 1 and counts[EventKind.GAVE_UP] == 0
    assert sup.restart_count("b") == 1 and sup.restart_count("a") == 0
    sup.stop()
    assert [e.kind for e in events[4:]] == [EventKind.STOPPED, EventKind.STOPPED]
    assert [e.child_id for e in events[4:]] == ["b", "a"]
    assert sup.events()[EventKind.STOPPED] == 2


def test_f_unsubscribe_stops_delivery(track: Track) -> None:
    sup = track(Supervisor([echo_spec("a")], intensity=5, clock=ManualClock())).start()
    events: list[SupervisionEvent] = []
    unsubscribe = sup.subscribe(events.append)
    crash_and_wait(sup, "a", 1)
    seen = len(events)
    unsubscribe()
    unsubscribe()  # idempotent
    crash_and_wait(sup, "a", 2)
    assert len(events) == seen == 2
    assert sup.events()[EventKind.FAILED] == 2
