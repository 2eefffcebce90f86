"""TcpTransport over real loopback sockets: mutual TLS 1.3, identities, framing, liveness."""

from __future__ import annotations

import contextlib
import datetime
import errno
import logging
import selectors
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from _tls_helpers import raw_tls_client, tls_retry, transports
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st
from OpenSSL import SSL

from aura_sync.errors import (
    ConfigError,
    ConnectionClosed,
    HandshakeFailed,
    InvalidArgument,
    PeerIdentityMismatch,
    RequestTimeout,
    WrongType,
)
from aura_sync.identity import NodeIdentity, self_signed_certificate
from aura_sync.ids import DeviceId
from aura_sync.messages import ErrorReply, codec
from aura_sync.messages.sync import (
    PROTOCOL_VERSION,
    DigestReply,
    DigestRequest,
    Hello,
    Op,
    PushOps,
)
from aura_sync.transport import (
    Connected,
    Connection,
    ConnectionState,
    Disconnected,
    Inbound,
    Refusal,
    RefusalKind,
    TcpTransport,
    TransportConfig,
    TransportEvent,
)
from aura_sync.transport._frames import FrameDecoder, FrameError, encode_frame

FAST = TransportConfig(
    connect_timeout=3.0, read_timeout=2.0, keepalive_interval=1.0, idle_timeout=3.0
)


# --- helpers ---------------------------------------------------------------------------------


class Recorder:
    """A handler that records events and answers requests with ``reply`` (if set)."""

    def __init__(self, reply: Callable[[Inbound], Any] | None = None) -> None:
        self.events: list[Any] = []
        self.cond = threading.Condition()
        self.reply = reply

    def __call__(self, event: TransportEvent | Refusal) -> None:
        if isinstance(event, Inbound) and event.request_id is not None and self.reply:
            answer = self.reply(event)
            if answer is not None:
                event.respond(answer)
        with self.cond:
            self.events.append(event)
            self.cond.notify_all()

    def wait_for(self, pred: Callable[[list[Any]], bool], timeout: float = 5.0) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: pred(self.events), timeout)

    def poll(self, pred: Callable[[], bool], timeout: float = 5.0) -> bool:
        """Wait (on the condition, with short timeouts) for a predicate on other state."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while not pred():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(min(left, 0.01))
        return True

    def of(self, kind: type) -> list[Any]:
        with self.cond:
            return [e for e in self.events if isinstance(e, kind)]


def _has(kind: type, n: int = 1) -> Callable[[list[Any]], bool]:
    return lambda events: sum(isinstance(e, kind) for e in events) >= n


def _echo_digest(event: Inbound) -> Any:
    return DigestReply(()) if isinstance(event.message, DigestRequest) else None


class Relay:
    """A TCP relay thread on loopback: records the bytes it forwards; can freeze (half-open)."""

    def __init__(self, target: str) -> None:
        host, port = target.rsplit(":", 1)
        self.target = (host, int(port))
        self.server = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.server.getsockname()[1]}"
        self.captured = bytearray()
        self.frozen = threading.Event()
        self.stop = threading.Event()
        self.sockets: list[socket.socket] = [self.server]
        self.thread = threading.Thread(target=self._run, name="test-relay", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self.server, selectors.EVENT_READ)
        peers: dict[socket.socket, socket.socket] = {}
        while not self.stop.is_set():
            for key, _ in sel.select(0.02):
                sock: socket.socket = key.fileobj  # type: ignore[assignment]
                if sock is self.server:
                    client, _ = self.server.accept()
                    upstream = socket.create_connection(self.target)
                    self.sockets += [client, upstream]
                    peers[client], peers[upstream] = upstream, client
                    sel.register(client, selectors.EVENT_READ)
                    sel.register(upstream, selectors.EVENT_READ)
                    continue
                if self.frozen.is_set():
                    continue  # leave the bytes unread: a silent, half-open path
                try:
                    data = sock.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    sel.unregister(sock)
                    other = peers[sock]
                    with contextlib.suppress(OSError):
                        other.shutdown(socket.SHUT_WR)
                    continue
                self.captured += data
                peers[sock].sendall(data)
            if self.frozen.is_set():
                self.stop.wait(0.02)
        sel.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        for sock in self.sockets:
            sock.close()


def _read_until_closed(conn: SSL.Connection | socket.socket, timeout: float = 5.0) -> bytes:
    """Read until the peer closes (or ``timeout`` s pass); returns what was read."""
    data = bytearray()
    sock: socket.socket = conn if isinstance(conn, socket.socket) else conn._socket  # type: ignore[assignment]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = tls_retry(sock, lambda: conn.recv(65536), deadline - time.monotonic())
        except (SSL.ZeroReturnError, SSL.SysCallError, SSL.Error, OSError):
            return bytes(data)
        if not chunk:
            return bytes(data)
        data += chunk
    raise AssertionError("the peer did not close the connection")


def _state(conn: Connection) -> ConnectionState:
    return conn.state  # (a call, so that type checkers do not keep an earlier narrowing)


def _tcp_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("aura-sync-tcp")]


@pytest.fixture
def make() -> Iterator[Callable[..., TcpTransport]]:
    with transports(FAST) as factory:
        yield factory
    assert _tcp_threads() == []


# --- tests -----------------------------------------------------------------------------------


def test_mutual_tls_both_sides_learn_the_verified_peer(make: Callable[..., TcpTransport]) -> None:
    a_id, b_id = NodeIdentity.generate(), NodeIdentity.generate()
    a, b = make(a_id), make(b_id)
    b_events = Recorder(reply=_echo_digest)
    a_events = Recorder(reply=_echo_digest)
    listener = b.listen("127.0.0.1:0", b_events)
    assert listener.address.startswith("127.0.0.1:") and not listener.address.endswith(":0")

    conn = a.connect(b_id.device_id, listener.address, handler=a_events)
    assert conn.state is ConnectionState.OPEN and conn.is_healthy()
    assert conn.peer_id == b_id.device_id
    assert conn.peer_listen_address == listener.address
    assert conn._ssl is not None and conn._ssl.get_protocol_version_name() == "TLSv1.3"

    assert b_events.wait_for(_has(Connected))
    accepted = b_events.of(Connected)[0].connection
    assert accepted.peer_id == a_id.device_id  # learnt from the verified certificate
    assert not accepted.initiator and conn.initiator

    # request/reply in both directions, and a one-way message
    assert conn.request(DigestRequest(), 5).result(5) == DigestReply(())
    assert accepted.request(DigestRequest(), 5).result(5) == DigestReply(())
    op = Op(a_id.device_id, 0, b"hello")
    conn.send(PushOps((op,)))
    assert b_events.wait_for(
        lambda ev: any(isinstance(e, Inbound) and e.message == PushOps((op,)) for e in ev)
    )
    assert a.stats().connections_established == 1 and b.stats().connections_established == 1

    conn.close()
    assert not conn.is_healthy()  # at once, even before the socket is closed
    assert b_events.wait_for(_has(Disconnected)) and a_events.wait_for(_has(Disconnected))
    assert _state(conn) is ConnectionState.CLOSED and conn.closed_reason == "closed locally"
    assert b_events.of(Disconnected)[0].reason == "closed by peer"
    with pytest.raises(ConnectionClosed):
        conn.send(DigestRequest())


def test_impostor_whose_key_does_not_match_the_expected_id_is_refused(
    make: Callable[..., TcpTransport],
) -> None:
    victim = NodeIdentity.generate()
    impostor_key = NodeIdentity.generate().private_key
    # The impostor's certificate even *claims* the victim's id in its subject.
    impostor = NodeIdentity(
        impostor_key, self_signed_certificate(impostor_key, str(victim.device_id))
    )
    refusals = Recorder()
    dialer = make(on_refused=refusals)
    impostor_events = Recorder()
    listener = make(impostor).listen("127.0.0.1:0", impostor_events)

    with pytest.raises(PeerIdentityMismatch, match=str(victim.device_id)):
        dialer.connect(victim.device_id, listener.address)
    stats = dialer.stats()
    assert stats.identity_mismatches == 1 and stats.connections_established == 0
    assert refusals.wait_for(_has(Refusal))
    refusal = refusals.of(Refusal)[0]
    assert refusal.kind is RefusalKind.IDENTITY_MISMATCH
    assert refusal.expected == victim.device_id and refusal.presented == impostor.device_id
    assert impostor_events.of(Connected) == []

    # The same dialer reaches the impostor fine when it asks for the impostor's real id.
    conn = dialer.connect(impostor.device_id, listener.address)
    assert conn.peer_id == impostor.device_id


def test_client_with_non_ed25519_certificate_is_refused(make: Callable[..., TcpTransport]) -> None:
    refusals = Recorder()
    events = Recorder()
    server = make(on_refused=refusals)
    listener = server.listen("127.0.0.1:0", events)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, str(server.local_id))])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(7)
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
    ctx.set_min_proto_version(SSL.TLS1_3_VERSION)
    ctx.use_privatekey(key)
    ctx.use_certificate(cert)
    ctx.set_verify(SSL.VERIFY_NONE)
    host, port = listener.address.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=5)
    sock.setblocking(False)
    try:
        conn = SSL.Connection(ctx, sock)
        conn.set_connect_state()
        try:
            tls_retry(sock, conn.do_handshake)
            hello = encode_frame(codec.encode(Hello(PROTOCOL_VERSION, "")))
            tls_retry(sock, lambda: conn.sendall(hello))
        except SSL.Error:
            pass
        _read_until_closed(conn)
    finally:
        sock.close()
    assert refusals.wait_for(_has(Refusal))
    refusal = refusals.of(Refusal)[0]
    assert refusal.kind is RefusalKind.HANDSHAKE and "Ed25519" in refusal.reason
    assert server.stats().handshake_failures == 1
    assert events.of(Connected) == []


def test_a_peer_speaking_another_protocol_version_is_closed_at_its_hello(
    make: Callable[..., TcpTransport], caplog: pytest.LogCaptureFixture
) -> None:
    # 0.1.0 spoke version 1 with unsigned ops: such a peer hears our version and is closed
    # before any frame of its format is read, with a reason naming both versions
    caplog.set_level(logging.DEBUG, logger="aura_sync.transport")
    events = Recorder(reply=_echo_digest)
    server = make()
    listener = server.listen("127.0.0.1:0", events)
    old = 1
    assert old != PROTOCOL_VERSION
    sock, conn = raw_tls_client(NodeIdentity.generate(), listener.address, server.local_id)
    try:
        hello = encode_frame(codec.encode(Hello(old, "")))
        tls_retry(sock, lambda: conn.sendall(hello))
        received = _read_until_closed(conn)
    finally:
        sock.close()
    first = codec.decode(FrameDecoder(FAST.max_frame_size).feed(received)[0])
    assert isinstance(first, Hello) and first.protocol_version == PROTOCOL_VERSION
    assert events.poll(lambda: server.stats().protocol_violations == 1)
    assert events.of(Connected) == []
    wanted = f"unsupported protocol version {old} (this node speaks {PROTOCOL_VERSION})"
    assert events.poll(lambda: wanted in caplog.text), caplog.text

    good = make().connect(server.local_id, listener.address)
    assert good.request(DigestRequest(), 5).result(5) == DigestReply(())


def test_plaintext_client_is_refused_and_listener_keeps_serving(
    make: Callable[..., TcpTransport],
) -> None:
    refusals = Recorder()
    events = Recorder(reply=_echo_digest)
    server = make(on_refused=refusals)
    listener = server.listen("127.0.0.1:0", events)
    host, port = listener.address.rsplit(":", 1)
    plaintext = encode_frame(codec.encode(Hello(PROTOCOL_VERSION, ""))) + encode_frame(
        codec.encode(DigestRequest())
    )
    with socket.create_connection((host, int(port)), timeout=5) as raw:
        raw.sendall(plaintext)
        answer = _read_until_closed(raw)
    assert plaintext not in answer and codec.encode(DigestReply(())) not in answer
    assert refusals.wait_for(_has(Refusal))
    assert refusals.of(Refusal)[0].kind is RefusalKind.HANDSHAKE
    assert server.stats().handshake_failures == 1
    assert events.events == []  # nothing reached the handler

    good = make().connect(server.local_id, listener.address)
    assert good.request(DigestRequest(), 5).result(5) == DigestReply(())


def test_bytes_on_the_wire_are_not_the_plaintext_frames(make: Callable[..., TcpTransport]) -> None:
    a, b = make(), make()
    events = Recorder(reply=_echo_digest)
    listener = b.listen("127.0.0.1:0", events)
    relay = Relay(listener.address)
    try:
        conn = a.connect(b.local_id, relay.address)
        marker = b"PLAINTEXT-MARKER-" * 8
        message = PushOps((Op(a.local_id, 0, marker),))
        conn.send(message)
        assert events.wait_for(
            lambda ev: any(isinstance(e, Inbound) and e.message == message for e in ev)
        )
        assert conn.request(DigestRequest(), 5).result(5) == DigestReply(())
        wire = bytes(relay.captured)
    finally:
        relay.close()
    assert len(wire) > len(marker)
    assert b"PLAINTEXT-MARKER" not in wire
    assert codec.encode(message) not in wire
    assert encode_frame(codec.encode(DigestReply(()))) not in wire
    assert b"\x17\x03\x03" in wire  # TLS application-data records


@pytest.mark.parametrize(
    ("kind", "garbage"),
    [
        ("malformed", encode_frame(b"\xc1 not msgpack at all")),
        ("malformed", b"\x00\x00\x00\x00"),  # zero-length frame
        ("oversized", (2**31).to_bytes(4, "big") + b"xx"),
        ("truncated", (100).to_bytes(4, "big") + b"only ten b"),
    ],
)
def test_bad_frame_closes_only_that_connection(
    make: Callable[..., TcpTransport], kind: str, garbage: bytes
) -> None:
    events = Recorder(reply=_echo_digest)
    server = make()
    listener = server.listen("127.0.0.1:0", events)
    bystander = make().connect(server.local_id, listener.address)
    assert events.wait_for(_has(Connected))

    bad_identity = NodeIdentity.generate()
    sock, conn = raw_tls_client(bad_identity, listener.address, server.local_id)
    try:
        tls_retry(
            sock, lambda: conn.sendall(encode_frame(codec.encode(Hello(PROTOCOL_VERSION, ""))))
        )
        assert events.wait_for(_has(Connected, 2))
        tls_retry(sock, lambda: conn.sendall(garbage))
        if kind == "truncated":
            tls_retry(sock, conn.shutdown)  # close_notify in the middle of a frame
        _read_until_closed(conn)
    finally:
        sock.close()
    assert events.wait_for(_has(Disconnected))
    gone = events.of(Disconnected)[0]
    assert gone.connection.peer_id == bad_identity.device_id
    assert kind in gone.reason
    assert getattr(server.stats(), f"{kind}_frames") == 1
    # the listener and the other connection are unaffected
    assert bystander.request(DigestRequest(), 5).result(5) == DigestReply(())
    late = make().connect(server.local_id, listener.address)
    assert late.request(DigestRequest(), 5).result(5) == DigestReply(())
    assert server.stats().connections_closed == 1


def test_frame_before_hello_is_a_protocol_violation(make: Callable[..., TcpTransport]) -> None:
    events = Recorder()
    server = make()
    listener = server.listen("127.0.0.1:0", events)
    sock, conn = raw_tls_client(NodeIdentity.generate(), listener.address, server.local_id)
    try:
        tls_retry(sock, lambda: conn.sendall(encode_frame(codec.encode(DigestRequest()))))
        _read_until_closed(conn)
    finally:
        sock.close()
    assert events.poll(lambda: server.stats().protocol_violations == 1)
    assert events.events == []


def test_half_open_connection_is_detected_and_reported_unhealthy(
    make: Callable[..., TcpTransport],
) -> None:
    config = TransportConfig(connect_timeout=2.0, keepalive_interval=0.1, idle_timeout=0.7)
    a, b = make(config=config), make(config=config)
    listener = b.listen("127.0.0.1:0", Recorder())
    relay = Relay(listener.address)
    a_events = Recorder()
    try:
        conn = a.connect(b.local_id, relay.address, handler=a_events)
        # Keepalive keeps an idle but live connection healthy well past idle_timeout.
        assert not a_events.wait_for(_has(Disconnected), timeout=1.0)
        assert conn.is_healthy() and a.stats().idle_timeouts == 0
        assert a.stats().frames_received > 2  # pongs (and the peer's pings) arrived

        relay.frozen.set()  # the path goes silent; no FIN, no RST: half-open
        assert a_events.wait_for(_has(Disconnected), timeout=3.0)
        assert not conn.is_healthy()
        assert "idle timeout" in a_events.of(Disconnected)[0].reason
        assert a.stats().idle_timeouts == 1
    finally:
        relay.close()


def test_request_timeout_and_pending_requests_fail_on_close(
    make: Callable[..., TcpTransport],
) -> None:
    a, b = make(), make()
    silent = Recorder()  # records but never answers
    listener = b.listen("127.0.0.1:0", silent)
    conn = a.connect(b.local_id, listener.address)
    started = time.monotonic()
    with pytest.raises(RequestTimeout):
        conn.request(DigestRequest(), 0.2).result(5)
    assert time.monotonic() - started >= 0.2
    assert a.stats().request_timeouts == 1

    pending = conn.request(DigestRequest(), 30)
    assert silent.wait_for(_has(Inbound, 2))
    silent.of(Connected)[0].connection.close()
    with pytest.raises(ConnectionClosed):
        pending.result(5)


def test_unhandled_request_gets_an_error_reply(make: Callable[..., TcpTransport]) -> None:
    a, b = make(), make()
    accepted = Recorder()
    listener = b.listen("127.0.0.1:0", accepted)
    conn = a.connect(b.local_id, listener.address)  # no handler on the dialing side
    assert accepted.wait_for(_has(Connected))
    reply = accepted.of(Connected)[0].connection.request(DigestRequest(), 5).result(5)
    assert isinstance(reply, ErrorReply) and reply.error_type == "UnhandledMessage"
    assert a.stats().unhandled_messages == 1
    assert conn.is_healthy()


def test_oversized_outgoing_message_is_refused_before_sending(
    make: Callable[..., TcpTransport],
) -> None:
    config = TransportConfig(max_frame_size=1024, max_send_buffer=4096)
    a, b = make(config=config), make(config=config)
    events = Recorder(reply=_echo_digest)
    listener = b.listen("127.0.0.1:0", events)
    conn = a.connect(b.local_id, listener.address)
    with pytest.raises(InvalidArgument, match="over the limit of 1024"):
        conn.send(PushOps((Op(a.local_id, 0, bytes(2000)),)))
    assert conn.request(DigestRequest(), 5).result(5) == DigestReply(())


def test_connect_failures(make: Callable[..., TcpTransport]) -> None:
    a = make()
    closed_port = socket.create_server(("127.0.0.1", 0))
    address = f"127.0.0.1:{closed_port.getsockname()[1]}"
    closed_port.close()
    with pytest.raises(HandshakeFailed, match="cannot connect"):
        a.connect(DeviceId.from_int(1), address)
    conn = a.open(DeviceId.from_int(1), address)
    with pytest.raises(HandshakeFailed):
        conn.ready.result(5)
    assert not conn.is_healthy()


def test_arguments_are_validated(make: Callable[..., TcpTransport]) -> None:
    a = make()
    with pytest.raises(InvalidArgument, match="host:port"):
        a.listen("no-port", Recorder())
    with pytest.raises(InvalidArgument, match="65535"):
        a.open(DeviceId.from_int(1), "127.0.0.1:70000")
    with pytest.raises(WrongType, match="peer_id"):
        a.open("not-an-id", "127.0.0.1:1")  # type: ignore[arg-type]
    with pytest.raises(WrongType, match="handler"):
        a.listen("127.0.0.1:0", "nope")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="idle_timeout"):
        TransportConfig(keepalive_interval=5.0, idle_timeout=5.0)
    with pytest.raises(ConfigError, match="connect_timeout"):
        TransportConfig(connect_timeout=-1)
    with pytest.raises(WrongType, match="max_frame_size"):
        TransportConfig(max_frame_size=1.5)  # type: ignore[arg-type]


def test_close_stops_threads_and_fails_new_calls() -> None:
    before = {t.ident for t in threading.enumerate()}
    transport = TcpTransport(NodeIdentity.generate(), FAST)
    other = TcpTransport(NodeIdentity.generate(), FAST)
    listener = other.listen("127.0.0.1:0", Recorder())
    conn = transport.connect(other.local_id, listener.address)
    pending = conn.request(DigestRequest(), 30)
    transport.close()
    other.close()
    with pytest.raises(ConnectionClosed):
        pending.result(5)
    with pytest.raises(ConnectionClosed):
        transport.open(other.local_id, listener.address)
    transport.close()  # idempotent
    assert {t.ident for t in threading.enumerate()} <= before


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.binary(min_size=1, max_size=300), max_size=8),
    st.lists(st.integers(1, 50), min_size=1, max_size=20),
)
def test_frame_decoder_is_independent_of_chunking(payloads: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(encode_frame(p) for p in payloads)
    decoder = FrameDecoder(300)
    out: list[bytes] = []
    pos = 0
    i = 0
    while pos < len(stream):
        step = cuts[i % len(cuts)]
        out += decoder.feed(stream[pos : pos + step])
        pos += step
        i += 1
    assert out == payloads and not decoder.has_partial
    with pytest.raises(FrameError) as info:
        FrameDecoder(300).feed((301).to_bytes(4, "big"))
    assert info.value.kind == "oversized"


class _OutOfDescriptors:
    """A listening socket whose accept() fails with EMFILE until ``until`` (monotonic s)."""

    def __init__(self, sock: socket.socket, until: float) -> None:
        self._sock = sock
        self._until = until
        self.calls = 0

    def accept(self) -> tuple[socket.socket, Any]:
        self.calls += 1
        if time.monotonic() < self._until:
            raise OSError(errno.EMFILE, "Too many open files")
        return self._sock.accept()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def test_out_of_descriptors_pauses_accepting_instead_of_spinning(
    make: Callable[..., TcpTransport],
) -> None:
    server = make()
    events = Recorder()
    listener = server.listen("127.0.0.1:0", events)
    exhausted = _OutOfDescriptors(listener._sock, time.monotonic() + 0.6)
    listener._sock = exhausted  # type: ignore[assignment]
    conn = make().open(server.local_id, listener.address)  # waits in the kernel's backlog
    assert conn.ready.result(10) is conn  # accepted once descriptors are back
    assert events.wait_for(_has(Connected))
    # a few attempts spaced by the pause, not a busy loop over a readable listener
    assert exhausted.calls <= 8, exhausted.calls
    assert server.stats().connections_rejected >= 1


def test_unexpected_error_starting_an_accepted_connection_closes_only_it(
    make: Callable[..., TcpTransport], monkeypatch: pytest.MonkeyPatch
) -> None:
    from aura_sync.transport.tcp import TcpConnection

    real_start = TcpConnection._start_accepted
    failures = [RuntimeError("boom while starting")]

    def start_once_broken(self: TcpConnection, sock: socket.socket) -> None:
        if failures:
            raise failures.pop()
        real_start(self, sock)

    monkeypatch.setattr(TcpConnection, "_start_accepted", start_once_broken)
    server = make()
    listener = server.listen("127.0.0.1:0", Recorder(reply=_echo_digest))
    with pytest.raises(HandshakeFailed):
        make().connect(server.local_id, listener.address, timeout=5)
    assert failures == []
    late = make().connect(server.local_id, listener.address)  # the loop still serves
    assert late.request(DigestRequest(), 5).result(5) == DigestReply(())


def test_any_decode_failure_counts_as_a_malformed_frame(
    make: Callable[..., TcpTransport], monkeypatch: pytest.MonkeyPatch
) -> None:
    real_decode = codec.decode

    def decode(data: bytes, **kwargs: Any) -> Any:
        if data.startswith(b"BOOM"):
            raise RuntimeError("a codec bug")
        return real_decode(data, **kwargs)

    monkeypatch.setattr(codec, "decode", decode)
    events = Recorder()
    server = make()
    listener = server.listen("127.0.0.1:0", events)
    sock, conn = raw_tls_client(NodeIdentity.generate(), listener.address, server.local_id)
    try:
        tls_retry(
            sock, lambda: conn.sendall(encode_frame(codec.encode(Hello(PROTOCOL_VERSION, ""))))
        )
        assert events.wait_for(_has(Connected))
        tls_retry(sock, lambda: conn.sendall(encode_frame(b"BOOM and more")))
        _read_until_closed(conn)
    finally:
        sock.close()
    assert events.wait_for(_has(Disconnected))
    assert "malformed" in events.of(Disconnected)[0].reason
    assert server.stats().malformed_frames == 1


def test_dialing_a_plaintext_server_is_refused(make: Callable[..., TcpTransport]) -> None:
    refusals = Recorder()
    dialer = make(on_refused=refusals)
    server = socket.create_server(("127.0.0.1", 0))
    received = bytearray()

    def plaintext_peer() -> None:  # speaks the frame protocol without TLS
        peer, _ = server.accept()
        with peer:
            peer.settimeout(5)
            peer.sendall(encode_frame(codec.encode(Hello(PROTOCOL_VERSION, ""))))
            with contextlib.suppress(OSError):
                while chunk := peer.recv(65536):
                    received.extend(chunk)

    thread = threading.Thread(target=plaintext_peer, daemon=True)
    thread.start()
    try:
        address = f"127.0.0.1:{server.getsockname()[1]}"
        with pytest.raises(HandshakeFailed):
            dialer.connect(DeviceId.from_int(7), address, timeout=5)
        thread.join(5)
        assert not thread.is_alive()  # the dialer hung up
    finally:
        server.close()
    assert bytes(received[:1]) == b"\x16"  # all it ever sent was a TLS handshake record
    assert codec.encode(Hello(PROTOCOL_VERSION, "")) not in received
    assert dialer.stats().handshake_failures == 1
    assert dialer.stats().connections_established == 0
    assert refusals.wait_for(_has(Refusal))
    assert refusals.of(Refusal)[0].kind is RefusalKind.HANDSHAKE


def test_a_dead_io_loop_is_reported_and_closes_everything(
    make: Callable[..., TcpTransport],
) -> None:
    server, client = make(), make()
    listener = server.listen("127.0.0.1:0", Recorder(reply=_echo_digest))
    peer_events = Recorder()
    conn = client.connect(server.local_id, listener.address, handler=peer_events)
    assert server.failure is None

    def broken() -> None:
        raise RuntimeError("the selector broke")

    server._iterate = broken  # type: ignore[method-assign]
    server._wake()
    server._thread.join(5)
    assert not server._thread.is_alive()
    assert server.failure == "RuntimeError: the selector broke"
    assert peer_events.wait_for(_has(Disconnected))  # its peers are told, not left hanging
    assert not conn.is_healthy()
