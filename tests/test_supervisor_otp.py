"""OTP conformance of the supervisor, one test per rule (Erlang/OTP ``supervisor``)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from _actor_helpers import (
    Crash,
    Log,
    Num,
    Ping,
    Stop,
    crash_and_wait,
    echo_spec,
    no_leftover_actor_threads,  # noqa: F401  (autouse fixture)
    track_fixture,  # noqa: F401  (fixture "track")
    wait_until,
)

from aura_sync.effects import ManualClock
from aura_sync.errors import StartFailed, SupervisorGaveUp, SupervisorStopped
from aura_sync.supervisors import (
    ONE_FOR_ALL,
    ONE_FOR_ONE,
    REST_FOR_ONE,
    TEMPORARY,
    TRANSIENT,
    ChildSpec,
    ChildStatus,
    EventKind,
    Strategy,
    SupervisionEvent,
    Supervisor,
)

Track = Callable[[Supervisor], Supervisor]


def three(log: Log, strategy: Strategy, clock: ManualClock | None = None, **kw: Any) -> Supervisor:
    return Supervisor(
        [echo_spec("a", log), echo_spec("b", log), echo_spec("c", log)],
        strategy=strategy,
        intensity=kw.pop("intensity", 10),
        clock=clock or ManualClock(),
        name=kw.pop("name", "sup"),
        **kw,
    )


def after(log: Log, mark: int) -> list[tuple[Any, ...]]:
    """Lifecycle entries (start/stop/crash) logged since ``mark``, without crash texts."""
    return [item[:3] for item in log.snapshot()[mark:]]


def test_children_start_in_order_and_stop_in_reverse(track: Track) -> None:
    log = Log()
    sup = track(three(log, ONE_FOR_ONE)).start()
    assert after(log, 0) == [("start", "a", 1), ("start", "b", 1), ("start", "c", 1)]
    mark = len(log.items)
    sup.stop()
    assert after(log, mark) == [("stop", "c", 1), ("stop", "b", 1), ("stop", "a", 1)]


def test_one_for_one_restarts_only_the_failed_child(track: Track) -> None:
    log = Log()
    sup = track(three(log, ONE_FOR_ONE)).start()
    mark = len(log.items)
    crash_and_wait(sup, "b", 1)
    assert after(log, mark) == [("crash", "b", 1), ("start", "b", 2)]
    assert [c.restarts for c in sup.which_children()] == [0, 1, 0]


def test_one_for_all_stops_the_others_in_reverse_then_starts_all_in_order(track: Track) -> None:
    log = Log()
    sup = track(three(log, ONE_FOR_ALL)).start()
    mark = len(log.items)
    crash_and_wait(sup, "b", 1)
    assert after(log, mark) == [
        ("crash", "b", 1),
        ("stop", "c", 1),
        ("stop", "a", 1),
        ("start", "a", 2),
        ("start", "b", 2),
        ("start", "c", 2),
    ]


def test_rest_for_one_restarts_the_failed_child_and_those_after_it(track: Track) -> None:
    log = Log()
    sup = track(three(log, REST_FOR_ONE)).start()
    mark = len(log.items)
    crash_and_wait(sup, "b", 1)
    assert after(log, mark) == [
        ("crash", "b", 1),
        ("stop", "c", 1),
        ("start", "b", 2),
        ("start", "c", 2),
    ]
    mark = len(log.items)
    crash_and_wait(sup, "c", 1)  # the last child: nothing after it
    assert after(log, mark) == [("crash", "c", 2), ("start", "c", 3)]


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        (ONE_FOR_ALL, [("stop", "b", 1), ("start", "a", 2), ("start", "b", 2), ("start", "c", 2)]),
        (REST_FOR_ONE, [("stop", "b", 1), ("start", "a", 2), ("start", "b", 2), ("start", "c", 2)]),
    ],
)
def test_a_group_restart_includes_siblings_stopped_with_terminate_child(
    track: Track, strategy: Strategy, expected: list[tuple[Any, ...]]
) -> None:
    # OTP: terminate_child keeps the spec with no pid; one_for_all / rest_for_one
    # restart every child of the group, those without a pid included.
    log = Log()
    sup = track(three(log, strategy)).start()
    sup.terminate_child("c")
    mark = len(log.items)
    crash_and_wait(sup, "a", 1)
    assert [e for e in after(log, mark) if e[0] != "crash"] == expected
    assert [c.status for c in sup.which_children()] == [ChildStatus.RUNNING] * 3
    assert sup.address_of("c").ask(Ping(1)) == Num(2)  # its closed address reopened


@pytest.mark.parametrize("how", ["crash", "normal exit"])
def test_temporary_child_is_never_restarted_and_its_spec_goes(track: Track, how: str) -> None:
    log = Log()
    sup = track(
        Supervisor(
            [echo_spec("t", log, restart=TEMPORARY), echo_spec("p", log)], clock=ManualClock()
        )
    ).start()
    address = sup.address_of("t")
    address.ask(Crash() if how == "crash" else Stop())
    wait_until(lambda: [c.id for c in sup.which_children()] == ["p"], what="t removed")
    assert log.of("start") == [("start", "t", 1), ("start", "p", 1)]
    assert address.ask(Ping(1)).error_type == "ActorStopped"
    assert sup.restart_count("t") == 0


def test_transient_child_is_restarted_after_a_crash_only(track: Track) -> None:
    log = Log()
    sup = track(Supervisor([echo_spec("t", log, restart=TRANSIENT)], clock=ManualClock())).start()
    crash_and_wait(sup, "t", 1)
    assert log.of("start") == [("start", "t", 1), ("start", "t", 2)]
    address = sup.address_of("t")
    address.ask(Stop())  # a normal exit: not restarted, spec kept
    wait_until(lambda: sup.which_children()[0].status is ChildStatus.TERMINATED)
    info = sup.which_children()[0]
    assert info.address is None
    assert sup.restart_count("t") == 1
    assert len(log.of("start")) == 2
    assert address.ask(Ping(1)).error_type == "ActorStopped"


def test_permanent_child_that_exits_normally_is_restarted(track: Track) -> None:
    log = Log()
    sup = track(Supervisor([echo_spec("p", log)], clock=ManualClock())).start()
    events: list[SupervisionEvent] = []
    sup.subscribe(events.append)
    sup.address_of("p").ask(Stop())
    wait_until(lambda: len(events) == 2, what="two events")
    assert len(log.of("start")) == 2
    assert [e.kind for e in events] == [EventKind.FAILED, EventKind.RESTARTED]
    assert sup.address_of("p").ask(Ping(1)) == Num(2)


def _gave_up_handler() -> tuple[list[SupervisorGaveUp], threading.Event]:
    calls: list[SupervisorGaveUp] = []
    done = threading.Event()

    def on_give_up(exc: SupervisorGaveUp) -> None:
        calls.append(exc)
        done.set()

    return calls, done


def test_intensity_plus_one_failures_within_the_period_make_the_root_give_up(
    track: Track,
) -> None:
    clock = ManualClock()
    calls, done = _gave_up_handler()
    log = Log()
    sup = Supervisor(
        [echo_spec("a", log), echo_spec("b", log)],
        intensity=2,
        period=5.0,
        clock=clock,
        on_give_up=lambda exc: (calls.append(exc), done.set()),
        name="root",
    )
    track(sup).start()
    address = sup.address_of("b")
    crash_and_wait(sup, "b", 1)
    clock.advance(1.0)
    crash_and_wait(sup, "b", 2)
    clock.advance(1.0)
    mark = len(log.items)
    address.ask(Crash())  # third restart within 5 s: more than intensity=2
    assert done.wait(5.0)
    assert len(calls) == 1 and "gave up" in str(calls[0])
    wait_until(lambda: not sup.is_alive(), what="the root to stop")
    # children stopped in reverse order (b had crashed, so only a needed stopping)
    assert after(log, mark) == [("crash", "b", 3), ("stop", "a", 1)]
    assert sup.events()[EventKind.GAVE_UP] == 1
    assert address.ask(Ping(1)).error_type == "ActorStopped"
    with pytest.raises(SupervisorStopped):
        sup.which_children()


def test_the_same_failures_spread_over_more_than_the_period_are_tolerated(track: Track) -> None:
    clock = ManualClock()
    calls: list[SupervisorGaveUp] = []
    sup = track(
        Supervisor([echo_spec("b")], intensity=2, period=5.0, clock=clock, on_give_up=calls.append)
    ).start()
    for n in range(1, 6):  # 5 failures, 2.6 s apart: never 3 within 5 s
        crash_and_wait(sup, "b", n)
        clock.advance(2.6)
    assert calls == []
    assert sup.is_alive()
    assert sup.restart_count("b") == 5


def test_a_failure_exactly_period_seconds_after_counts_as_within(track: Track) -> None:
    # OTP: a restart at Then is in the window while Now - Then =< Period.
    clock = ManualClock()
    calls: list[SupervisorGaveUp] = []
    sup = track(
        Supervisor([echo_spec("b")], intensity=1, period=5.0, clock=clock, on_give_up=calls.append)
    ).start()
    crash_and_wait(sup, "b", 1)
    clock.advance(5.0)
    sup.address_of("b").ask(Crash())
    wait_until(lambda: not sup.is_alive(), what="give up")
    assert len(calls) == 1


def test_intensity_zero_gives_up_on_the_first_failure(track: Track) -> None:
    calls: list[SupervisorGaveUp] = []
    sup = track(
        Supervisor([echo_spec("b")], intensity=0, clock=ManualClock(), on_give_up=calls.append)
    ).start()
    sup.address_of("b").ask(Crash())
    wait_until(lambda: not sup.is_alive())
    assert len(calls) == 1
    assert sup.restart_count("b") == 0


def test_a_nested_supervisor_that_gives_up_escalates_to_its_parent(track: Track) -> None:
    clock = ManualClock()
    log = Log()
    inner = Supervisor([echo_spec("w", log)], intensity=1, name="inner")
    root = Supervisor(
        [echo_spec("x", log), ChildSpec("inner", lambda ctx: inner, shutdown=10.0)],
        intensity=5,
        clock=clock,
        name="root",
    )
    root_events: list[SupervisionEvent] = []
    root.subscribe(root_events.append)
    track(root).start()
    worker = inner.address_of("w")
    assert worker.name == "root/inner/w"
    crash_and_wait(inner, "w", 1)
    worker.ask(Crash())  # second failure in the window: inner gives up
    wait_until(
        lambda: (EventKind.RESTARTED, "inner") in [(e.kind, e.child_id) for e in root_events],
        what="root to restart inner",
    )
    kinds = [(e.kind, e.child_id) for e in root_events]
    assert kinds.index((EventKind.FAILED, "inner")) < kinds.index((EventKind.RESTARTED, "inner"))
    assert root.restart_count("inner") == 1
    assert inner.events()[EventKind.GAVE_UP] == 1
    assert root.restart_count("x") == 0  # ONE_FOR_ONE at the root: x untouched
    assert [e[:3] for e in log.of("start")] == [
        ("start", "x", 1),
        ("start", "w", 1),
        ("start", "w", 2),
        ("start", "w", 3),
    ]
    assert worker.ask(Ping(1)) == Num(2)  # the grandchild's address survived it all


def test_a_transient_nested_supervisor_that_gives_up_is_not_restarted(track: Track) -> None:
    # OTP: a supervisor reaching its intensity exits with reason shutdown, which a
    # transient child spec does not restart (a permanent one does: see above).
    inner = Supervisor([echo_spec("w")], intensity=0, name="inner")
    root_events: list[SupervisionEvent] = []
    root = Supervisor(
        [ChildSpec("inner", lambda ctx: inner, restart=TRANSIENT, shutdown=10.0), echo_spec("x")],
        intensity=5,
        clock=ManualClock(),
        name="root",
    )
    root.subscribe(root_events.append)
    track(root).start()
    inner.address_of("w").ask(Crash())
    wait_until(lambda: root.which_children()[0].status is ChildStatus.TERMINATED)
    assert inner.events()[EventKind.GAVE_UP] == 1
    assert root.restart_count("inner") == 0
    assert [(e.kind, e.child_id) for e in root_events if e.child_id == "inner"][-1] == (
        EventKind.STOPPED,
        "inner",
    )
    assert root.is_alive() and root.address_of("x").ask(Ping(1)) == Num(2)


def test_escalation_up_to_the_root_calls_on_give_up(track: Track) -> None:
    calls, done = _gave_up_handler()
    inner = Supervisor([echo_spec("w")], intensity=0, name="inner")
    root = track(
        Supervisor(
            [ChildSpec("inner", lambda ctx: inner, shutdown=10.0)],
            intensity=0,
            clock=ManualClock(),
            on_give_up=lambda exc: (calls.append(exc), done.set()),
            name="root",
        )
    ).start()
    inner.address_of("w").ask(Crash())
    assert done.wait(5.0)
    assert "root gave up" in str(calls[0]) and "inner" in str(calls[0])
    wait_until(lambda: not root.is_alive() and not inner.is_alive())


def test_a_child_that_fails_to_start_stops_the_started_ones_and_reports(track: Track) -> None:
    log = Log()
    sup = Supervisor(
        [echo_spec("a", log), echo_spec("b", log, fail_start=True), echo_spec("c", log)],
        clock=ManualClock(),
    )
    with pytest.raises(StartFailed, match=r"'b' failed to start.*b cannot start"):
        sup.start()
    assert after(log, 0) == [
        ("start", "a", 1),
        ("start", "b", 1),
        ("crash", "b", 1),
        ("stop", "a", 1),
    ]
    assert not sup.is_alive()


@pytest.mark.parametrize(
    ("start", "text"),
    [
        (lambda ctx: 1 / 0, "ZeroDivisionError"),
        (lambda ctx: "not an actor", "expected a new AuraActor or a Supervisor"),
    ],
)
def test_a_failing_factory_is_a_failure_to_start(track: Track, start: Any, text: str) -> None:
    log = Log()
    sup = Supervisor([echo_spec("a", log), ChildSpec("b", start)], clock=ManualClock())
    with pytest.raises(StartFailed, match=text):
        sup.start()
    assert after(log, 0) == [("start", "a", 1), ("stop", "a", 1)]


def test_a_nested_supervisor_failing_to_start_fails_its_parent_start(track: Track) -> None:
    log = Log()
    inner = Supervisor([echo_spec("w", log), echo_spec("v", log, fail_start=True)], name="inner")
    root = Supervisor(
        [echo_spec("x", log), ChildSpec("inner", lambda ctx: inner)], clock=ManualClock()
    )
    with pytest.raises(StartFailed, match="inner"):
        root.start()
    stops = [e[:2] for e in log.of("stop")]
    assert stops == [("stop", "w"), ("stop", "x")]


def test_a_child_that_cannot_restart_counts_as_failing_again(track: Track) -> None:
    # OTP try_again: each failed restart is a restart attempt against the intensity.
    calls: list[SupervisorGaveUp] = []
    attempts: list[int] = []

    def start(ctx: Any) -> Any:
        attempts.append(ctx.incarnation)
        from _actor_helpers import Echo

        return Echo("f", fail_start=ctx.incarnation > 1)

    sup = track(
        Supervisor(
            [ChildSpec("f", start)], intensity=3, clock=ManualClock(), on_give_up=calls.append
        )
    ).start()
    sup.address_of("f").ask(Crash())
    wait_until(lambda: not sup.is_alive(), what="give up after failed restarts")
    assert len(calls) == 1
    assert attempts == [1, 2, 3, 4]  # first start + 3 restart attempts, the 4th failure gives up
    assert sup.restart_count("f") == 3
