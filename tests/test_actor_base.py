"""The actor runtime: dispatch table, typed replies, errors vs crashes, deferred replies,
stable addresses, asyncio asks, typed clients."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
from typing import Any

import pytest
from _actor_helpers import (
    Crash,
    Echo,
    Get,
    Log,
    Num,
    Ping,
    Stop,
    Value,
    actor_threads,
    no_leftover_actor_threads,  # noqa: F401  (autouse fixture)
    wait_until,
)

from aura_sync.actors._mailbox import LocalMessage
from aura_sync.actors._reply import DEFERRED, ReplySlot
from aura_sync.actors.address import ActorAddress, spawn
from aura_sync.actors.base import AuraActor, current_actor, handles
from aura_sync.errors import (
    ActorError,
    AskTimeout,
    InvalidArgument,
    UnhandledMessage,
    WrongType,
)
from aura_sync.messages import Ack, ErrorReply


@pytest.fixture
def echo() -> ActorAddress:
    address = spawn(Echo(), name="echo")
    yield address
    address.stop()


class Strict(AuraActor):
    """Raises an expected error (InvalidArgument) for negative numbers."""

    @handles(Ping)
    def _ping(self, msg: Ping) -> Num:
        if msg.n < 0:
            raise InvalidArgument(f"n must be >= 0, got {msg.n}")
        return Num(msg.n * 2)

    @handles(Get)
    def _get(self, msg: Get) -> Value:
        return Value((self.incarnation,))


class Holder(AuraActor):
    """Ping -> deferred reply; Get releases every held reply with Num(n)."""

    def __init__(self, log: Log | None = None) -> None:
        super().__init__()
        self.held: list[tuple[ReplySlot, int]] = []
        self.log = log

    @handles(Ping)
    def _hold(self, msg: Ping) -> object:
        slot = self.current_reply()
        assert slot is not None
        self.held.append((slot, msg.n))
        return DEFERRED

    @handles(Get)
    def _release(self, msg: Get) -> Value:
        delivered = []
        for slot, n in self.held:
            delivered.append(int(slot.set(Num(n))))
        self.held.clear()
        return Value(tuple(delivered))

    @handles(Crash)
    def _crash(self, msg: Crash) -> None:
        raise RuntimeError(msg.text)


# --- dispatch ---------------------------------------------------------------------------


def test_typed_reply_and_ack(echo: ActorAddress) -> None:
    assert echo.ask(Ping(41)) == Num(42)

    class Quiet(AuraActor):
        @handles(Ping)
        def _ping(self, msg: Ping) -> None:
            return None

    address = spawn(Quiet())
    try:
        assert address.ask(Ping(1)) == Ack()
    finally:
        address.stop()


def test_dispatch_table_is_built_once_per_class() -> None:
    assert Echo._aura_table[Ping] is Echo._ping
    assert set(Echo._aura_table) >= {Ping, Crash, Stop, Get}

    class Louder(Echo):
        @handles(Ping)
        def _ping(self, msg: Ping) -> Num:  # decorated override replaces the base's types
            return Num(msg.n + 100)

    class Undecorated(Echo):
        def _ping(self, msg: Ping) -> Num:  # keeps handling Ping, through the override
            return Num(-msg.n)

    assert Louder._aura_table[Ping] is Louder._ping
    assert Undecorated._aura_table[Ping] is Undecorated._ping
    for cls, expected in ((Louder, Num(101)), (Undecorated, Num(-1))):
        address = spawn(cls())
        try:
            assert address.ask(Ping(1)) == expected
        finally:
            address.stop()


def test_two_handlers_for_one_type_in_one_class_is_refused() -> None:
    with pytest.raises(TypeError, match="Ping is handled by both"):

        class Twice(AuraActor):
            @handles(Ping)
            def _a(self, msg: Ping) -> None: ...

            @handles(Ping)
            def _b(self, msg: Ping) -> None: ...


@pytest.mark.parametrize("bad", [int, "Ping", object, None])
def test_handles_refuses_non_message_types(bad: object) -> None:
    with pytest.raises(WrongType, match="handles"):
        handles(bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        handles()


def test_handler_for_a_base_class_handles_subclasses() -> None:
    @dataclasses.dataclass(frozen=True)
    class Base(LocalMessage):
        n: int

    @dataclasses.dataclass(frozen=True)
    class Sub(Base):
        pass

    class Fam(AuraActor):
        @handles(Base)
        def _base(self, msg: Base) -> Num:
            return Num(msg.n)

    address = spawn(Fam())
    try:
        assert address.ask(Sub(7)) == Num(7)
        assert Fam._aura_table[Sub] is Fam._base  # resolved once, then cached
    finally:
        address.stop()


# --- bad input never kills the actor ----------------------------------------------------


@pytest.mark.parametrize("bad", [Ack(), 3, "text", None, (1, 2)])
def test_unhandled_or_invalid_message_gets_error_reply_and_actor_lives(
    echo: ActorAddress, bad: object
) -> None:
    reply = echo.ask(bad)
    assert isinstance(reply, ErrorReply)
    assert reply.error_type == "UnhandledMessage"
    assert isinstance(reply.to_exception(), UnhandledMessage)
    assert echo.ask(Ping(1)) == Num(2)


def test_told_unhandled_message_is_a_dead_letter(
    echo: ActorAddress, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="aura_sync.deadletters"):
        echo.tell(Ack())
        echo.tell(12345)
        assert echo.ask(Ping(1)) == Num(2)  # processed after the two tells
    letters = [r for r in caplog.records if r.name == "aura_sync.deadletters"]
    assert len(letters) == 2
    assert "Ack" in letters[0].getMessage()
    assert "12345" in letters[1].getMessage()


class _Unprintable:
    """A non-message whose repr raises."""

    def __repr__(self) -> str:
        raise RuntimeError("no repr")


def test_a_non_message_whose_repr_raises_is_refused_and_the_actor_lives(
    echo: ActorAddress, caplog: pytest.LogCaptureFixture
) -> None:
    reply = echo.ask(_Unprintable(), timeout=5.0)
    assert isinstance(reply, ErrorReply) and reply.error_type == "UnhandledMessage"
    assert "_Unprintable" in reply.message
    with caplog.at_level(logging.INFO, logger="aura_sync.deadletters"):
        echo.tell(_Unprintable())
        assert echo.ask(Ping(1)) == Num(2)
    assert any("_Unprintable" in r.getMessage() for r in caplog.records)
    assert echo.is_alive()


class _BrokenSlot(ReplySlot):
    """An asker's slot whose delivery raises."""

    def _deliver(self, reply: object) -> None:
        raise RuntimeError("slot broken")


def test_a_reply_slot_that_raises_does_not_hurt_the_replying_actor(echo: ActorAddress) -> None:
    slot = _BrokenSlot()
    echo.ask_with(Ping(1), slot)
    assert echo.ask(Ping(2)) == Num(3)  # handled after the broken delivery: still alive
    assert echo.ask(Get()) == Value((1, 2))
    assert slot.set(Num(0)) is False  # it was claimed once, by the failed delivery


class _Unstringable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no str")


def test_a_crash_with_an_unprintable_exception_is_answered_at_once() -> None:
    crashed: list[str] = []

    class Fragile(AuraActor):
        @handles(Crash)
        def _crash(self, msg: Crash) -> None:
            raise _Unstringable()

        def on_crash(self, exc: BaseException) -> None:
            crashed.append(type(exc).__name__)

    address = spawn(Fragile())
    reply = address.ask(Crash(), timeout=5.0)  # an error reply, not an AskTimeout
    assert reply.error_type == "ActorCrashed"
    assert "_Unstringable" in reply.message
    wait_until(lambda: not address.is_alive(), what="address to close")
    assert crashed == ["_Unstringable"]  # the teardown ran


def test_expected_error_is_an_error_reply_not_a_crash(caplog: pytest.LogCaptureFixture) -> None:
    address = spawn(Strict())
    try:
        reply = address.ask(Ping(-1))
        assert reply == ErrorReply("InvalidArgument", "n must be >= 0, got -1")
        with caplog.at_level(logging.WARNING, logger="aura_sync.actors"):
            address.tell(Ping(-2))
            assert address.ask(Ping(3)) == Num(6)
        assert any("got -2" in r.getMessage() for r in caplog.records)
        assert address.ask(Get()) == Value((1,))  # still the first incarnation
    finally:
        address.stop()


# --- crashes ----------------------------------------------------------------------------


def test_crash_replies_actor_crashed_runs_on_crash_and_stops_without_a_supervisor() -> None:
    log = Log()
    address = spawn(Echo("solo", log))
    reply = address.ask(Crash("kaput"))
    assert reply.error_type == "ActorCrashed"
    assert "kaput" in reply.message
    wait_until(lambda: not address.is_alive(), what="address to close")
    assert log.of("crash") == [("crash", "solo", 1, "kaput")]
    assert log.of("stop") == []  # on_stop is not called after a crash
    after = address.ask(Ping(1))
    assert after.error_type == "ActorStopped"
    address.tell(Ping(2))  # never raises


def test_a_handler_returns_its_reply_value_as_is() -> None:
    class Plain(AuraActor):
        @handles(Ping)
        def _ping(self, msg: Ping) -> object:
            return msg.n * 2

    address = spawn(Plain())
    assert address.ask(Ping(21)) == 42
    address.stop()


def test_exception_in_on_start_is_reported_not_swallowed() -> None:
    log = Log()
    address = spawn(Echo("bad", log, fail_start=True))
    wait_until(lambda: not address.is_alive(), what="failed start to close the address")
    assert log.of("crash") == [("crash", "bad", 1, "bad cannot start")]
    assert address.ask(Ping(1)).error_type == "ActorStopped"


# --- stopping ---------------------------------------------------------------------------


def test_stop_runs_on_stop_and_answers_later_asks_with_actor_stopped() -> None:
    log = Log()
    address = spawn(Echo("s", log))
    assert address.ask(Ping(1)) == Num(2)
    assert address.stop(timeout=5.0) is True
    assert log.of("stop") == [("stop", "s", 1)]
    assert not address.is_alive()
    assert address.ask(Ping(1)).error_type == "ActorStopped"


def test_actor_stopping_itself_closes_an_unsupervised_address() -> None:
    address = spawn(Echo())
    assert address.ask(Stop()) == Ack()
    wait_until(lambda: not address.is_alive())


def test_stop_of_a_supervised_address_is_refused() -> None:
    class FakeLink:
        def started(self, address: ActorAddress, incarnation: int) -> None: ...

        def exited(self, address: ActorAddress, incarnation: int, kind: object, r: str) -> None:
            address._close("gone")

    address = ActorAddress("linked")
    address._attach(Echo(), 1, FakeLink())  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="terminate_child"):
        address.stop()
    actor = address._actor
    assert actor is not None
    actor.stop()
    wait_until(lambda: not address.is_alive())


def test_an_actor_instance_cannot_be_started_twice() -> None:
    actor = Echo()
    address = spawn(actor)
    try:
        with pytest.raises(ActorError, match="already started"):
            spawn(actor)
    finally:
        address.stop()


# --- asks: timeouts, deferred replies, asyncio -----------------------------------------


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf"), "1", None, True])
def test_ask_refuses_bad_timeouts(echo: ActorAddress, bad: object) -> None:
    with pytest.raises((InvalidArgument, WrongType), match="timeout"):
        echo.ask(Ping(1), bad)  # type: ignore[arg-type]


def test_ask_times_out_and_a_late_deferred_reply_is_refused() -> None:
    address = spawn(Holder())
    try:
        with pytest.raises(AskTimeout, match="Ping"):
            address.ask(Ping(1), timeout=0.05)
        # The actor still holds the slot; the asker is gone so set() reports False.
        assert address.ask(Get()) == Value((0,))
    finally:
        address.stop()


def test_deferred_reply_is_delivered_later() -> None:
    address = spawn(Holder())
    try:
        results: list[object] = []
        asker = threading.Thread(target=lambda: results.append(address.ask(Ping(9), 5.0)))
        asker.start()
        wait_until(lambda: address.queued() == 0 and _held(address) == 1, what="the held ask")
        assert address.ask(Get()) == Value((1,))
        asker.join(5.0)
        assert results == [Num(9)]
    finally:
        address.stop()


def _held(address: ActorAddress) -> int:
    actor = address._actor
    return len(actor.held) if isinstance(actor, Holder) else -1


@pytest.mark.parametrize("end", ["crash", "stop"])
def test_pending_deferred_replies_fail_when_the_incarnation_ends(end: str) -> None:
    address = spawn(Holder())
    results: list[object] = []
    asker = threading.Thread(target=lambda: results.append(address.ask(Ping(1), 5.0)))
    asker.start()
    wait_until(lambda: _held(address) == 1, what="the held ask")
    if end == "crash":
        assert address.ask(Crash()).error_type == "ActorCrashed"
    else:
        address.stop()
    asker.join(5.0)
    assert len(results) == 1
    assert results[0].error_type == ("ActorCrashed" if end == "crash" else "ActorStopped")
    wait_until(lambda: not address.is_alive())


def test_ask_async_does_not_block_the_event_loop() -> None:
    address = spawn(Holder())

    async def scenario() -> tuple[object, object, list[str]]:
        order: list[str] = []

        async def releaser() -> None:
            while _held(address) < 1:  # the loop keeps running while the ask is pending
                await asyncio.sleep(0.001)
            order.append("releasing")
            address.tell(Get())

        task = asyncio.create_task(releaser())
        reply = await address.ask_async(Ping(5), timeout=5.0)
        order.append("replied")
        await task
        echo = await address.ask_async(Get(), timeout=5.0)
        return reply, echo, order

    try:
        reply, second, order = asyncio.run(scenario())
        assert reply == Num(5)
        assert second == Value(())
        assert order == ["releasing", "replied"]
    finally:
        address.stop()


def test_ask_async_times_out_and_the_slot_is_abandoned() -> None:
    address = spawn(Holder())

    async def scenario() -> None:
        with pytest.raises(AskTimeout):
            await address.ask_async(Ping(1), timeout=0.05)

    try:
        asyncio.run(scenario())
        assert address.ask(Get()) == Value((0,))  # set() refused: nobody listens
    finally:
        address.stop()


def test_pykka_ref_ask_still_works(echo: ActorAddress) -> None:
    actor = echo._actor
    assert actor is not None
    assert actor.actor_ref.ask(Ping(2), timeout=5.0) == Num(3)


def test_the_pykka_behaviour_the_runtime_relies_on() -> None:
    """What aura_sync.actors._pykka assumes of pykka; a release changing it fails here."""
    import pykka

    from aura_sync.actors._mailbox import Mailbox
    from aura_sync.actors._pykka import ActorStop, rebind_inbox

    # Actor.__init__ builds the inbox with _create_actor_inbox; ActorRef copies it.
    actor = Echo("pykka")
    assert type(actor.actor_inbox) is Mailbox
    assert actor.actor_ref.actor_inbox is actor.actor_inbox

    # ActorRef.tell / ask / stop put Envelopes (message, reply_to) into the re-pointed inbox.
    seen: list[Any] = []

    class Spy(Mailbox):
        def put(self, envelope: Any, /) -> None:
            seen.append(envelope)

    rebind_inbox(actor, Spy())
    actor.actor_ref.tell(Ping(1))
    actor.actor_ref.ask(Ping(2), block=False)
    actor.actor_ref.stop(block=False)
    assert [type(e.message) for e in seen] == [Ping, Ping, ActorStop]
    assert seen[0].reply_to is None and isinstance(seen[1].reply_to, pykka.Future)

    # Actor.start goes through _start_actor_loop to our loop; ActorRef.stop's
    # ActorStop ends it, and actor_stopped (pykka's is_alive) is set at the end.
    ref = Echo.start("started by pykka")
    assert ref.ask(Ping(1), timeout=5.0) == Num(2)
    assert any(t.name.startswith("aura-actor:Echo") for t in actor_threads())
    assert ref.stop(timeout=5.0) is True
    assert ref.actor_stopped.wait(5.0) and not ref.is_alive()


def test_current_actor_is_set_only_in_actor_threads() -> None:
    seen: list[object] = []

    class Who(AuraActor):
        @handles(Ping)
        def _who(self, msg: Ping) -> None:
            seen.append(current_actor() is self)

    address = spawn(Who())
    try:
        address.ask(Ping(0))
        assert seen == [True]
        assert current_actor() is None
    finally:
        address.stop()


# --- typed call ----------------------------------------------------------------------


def test_call_returns_values_and_raises_errors() -> None:
    address = spawn(Strict())
    try:
        assert address.call(Ping(4), 2.0).n == 8
        with pytest.raises(InvalidArgument, match="got -1"):
            address.call(Ping(-1), 2.0)
        assert asyncio.run(address.call_async(Ping(5), 2.0)).n == 10
    finally:
        address.stop()
    with pytest.raises(ActorError):  # ActorStopped after the stop
        address.call(Ping(1), 2.0)


def test_an_address_needs_a_name() -> None:
    with pytest.raises(InvalidArgument):
        ActorAddress("")


class _Relay(AuraActor):
    """Asks ``target`` from inside a handler with ask_with; the reply comes back as a message."""

    def __init__(self, target: ActorAddress) -> None:
        super().__init__()
        self.target = target
        self.got: list[object] = []
        self.done = threading.Event()

    @handles(Num)
    def _forward(self, msg: Num) -> None:
        relay = self

        class _TellBack(ReplySlot):
            def _deliver(self, reply: object) -> None:
                relay.address.tell(_Replied(reply))

        self.target.ask_with(Ping(msg.n), _TellBack())

    @handles(LocalMessage)
    def _replied(self, msg: LocalMessage) -> None:
        assert isinstance(msg, _Replied)
        self.got.append(msg.reply)
        self.done.set()


@dataclasses.dataclass(frozen=True)
class _Replied(LocalMessage):
    reply: object


def test_ask_with_lets_an_actor_ask_without_blocking(echo: ActorAddress) -> None:
    relay = _Relay(echo)
    address = spawn(relay, name="relay")
    try:
        address.tell(Num(41))
        assert relay.done.wait(5.0)
        assert relay.got == [Num(42)]
    finally:
        address.stop()


def test_ask_with_on_a_stopped_address_answers_at_once() -> None:
    address = spawn(Echo(), name="gone")
    address.stop()
    replies: list[object] = []

    class _Collect(ReplySlot):
        def _deliver(self, reply: object) -> None:
            replies.append(reply)

    address.ask_with(Ping(1), _Collect())
    assert len(replies) == 1
    assert isinstance(replies[0], ErrorReply) and replies[0].error_type == "ActorStopped"
