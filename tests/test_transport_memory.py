"""MemoryNetwork: the deterministic simulated transport (latency, loss, partitions)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from aura_sync.effects import ManualClock, SeededRng, SystemClock
from aura_sync.errors import (
    ConnectionClosed,
    HandshakeFailed,
    InvalidArgument,
    PeerIdentityMismatch,
    RequestTimeout,
    TransportError,
    UnknownPeer,
    WrongType,
)
from aura_sync.ids import DeviceId
from aura_sync.messages import codec
from aura_sync.messages.sync import (
    DigestReply,
    DigestRequest,
    Hello,
    Op,
    Ping,
    PushOps,
    Reply,
    Request,
)
from aura_sync.transport import (
    Connected,
    Disconnected,
    Inbound,
    MemoryNetwork,
    Refusal,
    RefusalKind,
    Transport,
    TransportConfig,
    TransportConnector,
    TransportEvent,
)

CONFIG = TransportConfig(connect_timeout=1.0, keepalive_interval=0.5, idle_timeout=2.0)
A, B, C = DeviceId.from_int(1), DeviceId.from_int(2), DeviceId.from_int(3)


class Log:
    """Handler that records events and answers DigestRequests."""

    def __init__(self) -> None:
        self.events: list[Any] = []

    def __call__(self, event: TransportEvent | Refusal) -> None:
        self.events.append(event)
        if isinstance(event, Inbound) and isinstance(event.message, DigestRequest):
            event.respond(DigestReply(()))

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]


def _network(seed: int = 1, **kwargs: Any) -> tuple[ManualClock, MemoryNetwork]:
    clock = ManualClock()
    kwargs.setdefault("config", CONFIG)
    return clock, MemoryNetwork(clock, SeededRng(seed), **kwargs)


def test_connect_request_and_events() -> None:
    clock, net = _network(latency=(0.01, 0.02))
    a, b = net.transport(A), net.transport(B)
    assert isinstance(a, Transport)
    a_log, b_log = Log(), Log()
    b.listen("mem:b", b_log)
    a.listen("mem:a", a_log)
    conn = a.connect(B, "mem:b", handler=a_log)
    assert conn.peer_id == B and conn.is_healthy() and conn.peer_listen_address == "mem:b"
    assert 0.02 <= clock.now() <= 0.08  # SYN, SYNACK+Hello, Hello: three one-way trips
    assert net.run_until(lambda: bool(b_log.of(Connected)), timeout=1)
    accepted = b_log.of(Connected)[0].connection
    assert accepted.peer_id == A and accepted.peer_listen_address == "mem:a"

    future = conn.request(DigestRequest(), 1.0)
    assert not future.done()  # nothing moves until the clock does
    assert net.run_until(future.done, timeout=1)
    assert future.result() == DigestReply(())
    back = accepted.request(DigestRequest(), 1.0)
    assert net.run_until(back.done, timeout=1) and back.result() == DigestReply(())


def test_messages_on_a_connection_arrive_in_order() -> None:
    _, net = _network(latency=(0.001, 0.2))
    a, b = net.transport(A), net.transport(B)
    log = Log()
    b.listen("mem:b", log)
    conn = a.connect(B, "mem:b")
    ops = [Op(A, i, b"x") for i in range(50)]
    for op in ops:
        conn.send(PushOps((op,)))
    assert net.run_until(lambda: len(log.of(Inbound)) == 50, timeout=5)
    assert [e.message.ops[0] for e in log.of(Inbound)] == ops


def _scenario(seed: int) -> tuple[tuple[Any, ...], list[str]]:
    """Three nodes, 20% loss, random latency, requests with timeouts; returns trace + outcomes."""
    clock, net = _network(seed, latency=(0.005, 0.05), record_trace=True)
    ids = [A, B, C]
    transports = {d: net.transport(d) for d in ids}
    for d in ids:
        transports[d].listen(f"mem:{d}", Log())
    conns = {(x, y): transports[x].connect(y, f"mem:{y}") for x in ids for y in ids if x != y}
    net.set_loss(0.2)
    outcomes: list[str] = []
    futures = []
    pairs = list(conns.values())
    for i in range(30):
        futures.append(pairs[i % len(pairs)].request(DigestRequest(), 0.3))
        clock.advance(0.01)
    net.run_until(lambda: all(f.done() for f in futures), timeout=5)
    for f in futures:
        exc = f.exception()
        outcomes.append(type(exc).__name__ if exc else "ok")
    return net.trace(), outcomes


def test_same_seed_gives_the_same_trace_and_another_seed_does_not() -> None:
    trace1, outcomes1 = _scenario(7)
    trace2, outcomes2 = _scenario(7)
    assert trace1 == trace2 and outcomes1 == outcomes2
    assert len(trace1) > 100
    assert {e.outcome for e in trace1} >= {"sent", "lost", "delivered"}
    assert "RequestTimeout" in outcomes1 and "ok" in outcomes1  # loss really bit, not always
    trace3, _ = _scenario(8)
    assert trace3 != trace1


def test_loss_drops_frames_and_is_counted() -> None:
    _, net = _network(3, latency=(0.001, 0.002))
    a, b = net.transport(A), net.transport(B)
    log = Log()
    b.listen("mem:b", log)
    conn = a.connect(B, "mem:b")
    net.set_loss(0.5)
    for i in range(200):
        conn.send(PushOps((Op(A, i, b""),)))
    net.run_until(lambda: False, timeout=0.1)
    received = len(log.of(Inbound))
    lost = a.stats().messages_lost
    assert received + lost == 200
    assert 60 < lost < 140  # about half, with this seed
    assert net.stats().lost == lost
    # what did arrive still arrived in order
    seqs = [e.message.ops[0].seq for e in log.of(Inbound)]
    assert seqs == sorted(seqs)


def test_partition_blocks_traffic_until_heal_and_idle_connections_die() -> None:
    clock, net = _network(latency=(0.01, 0.02))
    a, b, c = net.transport(A), net.transport(B), net.transport(C)
    a_log = Log()
    b.listen("mem:b", Log())
    c.listen("mem:c", Log())
    to_b = a.connect(B, "mem:b", handler=a_log)
    to_c = a.connect(C, "mem:c", handler=a_log)

    net.partition({A}, {B})
    assert net.is_partitioned(A, B) and net.is_partitioned(B, A) and not net.is_partitioned(A, C)
    blocked = to_b.request(DigestRequest(), 0.5)
    allowed = to_c.request(DigestRequest(), 0.5)
    net.run_until(lambda: blocked.done() and allowed.done(), timeout=1)
    assert isinstance(blocked.exception(), RequestTimeout)
    assert allowed.result() == DigestReply(())
    assert a.stats().messages_partitioned >= 1

    # The silent connection is half-open: keepalive goes unanswered, idle timeout closes it.
    assert net.run_until(lambda: not to_b.is_healthy(), timeout=CONFIG.idle_timeout + 1)
    net.run_until(lambda: bool(a_log.of(Disconnected)), timeout=1)
    assert "idle timeout" in a_log.of(Disconnected)[0].reason
    assert to_c.is_healthy()  # keepalive kept the other one alive
    with pytest.raises(HandshakeFailed, match="timed out"):
        a.connect(B, "mem:b")

    net.heal()
    again = a.connect(B, "mem:b")
    reply = again.request(DigestRequest(), 0.5)
    assert net.run_until(reply.done, timeout=1) and reply.result() == DigestReply(())
    assert clock.now() > CONFIG.idle_timeout


def test_identity_mismatch_and_refused_connections() -> None:
    _, net = _network()
    refusals: list[Refusal] = []
    a = net.transport(A, on_refused=refusals.append)
    b = net.transport(B)
    b_log = Log()
    b.listen("mem:b", b_log)
    with pytest.raises(PeerIdentityMismatch, match=str(C)):
        a.connect(C, "mem:b")  # B listens there, but A expects C
    assert a.stats().identity_mismatches == 1
    assert refusals[0].kind is RefusalKind.IDENTITY_MISMATCH and refusals[0].presented == B
    assert b_log.events == []
    with pytest.raises(HandshakeFailed, match="nothing listens"):
        a.connect(B, "mem:nowhere")


def test_close_tells_the_peer_and_fails_pending_requests() -> None:
    _, net = _network(keepalive=False)
    a, b = net.transport(A), net.transport(B)
    b_log = Log()
    b.listen("mem:b", b_log)
    conn = a.connect(B, "mem:b")
    net.run_until(lambda: bool(b_log.of(Connected)), timeout=1)
    pending = b_log.of(Connected)[0].connection.request(PushOps((Op(B, 0, b""),)), 5.0)
    a.close()
    assert not conn.is_healthy()
    with pytest.raises(ConnectionClosed):
        conn.send(DigestRequest())
    with pytest.raises(ConnectionClosed):
        a.open(B, "mem:b")
    assert net.run_until(lambda: bool(b_log.of(Disconnected)), timeout=1)
    assert b_log.of(Disconnected)[0].reason == "closed by peer"
    assert isinstance(pending.exception(), ConnectionClosed)


def test_without_keepalive_the_clock_goes_quiet() -> None:
    clock, net = _network(keepalive=False)
    a, b = net.transport(A), net.transport(B)
    b.listen("mem:b", Log())
    conn = a.connect(B, "mem:b")
    f = conn.request(DigestRequest(), 1.0)
    net.run_until(f.done, timeout=1)
    clock.advance(2.0)  # the connect-timeout ticks and the request timer are gone
    assert clock.next_deadline() is None
    assert conn.is_healthy()  # no keepalive: silence is not a sign of death
    assert conn.state.value == "open"


def test_transport_connector_adapts_to_the_pool() -> None:
    _, net = _network()
    a, b = net.transport(A), net.transport(B)
    b.listen("mem:b", Log())
    addresses = {B: "mem:b"}
    connector = TransportConnector(a, addresses.get)
    conn = connector.connect(B)
    assert conn.is_healthy()  # connecting counts as healthy until connect_timeout
    assert net.run_until(conn.ready.done, timeout=1) and conn.ready.result() is conn
    with pytest.raises(UnknownPeer, match=str(C)):
        connector.connect(C)


@pytest.mark.parametrize(
    ("call", "error", "text"),
    [
        (lambda net: net.set_loss(1.0), InvalidArgument, "loss"),
        (lambda net: net.set_loss("x"), WrongType, "loss"),
        (lambda net: net.set_latency((0.2, 0.1)), InvalidArgument, "latency"),
        (lambda net: net.set_latency((-1.0, 0.1)), InvalidArgument, "latency"),
        (lambda net: net.partition({A}, {A, B}), InvalidArgument, "overlap"),
        (lambda net: net.partition("ab", {B}), WrongType, "side_a"),
        (lambda net: net.transport("A"), WrongType, "device_id"),
    ],
)
def test_network_arguments_are_validated(
    call: Callable[[MemoryNetwork], Any], error: type[Exception], text: str
) -> None:
    _, net = _network()
    with pytest.raises(error, match=text):
        call(net)


def test_endpoint_arguments_are_validated() -> None:
    _, net = _network()
    a = net.transport(A)
    a.listen("mem:a", Log())
    with pytest.raises(TransportError, match="already in use"):
        net.transport(B).listen("mem:a", Log())
    with pytest.raises(InvalidArgument, match="already has a transport"):
        net.transport(A)
    with pytest.raises(InvalidArgument, match="address"):
        a.open(B, "has space")
    with pytest.raises(WrongType, match="peer_id"):
        a.open(b"B", "mem:b")  # type: ignore[arg-type]
    with pytest.raises(WrongType, match="ManualClock"):
        MemoryNetwork(SystemClock(), SeededRng(1)).run_until(lambda: True, timeout=1)


@pytest.mark.parametrize(
    ("frame", "counter"),
    [
        (codec.encode(Request(1, codec.encode(Ping(1)))), "protocol_violations"),
        (codec.encode(Reply(1, b"\xc1")), "malformed_frames"),
        (b"\x93\xff\xff", "malformed_frames"),
        (codec.encode(Hello(1, "")), "protocol_violations"),  # a second Hello
    ],
)
def test_untrusted_frames_close_only_that_connection(frame: bytes, counter: str) -> None:
    _, net = _network(keepalive=False)
    a, b, c = net.transport(A), net.transport(B), net.transport(C)
    b_log = Log()
    b.listen("mem:b", b_log)
    bad = a.connect(B, "mem:b")
    good = c.connect(B, "mem:b")
    bad._transmit(frame)  # bypass the sender's own checks: what a hostile peer could send
    assert net.run_until(lambda: bool(b_log.of(Disconnected)), timeout=1)
    assert b_log.of(Disconnected)[0].connection.peer_id == A
    assert getattr(b.stats(), counter) == 1
    assert net.run_until(lambda: bad.state.value == "closed", timeout=1)
    reply = good.request(DigestRequest(), 1.0)
    assert net.run_until(reply.done, timeout=1) and reply.result() == DigestReply(())


@pytest.mark.parametrize("error", [RecursionError("deep"), MemoryError(), KeyError("x")])
def test_any_decode_failure_closes_only_that_connection_with_a_trace(
    error: Exception, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A codec failure of any type (not only AuraError) is a malformed frame, as over TCP."""
    _, net = _network(keepalive=False, record_trace=True)
    a, b, c = net.transport(A), net.transport(B), net.transport(C)
    b_log = Log()
    b.listen("mem:b", b_log)
    bad = a.connect(B, "mem:b")
    good = c.connect(B, "mem:b")
    poison = b"\x91" * 1000 + b"\xc0"
    real_decode = codec.decode

    def decode(data: bytes, **kwargs: Any) -> Any:
        if data == poison:
            raise error
        return real_decode(data, **kwargs)

    monkeypatch.setattr(codec, "decode", decode)
    bad._transmit(poison)  # the trace names it "malformed" instead of raising in the sender
    assert net.run_until(lambda: bool(b_log.of(Disconnected)), timeout=1)
    assert b_log.of(Disconnected)[0].connection.peer_id == A
    assert b.stats().malformed_frames == 1
    assert any(e.what == "malformed" for e in net.trace())
    reply = good.request(DigestRequest(), 1.0)
    assert net.run_until(reply.done, timeout=1) and reply.result() == DigestReply(())


def test_a_banned_address_is_refused_at_accept_until_the_ban_ends() -> None:
    clock, net = _network(keepalive=False)
    refusals: list[Refusal] = []
    a, b, c = net.transport(A), net.transport(B, on_refused=refusals.append), net.transport(C)
    b.listen("mem:b", Log())
    a.listen("mem:a", Log())
    b.ban_address("mem:a", 10.0)
    assert b.is_banned("mem:a") and not b.is_banned("mem:c")
    with pytest.raises(HandshakeFailed, match="refused"):
        a.connect(B, "mem:b")
    assert b.stats().refused_banned == 1 and b.stats().connections_accepted == 0
    assert refusals[0].kind is RefusalKind.BANNED and refusals[0].remote_address == "mem:a"
    assert c.connect(B, "mem:b").is_healthy()  # another address is served
    clock.advance(10.0)
    assert not b.is_banned("mem:a")
    assert a.connect(B, "mem:b").is_healthy()
    b.ban_address("mem:a", 5.0)
    b.unban_address("mem:a")
    assert not b.is_banned("mem:a")
