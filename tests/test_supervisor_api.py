"""The supervisor's dynamic API (OTP error cases), spec validation, timeouts, bad input."""

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
    echo_spec,
    no_leftover_actor_threads,  # noqa: F401  (autouse fixture)
    track_fixture,  # noqa: F401  (fixture "track")
    wait_until,
)

from aura_sync.actors._mailbox import LocalMessage
from aura_sync.actors.base import AuraActor, handles
from aura_sync.effects import ManualClock
from aura_sync.errors import (
    AlreadyPresent,
    InvalidArgument,
    NotFound,
    RunningChild,
    StartFailed,
    SupervisorError,
    SupervisorStopped,
    WrongType,
)
from aura_sync.messages import ErrorReply
from aura_sync.supervisors import (
    TEMPORARY,
    ChildCounts,
    ChildSpec,
    ChildStatus,
    ChildType,
    EventKind,
    RestartBackoff,
    SupervisionEvent,
    Supervisor,
)

Track = Callable[[Supervisor], Supervisor]


@pytest.fixture
def sup(track: Track) -> Supervisor:
    return track(Supervisor([echo_spec("a"), echo_spec("b")], clock=ManualClock())).start()


# --- dynamic API ------------------------------------------------------------------------


def test_start_child_adds_it_last_and_returns_a_working_address(sup: Supervisor) -> None:
    address = sup.start_child(echo_spec("c"))
    assert address.ask(Ping(1)) == Num(2)
    assert [c.id for c in sup.which_children()] == ["a", "b", "c"]
    assert sup.address_of("c") is address


def test_start_child_with_an_existing_id_is_already_present(sup: Supervisor) -> None:
    with pytest.raises(AlreadyPresent, match="'a' is already started"):
        sup.start_child(echo_spec("a"))
    sup.terminate_child("a")
    with pytest.raises(AlreadyPresent, match="'a' is already present"):
        sup.start_child(echo_spec("a"))


def test_start_child_that_fails_is_not_kept(sup: Supervisor) -> None:
    with pytest.raises(StartFailed, match="c cannot start"):
        sup.start_child(echo_spec("c", fail_start=True))
    assert [c.id for c in sup.which_children()] == ["a", "b"]
    sup.start_child(echo_spec("c"))  # the id is free again


def test_start_child_refuses_a_non_spec(sup: Supervisor) -> None:
    with pytest.raises(WrongType, match="ChildSpec"):
        sup.start_child("c")  # type: ignore[arg-type]


def test_terminate_child_stops_it_and_keeps_the_spec(sup: Supervisor) -> None:
    address = sup.address_of("a")
    sup.terminate_child("a")
    info = sup.which_children()[0]
    assert (info.id, info.address, info.status) == ("a", None, ChildStatus.TERMINATED)
    assert address.ask(Ping(1)).error_type == "ActorStopped"
    sup.terminate_child("a")  # idempotent, like OTP
    assert sup.count_children() == ChildCounts(specs=2, active=1, supervisors=0, workers=2)


def test_terminate_child_of_a_temporary_child_removes_its_spec(sup: Supervisor) -> None:
    sup.start_child(echo_spec("t", restart=TEMPORARY))
    sup.terminate_child("t")
    assert [c.id for c in sup.which_children()] == ["a", "b"]


def test_restart_child_restarts_a_terminated_child_on_the_same_address(sup: Supervisor) -> None:
    address = sup.address_of("a")
    address.ask(Ping(7))
    sup.terminate_child("a")
    assert sup.restart_child("a") is address
    assert address.ask(Get()) == Value((7,))  # the stash survived too
    assert sup.restart_count("a") == 0  # manual restarts are not failures


def test_restart_child_of_a_running_child_is_running_child(sup: Supervisor) -> None:
    with pytest.raises(RunningChild, match="'a' is running"):
        sup.restart_child("a")


def test_restart_child_that_fails_to_start_reports_start_failed(track: Track) -> None:
    flaky = {"fail": False}
    sup = track(
        Supervisor(
            [ChildSpec("f", lambda ctx: Echo("f", fail_start=flaky["fail"]))], clock=ManualClock()
        )
    ).start()
    sup.terminate_child("f")
    flaky["fail"] = True
    with pytest.raises(StartFailed, match="f cannot start"):
        sup.restart_child("f")
    assert sup.which_children()[0].status is ChildStatus.TERMINATED


def test_delete_child_needs_a_terminated_child(sup: Supervisor) -> None:
    address = sup.address_of("b")
    with pytest.raises(RunningChild):
        sup.delete_child("b")
    sup.terminate_child("b")
    sup.delete_child("b")
    assert [c.id for c in sup.which_children()] == ["a"]
    with pytest.raises(NotFound):
        sup.address_of("b")
    fresh = sup.start_child(echo_spec("b"))
    assert fresh is not address  # a deleted child's address is closed for good
    assert address.ask(Ping(1)).error_type == "ActorStopped"
    assert fresh.ask(Ping(1)) == Num(2)


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.terminate_child("zz"),
        lambda s: s.restart_child("zz"),
        lambda s: s.delete_child("zz"),
        lambda s: s.address_of("zz"),
    ],
)
def test_unknown_child_is_not_found(sup: Supervisor, call: Callable[[Supervisor], Any]) -> None:
    with pytest.raises(NotFound, match="'zz'"):
        call(sup)


@pytest.mark.parametrize("bad", ["", 3, None, "x" * 201])
def test_bad_child_ids_are_refused_before_reaching_the_supervisor(
    sup: Supervisor, bad: object
) -> None:
    with pytest.raises((WrongType, InvalidArgument), match="child_id"):
        sup.terminate_child(bad)  # type: ignore[arg-type]


def test_which_and_count_children_describe_workers_and_supervisors(track: Track) -> None:
    inner = Supervisor([echo_spec("w")], name="inner")
    sup = track(
        Supervisor(
            [echo_spec("a"), ChildSpec("inner", lambda ctx: inner, shutdown=10.0)],
            clock=ManualClock(),
        )
    ).start()
    rows = sup.which_children()
    assert [(r.id, r.type, r.status, r.restarts) for r in rows] == [
        ("a", ChildType.WORKER, ChildStatus.RUNNING, 0),
        ("inner", ChildType.SUPERVISOR, ChildStatus.RUNNING, 0),
    ]
    assert rows[1].address is inner.address
    assert sup.count_children() == ChildCounts(specs=2, active=2, supervisors=1, workers=1)
    sup.terminate_child("inner")
    assert not inner.address.is_alive()
    assert sup.count_children() == ChildCounts(specs=2, active=1, supervisors=1, workers=1)


def test_calls_on_a_stopped_or_unstarted_supervisor_raise_supervisor_stopped(
    track: Track,
) -> None:
    sup = Supervisor([echo_spec("a")], clock=ManualClock())
    with pytest.raises(SupervisorStopped, match="never started"):
        sup.which_children()
    sup.start()
    sup.stop()
    sup.stop()  # idempotent
    for call in (
        sup.which_children,
        sup.count_children,
        lambda: sup.start_child(echo_spec("c")),
        lambda: sup.terminate_child("a"),
    ):
        with pytest.raises(SupervisorStopped):
            call()


def test_a_supervisor_cannot_be_started_twice_or_as_root_and_child(track: Track) -> None:
    sup = track(Supervisor([echo_spec("a")], clock=ManualClock())).start()
    with pytest.raises(SupervisorError, match="already running"):
        sup.start()
    parent = Supervisor([ChildSpec("s", lambda ctx: sup)], clock=ManualClock())
    with pytest.raises(StartFailed, match="running as a root"):
        parent.start()


def test_bad_messages_never_kill_the_supervisor(sup: Supervisor) -> None:
    reply = sup.address.ask(Ping(1))
    assert isinstance(reply, ErrorReply) and reply.error_type == "UnhandledMessage"
    sup.address.tell("garbage")
    assert [c.id for c in sup.which_children()] == ["a", "b"]


def test_a_context_manager_starts_and_stops() -> None:
    log = Log()
    with Supervisor([echo_spec("a", log)], clock=ManualClock()) as sup:
        assert sup.address_of("a").ask(Ping(1)) == Num(2)
    assert not sup.is_alive()
    assert [e[:2] for e in log.snapshot()] == [("start", "a"), ("stop", "a")]


# --- timeouts: shutdown and start ------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Block(LocalMessage):
    """Make the actor block on ``gate`` (a bug we simulate: handlers must not block)."""

    gate: threading.Event
    entered: threading.Event


class Blocker(Echo):
    @handles(Block)
    def _block(self, msg: Block) -> None:
        msg.entered.set()
        msg.gate.wait(10.0)
        self.seen.append(-1)


def test_a_child_overrunning_its_shutdown_is_abandoned_and_never_consumes_again(
    track: Track,
) -> None:
    clock = ManualClock()
    log = Log()
    stash: dict[str, Any] = {}
    sup = track(
        Supervisor(
            [ChildSpec("s", lambda ctx: Blocker("s", log, stash), shutdown=2.0)], clock=clock
        )
    ).start()
    events: list[SupervisionEvent] = []
    sup.subscribe(events.append)
    address = sup.address_of("s")
    gate, entered = threading.Event(), threading.Event()
    address.tell(Block(gate, entered))
    assert entered.wait(5.0)
    done = threading.Event()
    terminator = threading.Thread(target=lambda: (sup.terminate_child("s"), done.set()))
    terminator.start()
    wait_until(lambda: sup.which_children()[0].status is ChildStatus.STOPPING)
    clock.advance(1.9)
    assert not done.is_set()  # still waiting for the child
    clock.advance(0.1)  # the shutdown timeout fires: the child is abandoned
    terminator.join(5.0)
    assert done.is_set()
    assert events[-1].kind is EventKind.STOPPED and "killed" in events[-1].reason
    sup.restart_child("s")
    assert address.ask(Ping(5)) == Num(6)  # served by incarnation 2
    assert log.of("stop") == []
    gate.set()  # the abandoned incarnation finishes its handler and exits
    wait_until(lambda: len([t for t in threading.enumerate() if t.name.endswith("/s#1")]) == 0)
    assert address.ask(Ping(6)) == Num(7)
    assert stash["seen"] == [5, -1, 6]  # the old one ran its handler to the end, nothing more
    # Its cleanup hook still ran, late (resources must not leak), but it handled nothing more.
    assert log.of("stop") == [("stop", "s", 1)]


class SlowStart(AuraActor):
    def __init__(self, gate: threading.Event, entered: threading.Event) -> None:
        super().__init__()
        self.gate = gate
        self.entered = entered

    def on_start(self) -> None:
        self.entered.set()
        self.gate.wait(10.0)


def test_a_child_overrunning_its_start_timeout_fails_to_start(track: Track) -> None:
    clock = ManualClock()
    gate, entered = threading.Event(), threading.Event()
    sup = track(Supervisor([echo_spec("a")], clock=clock)).start()
    result: list[BaseException] = []

    def start() -> None:
        try:
            sup.start_child(
                ChildSpec("slow", lambda ctx: SlowStart(gate, entered), start_timeout=3.0)
            )
        except BaseException as exc:
            result.append(exc)

    starter = threading.Thread(target=start)
    starter.start()
    assert entered.wait(5.0)
    clock.advance(3.0)
    starter.join(5.0)
    assert len(result) == 1 and isinstance(result[0], StartFailed)
    assert "did not start within 3.0 s" in str(result[0])
    gate.set()
    assert [c.id for c in sup.which_children()] == ["a"]


# --- spec validation ------------------------------------------------------------------


def _start(ctx: Any) -> Echo:
    return Echo()


@pytest.mark.parametrize(
    ("kwargs", "error", "text"),
    [
        ({"id": ""}, InvalidArgument, "id must be 1..200"),
        ({"id": 7}, WrongType, "id must be a str"),
        ({"start": "Echo"}, WrongType, "start must be callable"),
        ({"restart": "permanent"}, InvalidArgument, "restart must be"),
        ({"shutdown": -1.0}, InvalidArgument, "shutdown must be >= 0"),
        ({"shutdown": float("nan")}, InvalidArgument, "shutdown must be a finite"),
        ({"shutdown": "5"}, WrongType, "shutdown must be a number"),
        ({"start_timeout": 0}, InvalidArgument, "start_timeout must be > 0"),
        ({"backoff": 1.0}, WrongType, "backoff must be a RestartBackoff"),
    ],
)
def test_invalid_child_specs_are_refused(kwargs: dict[str, Any], error: type, text: str) -> None:
    args: dict[str, Any] = {"id": "c", "start": _start, **kwargs}
    with pytest.raises(error, match=text):
        ChildSpec(**args)


@pytest.mark.parametrize(
    ("kwargs", "error", "text"),
    [
        ({"min": -1.0}, InvalidArgument, "backoff min"),
        ({"min": 2.0, "max": 1.0}, InvalidArgument, "max must be >= min"),
        ({"jitter": 1.5}, InvalidArgument, "jitter must be in"),
        ({"jitter": float("nan")}, InvalidArgument, "jitter"),
        ({"jitter": "x"}, WrongType, "jitter"),
    ],
)
def test_invalid_backoffs_are_refused(kwargs: dict[str, Any], error: type, text: str) -> None:
    with pytest.raises(error, match=text):
        RestartBackoff(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "error", "text"),
    [
        ({"children": [echo_spec("a"), echo_spec("a")]}, InvalidArgument, "duplicate child id"),
        ({"children": ["a"]}, WrongType, "ChildSpec"),
        ({"children": echo_spec("a")}, WrongType, "iterable of ChildSpec"),
        ({"strategy": "one_for_one"}, InvalidArgument, "strategy"),
        ({"intensity": -1}, InvalidArgument, "intensity must be >= 0"),
        ({"intensity": 1.5}, WrongType, "intensity must be an int"),
        ({"period": 0}, InvalidArgument, "period must be > 0"),
        ({"clock": object()}, WrongType, "clock"),
        ({"on_give_up": 3}, WrongType, "on_give_up"),
        ({"name": ""}, InvalidArgument, "name"),
        ({"call_timeout": -2}, InvalidArgument, "call_timeout"),
    ],
)
def test_invalid_supervisor_arguments_are_refused(
    kwargs: dict[str, Any], error: type, text: str
) -> None:
    with pytest.raises(error, match=text):
        Supervisor(**kwargs)


def test_start_child_with_a_duplicate_id_leaves_the_supervisor_unchanged(sup: Supervisor) -> None:
    before = sup.which_children()
    with pytest.raises(AlreadyPresent):
        sup.start_child(echo_spec("b"))
    assert sup.which_children() == before
    assert sup.address_of("b").ask(Crash()).error_type == "ActorCrashed"  # still supervised
    wait_until(lambda: sup.restart_count("b") == 1)


def test_child_address_reads_the_stable_address_without_asking() -> None:
    from aura_sync.errors import NotFound as _NotFound

    sup = Supervisor([echo_spec("a")], name="addr").start()
    try:
        address = sup.child_address("a")
        assert address is sup.address_of("a")
        with pytest.raises(_NotFound, match="'missing'"):
            sup.child_address("missing")
    finally:
        sup.stop()


def test_default_effects_are_the_actors_process_wide_pair() -> None:
    """A supervisor without effects shares the actors' default clock: one timer thread."""
    from aura_sync.actors._faults import resolve_effects

    config = Supervisor([echo_spec("a")])._config(None)
    assert (config.clock, config.scheduler) == resolve_effects(None, None)
    assert config.scheduler.clock is config.clock


def test_a_call_from_the_supervisors_own_thread_fails_at_once(track: Track) -> None:
    """A subscriber or child factory asking its own supervisor could only time out."""
    sup = Supervisor([echo_spec("a")], clock=ManualClock(), call_timeout=30.0)
    seen: list[BaseException] = []

    def subscriber(event: SupervisionEvent) -> None:
        try:
            sup.count_children()
        except BaseException as exc:  # recorded for the test, not swallowed silently
            seen.append(exc)

    sup.subscribe(subscriber)
    track(sup).start(timeout=10.0)  # with the ask, start would wait out call_timeout per event
    assert seen and all(isinstance(exc, SupervisorError) for exc in seen)
    assert "own thread" in str(seen[0])

    def factory(ctx: Any) -> Echo:
        sup.address_of("a")  # runs in the supervisor's thread
        return Echo("b")

    with pytest.raises(StartFailed, match="own thread"):
        sup.start_child(ChildSpec("b", factory), timeout=10.0)
    assert sup.child_address("a").ask(Ping(1)) == Num(2)  # the non-blocking lookup works


def test_start_async_starts_the_children_and_reports_a_failed_start(track: Track) -> None:
    log = Log()
    good = Supervisor([echo_spec("a", log)], clock=ManualClock(), name="good")
    bad = Supervisor([echo_spec("b", log, fail_start=True)], clock=ManualClock(), name="bad")

    async def scenario() -> None:
        assert await track(good).start_async(timeout=10.0) is good
        with pytest.raises(StartFailed, match="b cannot start"):
            await bad.start_async(timeout=10.0)

    asyncio.run(scenario())
    assert good.address_of("a").ask(Ping(1)) == Num(2)
    assert not bad.is_alive()
