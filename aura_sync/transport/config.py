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
    ``max_send_buffer``: most bytes queued for sending on one connection;
    a send beyond it raises :class:`~aura_sync.errors.TransportError`.
    ``max_connections``: most connections at once (further accepts are
    refused and counted).  ``linger``: how long a graceful close waits for
    queued data to drain before it aborts.

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

    def __post_init__(self) -> None:
        for name in ("connect_timeout", "read_timeout", "keepalive_interval", "idle_timeout"):
            value = getattr(self, name)
            try:
                object.__setattr__(self, name, check_seconds(value, name, allow_zero=False))
            except InvalidArgument as exc:
                raise ConfigError(str(exc)) from None
        try:
            object.__setattr__(self, "linger", check_seconds(self.linger, "linger"))
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


def _config_int(value: object, name: str, low: int, high: int) -> None:
    try:
        check_int(value, name, minimum=low, maximum=high)
    except InvalidArgument as exc:  # a bad config value is a ConfigError (WrongType passes)
        raise ConfigError(str(exc)) from None


@dataclass(frozen=True, slots=True)
class TransportStats:
    """Counters of one transport (a snapshot).

    ``messages_lost`` and ``messages_partitioned`` are only used by the
    simulated network (messages it dropped on purpose).
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
    """Over ``max_connections``."""


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
