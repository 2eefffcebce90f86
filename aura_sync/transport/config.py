"""Transport configuration, counters and refusals.

:class:`TransportConfig` (timeouts and limits, validated at construction:
a bad value is a :class:`~aura_sync.errors.ConfigError` naming the field),
:class:`TransportStats` (a snapshot of a transport's counters) and
:class:`Refusal` (what ``on_refused`` callbacks receive).

Layer: runtime.
"""

from __future__ import annotations

import enum
import threading
from dataclasses import dataclass, fields
from typing import Final

from aura_sync._checks import check_int
from aura_sync.effects import check_seconds
from aura_sync.errors import ConfigError, InvalidArgument
from aura_sync.ids import DeviceId
from aura_sync.messages import codec

__all__ = ["Refusal", "RefusalKind", "TransportConfig", "TransportStats"]


@dataclass(frozen=True, slots=True)
class TransportConfig:
    """Timeouts (seconds) and limits of a transport.

    ``connect_timeout``: TCP connect + TLS handshake + Hello exchange.
    ``read_timeout``: longest wait for the rest of a started frame.
    ``keepalive_interval``: send a Ping after this long without receiving.
    ``idle_timeout``: close (dead or half-open) after this long without
    receiving; must exceed ``keepalive_interval``.
    ``max_frame_size``: largest frame payload in bytes (both directions).
    ``linger``: how long a graceful close waits for queued data to drain.

    Admission (libp2p's resource and connection managers as models):
    ``max_connections``: hard cap on sockets in any state.
    ``max_handshaking``: accepted connections still in the TCP/TLS
    handshake; ``max_handshaking_per_address``: of those, from one remote
    host.  ``max_established``: verified connections, of which the last
    ``reserved_outbound`` are kept for this node's own dials (an accepted
    connection is refused once ``max_established - reserved_outbound`` are
    established).  ``max_connections_per_peer``: accepted connections of one
    verified identity.  Above ``high_watermark`` established connections the
    lowest-scored unprotected ones older than ``grace_period`` seconds are
    closed down to ``low_watermark``.

    Backpressure: ``max_send_buffer``: bytes queued on one connection (a
    send beyond it raises :class:`~aura_sync.errors.TransportError`);
    ``max_total_send_buffer``: the same, summed over all connections.
    A connection is not read while it has ``max_inflight_requests``
    requests it has not answered, nor (unless it waits for replies of its
    own) while it has more than ``pause_reading_above`` bytes queued or half
    of ``max_total_send_buffer`` is in use node-wide.

    Raises :class:`~aura_sync.errors.ConfigError` (or
    :class:`~aura_sync.errors.WrongType`) naming the field and the value.
    """

    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    keepalive_interval: float = 15.0
    idle_timeout: float = 45.0
    max_frame_size: int = codec.MAX_FRAME_SIZE
    max_send_buffer: int = 8 * 1024 * 1024
    max_connections: int = 1024
    linger: float = 1.0
    max_handshaking: int = 64
    max_handshaking_per_address: int = 8
    max_established: int = 256
    reserved_outbound: int = 32
    max_connections_per_peer: int = 8
    low_watermark: int = 160
    high_watermark: int = 192
    grace_period: float = 20.0
    max_total_send_buffer: int = 32 * 1024 * 1024
    pause_reading_above: int = 256 * 1024
    max_inflight_requests: int = 32

    def __post_init__(self) -> None:
        for name in ("connect_timeout", "read_timeout", "keepalive_interval", "idle_timeout"):
            value = getattr(self, name)
            try:
                object.__setattr__(self, name, check_seconds(value, name, allow_zero=False))
            except InvalidArgument as exc:
                raise ConfigError(str(exc)) from None
        for name in ("linger", "grace_period"):
            try:
                object.__setattr__(self, name, check_seconds(getattr(self, name), name))
            except InvalidArgument as exc:
                raise ConfigError(str(exc)) from None
        if self.idle_timeout <= self.keepalive_interval:
            raise ConfigError(
                f"idle_timeout must exceed keepalive_interval, got idle_timeout="
                f"{self.idle_timeout} keepalive_interval={self.keepalive_interval}"
            )
        _config_int(self.max_frame_size, "max_frame_size", 64, 2**31 - 1)
        _config_int(self.max_send_buffer, "max_send_buffer", self.max_frame_size + 4, 2**40)
        _config_int(self.max_connections, "max_connections", 1, 2**20)
        _config_int(self.max_handshaking, "max_handshaking", 1, 2**20)
        _config_int(
            self.max_handshaking_per_address,
            "max_handshaking_per_address",
            1,
            self.max_handshaking,
        )
        _config_int(self.max_established, "max_established", 1, 2**20)
        _config_int(self.reserved_outbound, "reserved_outbound", 0, self.max_established - 1)
        _config_int(self.max_connections_per_peer, "max_connections_per_peer", 1, 2**20)
        _config_int(self.high_watermark, "high_watermark", 1, 2**20)
        _config_int(self.low_watermark, "low_watermark", 0, self.high_watermark - 1)
        _config_int(self.max_total_send_buffer, "max_total_send_buffer", 64, 2**42)
        _config_int(self.pause_reading_above, "pause_reading_above", 1, 2**40)
        _config_int(self.max_inflight_requests, "max_inflight_requests", 1, 2**20)


def _config_int(value: object, name: str, low: int, high: int) -> None:
    try:
        check_int(value, name, minimum=low, maximum=high)
    except InvalidArgument as exc:  # a bad config value is a ConfigError (WrongType passes)
        raise ConfigError(str(exc)) from None


@dataclass(frozen=True, slots=True)
class TransportStats:
    """Counters of one transport (a snapshot).

    ``messages_lost`` and ``messages_partitioned`` are only used by the
    simulated network (messages it dropped on purpose).  ``refused_*``
    count connections refused at admission (``connections_rejected`` counts
    the ``max_connections`` cap), ``connections_trimmed`` those closed by the
    watermarks, ``reads_paused`` each time a connection stopped being read
    for backpressure, ``send_buffer_full`` sends refused for a full buffer.
    """

    connections_dialed: int = 0
    connections_accepted: int = 0
    connections_established: int = 0
    connections_closed: int = 0
    connections_rejected: int = 0
    handshake_failures: int = 0
    identity_mismatches: int = 0
    frames_sent: int = 0
    frames_received: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    malformed_frames: int = 0
    oversized_frames: int = 0
    truncated_frames: int = 0
    protocol_violations: int = 0
    idle_timeouts: int = 0
    read_timeouts: int = 0
    requests_sent: int = 0
    request_timeouts: int = 0
    late_replies: int = 0
    unhandled_messages: int = 0
    handler_errors: int = 0
    messages_lost: int = 0
    messages_partitioned: int = 0
    refused_banned: int = 0
    refused_handshake_limit: int = 0
    refused_address_limit: int = 0
    refused_established_limit: int = 0
    refused_peer_limit: int = 0
    connections_trimmed: int = 0
    reads_paused: int = 0
    send_buffer_full: int = 0


_STAT_FIELDS: Final = tuple(f.name for f in fields(TransportStats))


class _Counters:
    """Mutable, thread-safe counters behind :class:`TransportStats`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, int] = dict.fromkeys(_STAT_FIELDS, 0)

    def bump(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._values[name] += n

    def snapshot(self) -> TransportStats:
        with self._lock:
            return TransportStats(**self._values)


class RefusalKind(enum.Enum):
    """Why a connection was refused."""

    HANDSHAKE = "handshake"
    """TLS failed: plaintext or garbage, bad or missing certificate, timeout."""
    IDENTITY_MISMATCH = "identity_mismatch"
    """The peer's certificate key does not hash to the DeviceId we expected."""
    LIMIT = "limit"
    """Over a connection limit (see :class:`TransportConfig`)."""
    BANNED = "banned"
    """The remote address is banned (:meth:`TcpTransport.ban_address`)."""


@dataclass(frozen=True, slots=True)
class Refusal:
    """A refused connection, as reported to a transport's ``on_refused`` callback.

    ``expected`` is the DeviceId the dialer asked for (None on the accepting
    side); ``presented`` the id the peer's certificate proves, when known.
    """

    kind: RefusalKind
    remote_address: str
    reason: str
    expected: DeviceId | None = None
    presented: DeviceId | None = None
