"""Connection admission and backpressure of the TCP transport, attacked on loopback.

Attackers connect from 127.0.0.2 (another host as far as the listener can
tell); the honest peer from 127.0.0.1.  The large counts (1100 sockets or
connections) are marked ``slow``; an always-run version uses smaller counts
and proportionally smaller limits.
"""

from __future__ import annotations

import contextlib
import dataclasses
import selectors
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from _tls_helpers import tls_retry, transports
from hypothesis import given
from hypothesis import strategies as st
from OpenSSL import SSL

from aura_sync.errors import ConfigError, InvalidArgument, TransportError
from aura_sync.identity import NodeIdentity
from aura_sync.ids import DeviceId
from aura_sync.messages import codec
from aura_sync.messages.sync import (
    PROTOCOL_VERSION,
    DigestReply,
    DigestRequest,
    Hello,
    Op,
    PushOps,
    Request,
)
from aura_sync.transport import (
    Inbound,
    Refusal,
    RefusalKind,
    TcpTransport,
    TransportConfig,
    TransportEvent,
    tls,
)
from aura_sync.transport._frames import encode_frame
from aura_sync.transport.admission import Admission, host_of

ATTACKER_HOST = "127.0.0.2"

FAST = TransportConfig(
    connect_timeout=3.0, read_timeout=2.0, keepalive_interval=1.0, idle_timeout=3.0
)


def _fast(**changes: Any) -> TransportConfig:
    return dataclasses.replace(FAST, **changes)


class Events:
    """Records transport events and refusals; answers requests with ``reply``."""

    def __init__(self, reply: Callable[[Inbound], Any] | None = None) -> None:
        self.events: list[Any] = []
        self.cond = threading.Condition()
        self.reply = reply

    def __call__(self, event: TransportEvent | Refusal) -> None:
        if isinstance(event, Inbound) and event.request_id is not None and self.reply:
            with contextlib.suppress(TransportError):  # a full send buffer drops the reply
                event.respond(self.reply(event))
        with self.cond:
            self.events.append(event)
            self.cond.notify_all()

    def count(self, kind: type) -> int:
        with self.cond:
            return sum(isinstance(e, kind) for e in self.events)


def wait_until(pred: Callable[[], bool], timeout: float) -> bool:
    """Wait for ``pred`` on a condition with short timeouts (no bare sleeping)."""
    deadline = time.monotonic() + timeout
    idle = threading.Event()
    while not pred():
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        idle.wait(min(left, 0.02))
    return True


@pytest.fixture
def make() -> Iterator[Callable[..., TcpTransport]]:
    with transports(FAST) as factory:
        yield factory


def _port(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def _attacker_socket(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((ATTACKER_HOST, 0))
    sock.setblocking(False)
    with contextlib.suppress(BlockingIOError):
        sock.connect(("127.0.0.1", port))
    return sock


class RawFlood:
    """Holds ``count`` plaintext TCP sockets open from 127.0.0.2, re-opening each one dropped."""

    def __init__(self, port: int, count: int) -> None:
        self.port = port
        self.count = count
        self.opened = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="test-raw-flood", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        sel = selectors.DefaultSelector()  # epoll: more than FD_SETSIZE sockets
        try:
            while not self.stop.is_set():
                while len(sel.get_map()) < self.count:
                    sel.register(_attacker_socket(self.port), selectors.EVENT_READ)
                    self.opened += 1
                for key, _ in sel.select(0.02):
                    sock: socket.socket = key.fileobj  # type: ignore[assignment]
                    try:
                        data = sock.recv(4096)
                    except OSError:
                        data = b""
                    if not data:  # dropped by the listener: re-open it
                        sel.unregister(sock)
                        sock.close()
        finally:
            for key in list(sel.get_map().values()):
                key.fileobj.close()  # type: ignore[union-attr]
            sel.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)


def _tls_connect(identity: NodeIdentity, port: int, expected: DeviceId) -> SSL.Connection | None:
    """A mutual-TLS connection from 127.0.0.2 that sent its Hello, or None if refused."""
    sock = socket.create_connection(
        ("127.0.0.1", port), timeout=5, source_address=(ATTACKER_HOST, 0)
    )
    sock.setblocking(False)
    conn = SSL.Connection(tls.client_context(identity), sock)
    tls.attach_check(conn, expected)
    conn.set_connect_state()
    try:
        tls_retry(sock, conn.do_handshake)
        tls_retry(sock, lambda: conn.send(encode_frame(codec.encode(Hello(PROTOCOL_VERSION, "")))))
    except (SSL.Error, OSError, TimeoutError):
        sock.close()
        return None
    return conn


def _honest_request(client: TcpTransport, server: TcpTransport, address: str) -> None:
    """Connect (retrying a refusal until 10 s pass) and get a reply, or fail the test."""
    started = time.monotonic()
    while True:
        try:
            conn = client.connect(server.local_id, address, timeout=5)
            reply = conn.request(DigestRequest(), 5).result(5)
            assert reply == DigestReply(())
            conn.close()
            return
        except TransportError:
            if time.monotonic() - started > 10:
                raise


def _digest(event: Inbound) -> Any:
    return DigestReply(())


# --- the bookkeeping, without sockets -------------------------------------------------------


class _Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def _admission(**kwargs: Any) -> tuple[Admission, _Clock]:
    clock = _Clock()
    return Admission(TransportConfig(**kwargs), clock), clock


def test_handshake_limits_total_and_per_address() -> None:
    adm, _ = _admission(max_handshaking=3, max_handshaking_per_address=2)
    adm.add_accepted("a1", "10.0.0.1")
    adm.add_accepted("a2", "10.0.0.1")
    assert adm.check_accepted("10.0.0.1") == (
        "refused_address_limit",
        "2 handshakes in progress from 10.0.0.1",
    )
    assert adm.check_accepted("10.0.0.2") is None
    adm.add_accepted("b1", "10.0.0.2")
    assert adm.check_accepted("10.0.0.3")[0] == "refused_handshake_limit"  # type: ignore[index]
    assert adm.status(0).exhausted == "handshake slots"
    adm.closed("a1")
    assert adm.check_accepted("10.0.0.1") is None
    adm.admit_dial("own", "10.0.0.9")  # own dials do not take accepted handshake slots
    assert adm.check_accepted("10.0.0.1") is None


def test_established_limits_reserve_slots_for_own_dials_and_cap_each_peer() -> None:
    adm, _ = _admission(max_established=4, reserved_outbound=2, max_connections_per_peer=1)
    p, q, r = DeviceId.from_int(1), DeviceId.from_int(2), DeviceId.from_int(3)
    for key in ("in1", "in2", "in3"):
        adm.add_accepted(key, "10.0.0.1")
    assert adm.admit_verified("in1", p) is None
    assert adm.admit_verified("in2", p) == (
        "refused_peer_limit",
        f"peer {p} already holds 1 connections",
    )
    adm.closed("in2")
    assert adm.admit_verified("in3", q) is None
    adm.add_accepted("in4", "10.0.0.1")
    assert adm.admit_verified("in4", r)[0] == "refused_established_limit"  # type: ignore[index]
    for key in ("out1", "out2"):  # the reserved slots are there for this node's dials
        assert adm.admit_dial(key, "10.0.0.5") is None
        assert adm.admit_verified(key, r) is None
    assert adm.admit_dial("out3", "10.0.0.5") is None
    assert adm.admit_verified("out3", r)[0] == "refused_established_limit"  # type: ignore[index]
    adm.closed("in1")
    adm.add_accepted("in5", "10.0.0.1")
    assert adm.admit_verified("in5", p)[0] == "refused_established_limit"  # type: ignore[index]


def test_bans_expire_and_name_the_host_of_any_address_form() -> None:
    adm, clock = _admission()
    adm.ban_address("10.1.2.3:4567", 10.0)
    assert adm.is_banned("10.1.2.3") and adm.is_banned("10.1.2.3:1")
    assert adm.check_accepted("10.1.2.3") == ("refused_banned", "address 10.1.2.3 is banned")
    adm.ban_address("[::1]:80", 5.0)
    assert adm.is_banned("::1") and adm.is_banned("0:0:0:0:0:0:0:1")
    clock.t = 5.0
    assert not adm.is_banned("::1") and adm.is_banned("10.1.2.3")
    adm.unban_address("10.1.2.3")
    assert not adm.is_banned("10.1.2.3")
    adm.ban_address("10.9.9.9", 1.0)
    clock.t = 7.0
    adm.expire_bans()
    assert adm.status(0).banned_addresses == 0
    with pytest.raises(InvalidArgument):
        adm.ban_address("10.1.2.3", 0)
    with pytest.raises(InvalidArgument):
        host_of("")


def test_trim_keeps_protected_and_young_connections_and_drops_the_lowest_scored() -> None:
    adm, clock = _admission(
        max_established=10, reserved_outbound=0, low_watermark=2, high_watermark=4, grace_period=5
    )
    peers = [DeviceId.from_int(i) for i in range(6)]
    for i, peer in enumerate(peers):
        adm.add_accepted(i, "10.0.0.1")
        assert adm.admit_verified(i, peer) is None
    assert adm.trim(lambda key: (float(key), 0.0)) == []  # all within the grace period
    clock.t = 10.0
    adm.protect(peers[0])
    assert adm.trim(lambda key: (float(key), 0.0)) == [1, 2, 3, 4]  # 6 - low, lowest first
    adm.unprotect(peers[0])
    for key in (1, 2):
        adm.closed(key)
    assert adm.trim(lambda key: (float(key), 0.0)) == []  # 4: not above the high watermark


@given(
    st.lists(
        st.tuples(st.sampled_from(["accept", "verify", "close", "dial"]), st.integers(0, 15)),
        max_size=80,
    )
)
def test_counts_never_exceed_the_limits(ops: list[tuple[str, int]]) -> None:
    adm, _ = _admission(
        max_connections=12,
        max_handshaking=5,
        max_handshaking_per_address=3,
        max_established=6,
        reserved_outbound=2,
        max_connections_per_peer=2,
        low_watermark=1,
        high_watermark=3,
    )
    inbound: set[int] = set()
    for op, key in ops:
        host, peer = f"10.0.0.{key % 3}", DeviceId.from_int(key % 4)
        if op == "accept" and key not in inbound:
            if adm.check_accepted(host) is None:
                adm.add_accepted(key, host)
                inbound.add(key)
        elif op == "dial" and key + 100 not in inbound:
            if adm.admit_dial(key + 100, host) is None:
                inbound.add(key + 100)
        elif op == "verify":
            if adm.admit_verified(key, peer) is not None:
                adm.closed(key)
                inbound.discard(key)
        elif op == "close":
            adm.closed(key)
            inbound.discard(key)
        status = adm.status(0)
        assert adm.total() <= 12 and status.handshaking <= 5 + 12 and status.established <= 6
        assert adm._inbound_handshaking <= 5
        assert all(n <= 3 for n in adm._by_host.values())
        assert all(n <= 2 for n in adm._by_peer.values())


def test_admission_config_is_validated() -> None:
    with pytest.raises(ConfigError, match="reserved_outbound"):
        TransportConfig(max_established=4, reserved_outbound=4)
    with pytest.raises(ConfigError, match="low_watermark"):
        TransportConfig(low_watermark=10, high_watermark=10)
    with pytest.raises(ConfigError, match="max_handshaking_per_address"):
        TransportConfig(max_handshaking=4, max_handshaking_per_address=5)
    with pytest.raises(ConfigError, match="grace_period"):
        TransportConfig(grace_period=-1)


# --- loopback attacks -----------------------------------------------------------------------


def _raw_flood(make: Callable[..., TcpTransport], count: int, config: TransportConfig) -> None:
    refusals: list[Refusal] = []
    server = make(config=config, on_refused=refusals.append)
    address = server.listen("127.0.0.1:0", Events(_digest)).address
    flood = RawFlood(_port(address), count)
    try:
        assert wait_until(lambda: flood.opened >= count, 30)
        seen = count - config.max_handshaking_per_address  # every socket reached the listener
        assert wait_until(lambda: server.stats().refused_address_limit >= seen, 30)
        _honest_request(make(), server, address)
        status = server.admission_status()
        assert status.handshaking <= config.max_handshaking_per_address + 1
    finally:
        flood.close()
    stats = server.stats()
    assert stats.refused_address_limit >= count - config.max_handshaking_per_address
    assert stats.connections_established >= 1
    assert any(r.kind is RefusalKind.LIMIT for r in refusals)


def test_an_honest_peer_connects_while_raw_tcp_sockets_are_held_open(
    make: Callable[..., TcpTransport],
) -> None:
    _raw_flood(make, 120, FAST)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_an_honest_peer_connects_while_1100_raw_tcp_sockets_are_held_open(
    make: Callable[..., TcpTransport],
) -> None:
    _raw_flood(make, 1100, FAST)


def _tls_flood(make: Callable[..., TcpTransport], count: int) -> None:
    server = make()
    address = server.listen("127.0.0.1:0", Events(_digest)).address
    port = _port(address)
    attacker = NodeIdentity.generate()
    held = [c for c in (_tls_connect(attacker, port, server.local_id) for _ in range(count)) if c]
    try:
        limit = FAST.max_connections_per_peer

        def settled() -> bool:  # every connection was admitted (up to the limit) or refused
            stats = server.stats()
            return stats.refused_peer_limit + stats.connections_established >= count

        assert wait_until(settled, 30)
        assert server.admission_status().established <= limit
        _honest_request(make(), server, address)
        assert server.admission_status().established <= limit + 1
        assert server.stats().refused_peer_limit >= count // 2
    finally:
        for conn in held:
            with contextlib.suppress(OSError, SSL.Error):
                conn._socket.close()  # type: ignore[attr-defined]


def test_an_honest_peer_connects_while_one_identity_holds_tls_connections(
    make: Callable[..., TcpTransport],
) -> None:
    _tls_flood(make, 40)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_an_honest_peer_connects_while_one_identity_holds_1100_tls_connections(
    make: Callable[..., TcpTransport],
) -> None:
    _tls_flood(make, 1100)


def test_a_banned_address_is_refused_at_accept_before_any_tls(
    make: Callable[..., TcpTransport],
) -> None:
    refusals: list[Refusal] = []
    server = make(on_refused=refusals.append)
    address = server.listen("127.0.0.1:0", Events(_digest)).address
    server.ban_address(ATTACKER_HOST, 60)
    assert server.is_banned(f"{ATTACKER_HOST}:1234")
    sock = socket.create_connection(("127.0.0.1", _port(address)), 5, (ATTACKER_HOST, 0))
    sock.settimeout(5)
    with contextlib.suppress(ConnectionResetError):  # a reset is "closed at once" too
        assert sock.recv(100) == b""  # closed at once: not even a TLS ServerHello was sent
    sock.close()
    assert wait_until(lambda: server.stats().refused_banned == 1 and len(refusals) == 1, 5)
    assert server.stats().handshake_failures == 0
    assert refusals[0].kind is RefusalKind.BANNED
    _honest_request(make(), server, address)  # 127.0.0.1 is not banned: served (or it raises)
    server.unban_address(ATTACKER_HOST)
    assert not server.is_banned(ATTACKER_HOST)


def test_reserved_slots_keep_own_dials_possible_when_accepted_ones_are_full(
    make: Callable[..., TcpTransport],
) -> None:
    config = _fast(
        max_established=3,
        reserved_outbound=1,
        low_watermark=2,
        high_watermark=3,
    )
    server = make(config=config)
    address = server.listen("127.0.0.1:0", Events(_digest)).address
    clients = [make() for _ in range(3)]
    for client in clients[:2]:
        client.connect(server.local_id, address)
    with pytest.raises(TransportError):  # the dialer sees the connection close early
        conn = clients[2].connect(server.local_id, address)
        conn.request(DigestRequest(), 2).result(2)
    assert wait_until(lambda: server.stats().refused_established_limit == 1, 5)
    assert server.admission_status().exhausted == "established slots"
    target = make()
    target_address = target.listen("127.0.0.1:0", Events(_digest)).address
    own = server.connect(target.local_id, target_address)
    assert own.request(DigestRequest(), 2).result(2) == DigestReply(())


def test_watermarks_trim_the_lowest_scored_unprotected_connections(
    make: Callable[..., TcpTransport],
) -> None:
    config = _fast(
        max_established=10,
        reserved_outbound=0,
        low_watermark=2,
        high_watermark=3,
        grace_period=0.0,
    )
    server = make(config=config)
    events = Events(_digest)
    address = server.listen("127.0.0.1:0", events).address
    clients = [make() for _ in range(5)]
    scores = {client.local_id: float(i) for i, client in enumerate(clients)}
    server.set_connection_scorer(lambda conn: scores[conn.peer_id])
    server.protect(clients[0].local_id)  # the lowest score, but protected
    conns = [client.connect(server.local_id, address) for client in clients]
    assert wait_until(lambda: server.stats().connections_trimmed == 3, 5)
    assert wait_until(lambda: server.admission_status().established == 2, 5)
    open_peers = {c.peer_id for c in server.connections() if c.state.value == "open"}
    assert open_peers == {clients[0].local_id, clients[4].local_id}
    assert conns[4].request(DigestRequest(), 2).result(2) == DigestReply(())


# --- backpressure ----------------------------------------------------------------------------


_BIG_REPLY = PushOps(tuple(Op(DeviceId.from_int(9), i, b"x" * 4000) for i in range(16)))


def _big(event: Inbound) -> Any:
    return _BIG_REPLY if isinstance(event.message, PushOps) else DigestReply(())


def _flood_requests(conn: SSL.Connection, count: int) -> None:
    body = codec.encode(PushOps((Op(DeviceId.from_int(1), 0, b"r"),)))
    frames = b"".join(encode_frame(codec.encode(Request(i + 1, body))) for i in range(count))
    sock: socket.socket = conn._socket  # type: ignore[attr-defined]
    with contextlib.suppress(TimeoutError):  # the server stopped reading: that is the point
        view = memoryview(frames)
        while view:
            chunk = view[:16384]
            sent = tls_retry(sock, lambda: conn.send(chunk), 2.0)  # noqa: B023 (called at once)
            view = view[sent:]


def test_unread_replies_pause_reading_and_stay_under_the_node_wide_cap(
    make: Callable[..., TcpTransport],
) -> None:
    cap = 4 * 1024 * 1024
    config = _fast(
        keepalive_interval=5.0,
        idle_timeout=30.0,
        max_total_send_buffer=cap,
        pause_reading_above=256 * 1024,
        max_inflight_requests=16,
    )
    server = make(config=config)
    events = Events(_big)
    address = server.listen("127.0.0.1:0", events).address
    port = _port(address)
    attackers = [_tls_connect(NodeIdentity.generate(), port, server.local_id) for _ in range(20)]
    peak = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.wait(0.005):
            peak = max(peak, server.admission_status().send_buffer_bytes)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        for conn in attackers:
            assert conn is not None
            _flood_requests(conn, 300)
        assert wait_until(lambda: server.stats().reads_paused >= 20, 10)
        served = events.count(Inbound)
        assert served < 20 * 300 / 4  # most requests were never read off the sockets
        _honest_request(make(), server, address)
    finally:
        stop.set()
        sampler.join(5)
        for conn in attackers:
            if conn is not None:
                conn._socket.close()  # type: ignore[attr-defined]
    assert 0 < peak <= cap
    assert wait_until(lambda: server.admission_status().send_buffer_bytes == 0, 10)


def test_the_node_wide_cap_refuses_sends_beyond_it(make: Callable[..., TcpTransport]) -> None:
    config = _fast(
        max_total_send_buffer=200_000,
    )
    server = make(config=config)
    address = server.listen("127.0.0.1:0", Events(_digest)).address
    attacker = _tls_connect(NodeIdentity.generate(), _port(address), server.local_id)
    assert attacker is not None
    assert wait_until(lambda: bool(server.connections()), 5)
    conn = next(iter(server.connections()))
    assert wait_until(lambda: conn.state.value == "open", 5)
    with pytest.raises(TransportError, match="node-wide send buffer full"):
        for _ in range(100):  # the attacker never reads: the queue only grows
            conn.send(_BIG_REPLY)
    assert server.stats().send_buffer_full >= 1
    assert server.admission_status().send_buffer_bytes <= 200_000
    assert server.admission_status().exhausted == "send buffers"
    attacker._socket.close()  # type: ignore[attr-defined]


def test_two_peers_exchanging_large_requests_both_ways_do_not_deadlock(
    make: Callable[..., TcpTransport],
) -> None:
    """Backpressure never stops a side from reading the replies it is waiting for."""
    config = _fast(
        keepalive_interval=5.0,
        idle_timeout=30.0,
        pause_reading_above=64 * 1024,
        max_send_buffer=64 * 1024 * 1024,
        max_total_send_buffer=256 * 1024 * 1024,
    )
    big = PushOps(tuple(Op(DeviceId.from_int(3), i, b"y" * 4000) for i in range(128)))

    def answer(event: Inbound) -> Any:
        return big

    a, b = make(config=config), make(config=config)
    a_events, b_events = Events(answer), Events(answer)
    address = b.listen("127.0.0.1:0", b_events).address
    conn = a.connect(b.local_id, address, handler=a_events)
    assert wait_until(lambda: bool(b.connections()), 5)
    back = next(iter(b.connections()))
    futures = [conn.request(big, 20) for _ in range(24)] + [
        back.request(big, 20) for _ in range(24)
    ]
    for future in futures:
        assert future.result(25) == big
