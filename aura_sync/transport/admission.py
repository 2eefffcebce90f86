"""Connection admission: who may take a connection slot, and which connections to trim.

:class:`Admission` is the bookkeeping of one transport (after libp2p's
resource manager and connection manager).  A connection is *handshaking*
from accept (or dial) until TLS verified the peer, then *established*
until it closes.  Accepted connections are refused, before any TLS work,
when the remote host is banned, when ``max_handshaking`` accepted
connections are handshaking, or ``max_handshaking_per_address`` of them
come from that host; once verified, when ``max_established -
reserved_outbound`` connections are established (the rest are kept for
this node's dials) or the identity already holds
``max_connections_per_peer`` accepted ones.  Above ``high_watermark``
established connections, :meth:`Admission.trim` picks the lowest-scored
unprotected ones older than ``grace_period`` down to ``low_watermark``.

Not thread-safe except :meth:`ban_address`, :meth:`is_banned`,
:meth:`protect` and :meth:`unprotect`; the transport calls the rest from
its I/O thread.

Layer: runtime.
"""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Final

from aura_sync.effects import check_seconds
from aura_sync.errors import InvalidArgument, WrongType
from aura_sync.ids import DeviceId
from aura_sync.transport.config import TransportConfig

__all__ = ["Admission", "AdmissionStatus", "host_of"]

_EXHAUSTED_FOR: Final = 5.0
"""Seconds a refusal for want of a free slot keeps :attr:`AdmissionStatus.exhausted` set."""


def host_of(address: str) -> str:
    """The host part of ``"host:port"``, ``"[v6]:port"`` or a bare IP, normalized.

    Raises :class:`~aura_sync.errors.WrongType` for a non-str and
    :class:`~aura_sync.errors.InvalidArgument` for an empty string.
    """
    if not isinstance(address, str):
        raise WrongType(f"address must be a str, got {type(address).__name__} {address!r}")
    text = address.strip()
    if not text:
        raise InvalidArgument("address must not be empty")
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    host, sep, port = text.rpartition(":")
    if sep and port.isdigit() and host:
        text = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return text.lower()


@dataclass(frozen=True, slots=True)
class AdmissionStatus:
    """How full a transport's connection slots and send buffers are (a snapshot).

    ``exhausted`` names why a connection was recently refused for want of a
    free slot or buffer ("handshake slots", "established slots",
    "connections", "send buffers"), else None.
    """

    handshaking: int
    established: int
    max_handshaking: int
    max_established: int
    send_buffer_bytes: int
    max_total_send_buffer: int
    banned_addresses: int
    exhausted: str | None


@dataclass(slots=True)
class _Entry:
    host: str
    inbound: bool
    since: float
    peer: DeviceId | None = None


Refused = tuple[str, str]
"""(counter name, reason) of a refusal."""


class Admission:
    """Admission decisions and slot counts of one transport (see the module docstring).

    ``now`` is the monotonic clock in seconds.
    """

    def __init__(self, config: TransportConfig, now: Callable[[], float]) -> None:
        self._cfg = config
        self._now = now
        self._lock = threading.Lock()
        self._bans: dict[str, float] = {}
        self._protected: set[DeviceId] = set()
        self._handshaking: dict[Hashable, _Entry] = {}
        self._established: dict[Hashable, _Entry] = {}
        self._inbound_handshaking = 0
        self._by_host: dict[str, int] = {}
        self._by_peer: dict[DeviceId, int] = {}
        self._exhausted: tuple[str, float] | None = None

    # --- thread-safe API ----------------------------------------------------------------

    def ban_address(self, address: str, seconds: float) -> None:
        """Refuse connections from the host of ``address`` for ``seconds`` (> 0).

        A later ban replaces an earlier one.  Connections already open stay.
        """
        host = host_of(address)
        seconds = check_seconds(seconds, "seconds", allow_zero=False)
        with self._lock:
            self._bans[host] = self._now() + seconds

    def unban_address(self, address: str) -> None:
        """Lift the ban of ``address``'s host (no-op if it is not banned)."""
        host = host_of(address)
        with self._lock:
            self._bans.pop(host, None)

    def is_banned(self, address: str) -> bool:
        """Whether the host of ``address`` is banned now."""
        return self._banned(host_of(address))

    def protect(self, peer: DeviceId) -> None:
        """Never trim connections of ``peer`` (libp2p's ``Protect``)."""
        with self._lock:
            self._protected.add(peer)

    def unprotect(self, peer: DeviceId) -> None:
        """Let ``peer``'s connections be trimmed again."""
        with self._lock:
            self._protected.discard(peer)

    def status(self, send_buffer_bytes: int) -> AdmissionStatus:
        """A snapshot of the slot counts (reads plain ints: safe from any thread)."""
        exhausted = self._exhausted
        reason = None
        if exhausted is not None and self._now() - exhausted[1] < _EXHAUSTED_FOR:
            reason = exhausted[0]
        with self._lock:
            bans = len(self._bans)
        return AdmissionStatus(
            handshaking=len(self._handshaking),
            established=len(self._established),
            max_handshaking=self._cfg.max_handshaking,
            max_established=self._cfg.max_established,
            send_buffer_bytes=send_buffer_bytes,
            max_total_send_buffer=self._cfg.max_total_send_buffer,
            banned_addresses=bans,
            exhausted=reason,
        )

    def note_exhausted(self, what: str) -> None:
        """Record that something was refused for want of ``what`` (for :meth:`status`)."""
        self._exhausted = (what, self._now())

    # --- decisions (I/O thread) -----------------------------------------------------------

    def check_accepted(self, host: str) -> Refused | None:
        """Whether a socket accepted from ``host`` may start its handshake (None: yes)."""
        cfg = self._cfg
        if self._banned(host):
            return "refused_banned", f"address {host} is banned"
        if self.total() >= cfg.max_connections:
            self.note_exhausted("connections")
            return "connections_rejected", f"{cfg.max_connections} connections open"
        if self._inbound_handshaking >= cfg.max_handshaking:
            self.note_exhausted("handshake slots")
            return "refused_handshake_limit", f"{cfg.max_handshaking} handshakes in progress"
        if self._by_host.get(host, 0) >= cfg.max_handshaking_per_address:
            return (
                "refused_address_limit",
                f"{cfg.max_handshaking_per_address} handshakes in progress from {host}",
            )
        return None

    def add_accepted(self, key: Hashable, host: str) -> None:
        """Track ``key`` (admitted by :meth:`check_accepted`) as handshaking."""
        self._handshaking[key] = _Entry(host, True, self._now())
        self._inbound_handshaking += 1
        self._by_host[host] = self._by_host.get(host, 0) + 1

    def admit_dial(self, key: Hashable, host: str) -> Refused | None:
        """Admit one of this node's own dials (only the hard cap applies)."""
        if self.total() >= self._cfg.max_connections:
            self.note_exhausted("connections")
            return "connections_rejected", f"{self._cfg.max_connections} connections open"
        self._handshaking[key] = _Entry(host, False, self._now())
        return None

    def admit_verified(self, key: Hashable, peer: DeviceId) -> Refused | None:
        """TLS proved ``peer``: move ``key`` to the established set, or say why not."""
        entry = self._release_handshake(key)
        if entry is None:
            return None  # not tracked (closed meanwhile): nothing to decide
        cfg = self._cfg
        count = len(self._established)
        if entry.inbound:
            limit = cfg.max_established - cfg.reserved_outbound
            if count >= limit:
                self.note_exhausted("established slots")
                return (
                    "refused_established_limit",
                    f"{count} connections established (limit {limit} for accepted ones)",
                )
            if self._by_peer.get(peer, 0) >= cfg.max_connections_per_peer:
                return (
                    "refused_peer_limit",
                    f"peer {peer} already holds {cfg.max_connections_per_peer} connections",
                )
            self._by_peer[peer] = self._by_peer.get(peer, 0) + 1
        elif count >= cfg.max_established:
            self.note_exhausted("established slots")
            return "refused_established_limit", f"{count} connections established"
        entry.peer = peer
        entry.since = self._now()
        self._established[key] = entry
        return None

    def closed(self, key: Hashable) -> None:
        """``key`` is gone: free its slot (idempotent)."""
        self._release_handshake(key)
        entry = self._established.pop(key, None)
        if entry is not None and entry.inbound and entry.peer is not None:
            left = self._by_peer.get(entry.peer, 0) - 1
            if left > 0:
                self._by_peer[entry.peer] = left
            else:
                self._by_peer.pop(entry.peer, None)

    def trim(self, score: Callable[[Hashable], tuple[float, float]]) -> list[Hashable]:
        """Connections to close: above ``high_watermark``, the lowest-scored down to ``low``.

        Protected peers and connections younger than ``grace_period`` are kept.
        ``score(key)`` ranks them (lower goes first).
        """
        cfg = self._cfg
        excess = len(self._established) - cfg.low_watermark
        if len(self._established) <= cfg.high_watermark or excess <= 0:
            return []
        now = self._now()
        with self._lock:
            protected = set(self._protected)
        candidates = [
            key
            for key, entry in self._established.items()
            if entry.peer not in protected and now - entry.since >= cfg.grace_period
        ]
        candidates.sort(key=score)
        return candidates[:excess]

    def total(self) -> int:
        """Connections tracked in any state."""
        return len(self._handshaking) + len(self._established)

    def expire_bans(self) -> None:
        """Forget bans that ended (keeps the ban table bounded by live bans)."""
        now = self._now()
        with self._lock:
            for host in [h for h, until in self._bans.items() if until <= now]:
                del self._bans[host]

    def _banned(self, host: str) -> bool:
        with self._lock:
            until = self._bans.get(host)
        return until is not None and until > self._now()

    def _release_handshake(self, key: Hashable) -> _Entry | None:
        entry = self._handshaking.pop(key, None)
        if entry is not None and entry.inbound:
            self._inbound_handshaking -= 1
            left = self._by_host.get(entry.host, 0) - 1
            if left > 0:
                self._by_host[entry.host] = left
            else:
                self._by_host.pop(entry.host, None)
        return entry
