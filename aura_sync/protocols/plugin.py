"""Protocol plug-ins: the spec a protocol actor is declared with, and inbound routing.

A protocol is a supervised actor declared with a :class:`ProtocolSpec`: its
id, a factory ``(ProtocolContext) -> AuraActor`` and the wire message types
it serves (``requests`` are answered, ``messages`` are one-way).  The node
starts every protocol under its ``protocols`` supervisor (anti-entropy is
one, built in).  Guarantees of :class:`Routes` and :class:`EventRouter`:

* a protocol receives, as :class:`TransportEventMessage`, exactly the
  inbound messages of the types it declared, plus every ``Connected`` and
  ``Disconnected`` event;
* an inbound request of a type nobody declared gets an ``UnhandledMessage``
  error reply at once (a one-way message is dropped and logged);
* two protocols claiming one type, two protocols with one id, or a
  ``"package.module:name"`` reference that does not resolve to a spec, is a
  :class:`~aura_sync.errors.StartFailed` naming both sides.

Inbound messages of every protocol pass the one admission hook
(:class:`~aura_sync.protocols.admission.AdmissionHook`, a protocol gets its own
with :meth:`ProtocolContext.admission`) before they are served.  The task runtime
a protocol needs (``TaskHost``, ``Tasks``, ``Ask``) is re-exported here.

Layer: runtime (protocols).
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import threading
import time
from collections.abc import Callable, Generator, Iterable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from aura_sync.actors._tasks import Ask, Step, TaskHost, Tasks
from aura_sync.actors.address import ActorAddress
from aura_sync.actors.base import AuraActor, LocalMessage
from aura_sync.errors import AuraError, PeerUnavailable, StartFailed, WrongType
from aura_sync.ids import DeviceId
from aura_sync.infrastructure.peer_scoring import Offence
from aura_sync.infrastructure.peers import PeerInfo
from aura_sync.messages import ErrorReply, Message
from aura_sync.messages.peers import ReportOffence
from aura_sync.protocols.admission import AdmissionHook
from aura_sync.supervisors import ChildContext
from aura_sync.transport.base import Connected, Connection, Disconnected, Inbound, Transport

if TYPE_CHECKING:
    from aura_sync.node.config import NodeConfig
    from aura_sync.protocols.journal import Journal

__all__ = [
    "Ask",
    "EventRouter",
    "PeerTableView",
    "ProtocolContext",
    "ProtocolSpec",
    "Routes",
    "TaskHost",
    "Tasks",
    "TransportEventMessage",
    "TransportHandle",
    "resolve_spec",
]

_log = logging.getLogger("aura_sync.protocols.plugin")


@dataclass(frozen=True, slots=True)
class TransportEventMessage(LocalMessage):
    """A transport event (Connected, Inbound, Disconnected) forwarded to a protocol actor."""

    event: Connected | Inbound | Disconnected


class PeerTableView:
    """The dial addresses of the peer manager's latest table, for the pool's connector.

    A protocol publishes every table it reads; :meth:`resolve` is what the
    connector looks a peer up with, from any thread (the published mapping is
    replaced whole, never mutated).
    """

    def __init__(self) -> None:
        self._addresses: MappingProxyType[DeviceId, str] = MappingProxyType({})
        self._trust: MappingProxyType[DeviceId, int] = MappingProxyType({})

    def publish(self, peers: Iterable[PeerInfo]) -> None:
        """Replace the view with these peers' addresses and trust."""
        peers = tuple(peers)
        self._addresses = MappingProxyType(
            {p.peer_id: p.address for p in peers if p.address is not None}
        )
        self._trust = MappingProxyType({p.peer_id: p.metadata.trust_level for p in peers})

    def trust(self, peer_id: DeviceId) -> int:
        """The peer's trust in the latest table (0 outside it: it holds no slot)."""
        return self._trust.get(peer_id, 0)

    def note(self, peer_id: DeviceId, address: str) -> None:
        """Add the address a connected peer gave itself, so that the pool can dial it
        before the next table is read."""
        self._addresses = MappingProxyType({**self._addresses, peer_id: address})

    def resolve(self, peer_id: DeviceId) -> str | None:
        """The dial address of ``peer_id``, or None."""
        return self._addresses.get(peer_id)


@dataclass(frozen=True, slots=True)
class ProtocolSpec:
    """A protocol plug-in (checked here: it comes from user code).

    :param id: the child id under the ``protocols`` supervisor (1..64 characters).
    :param factory: ``(ProtocolContext) -> AuraActor``, a new actor each call.
    :param requests: wire request types this protocol answers.
    :param messages: wire one-way message types this protocol receives.
    :param shutdown: seconds the actor may take to stop (None: the node's share of
        ``shutdown_timeout``).
    """

    id: str
    factory: Callable[[ProtocolContext], AuraActor]
    requests: tuple[type[Message], ...] = ()
    messages: tuple[type[Message], ...] = ()
    shutdown: float | None = None

    def __post_init__(self) -> None:
        if type(self.id) is not str or not 1 <= len(self.id) <= 64:
            raise WrongType(f"id must be a str of 1..64 characters, got {self.id!r}")
        if not callable(self.factory):
            raise WrongType(f"factory of protocol {self.id!r} must be callable")
        for name in ("requests", "messages"):
            kinds = tuple(getattr(self, name))
            for kind in kinds:
                if not (isinstance(kind, type) and issubclass(kind, Message)):
                    raise WrongType(
                        f"{name} of protocol {self.id!r} must be Message types, got {kind!r}"
                    )
            object.__setattr__(self, name, kinds)

    @property
    def types(self) -> tuple[type[Message], ...]:
        """Every wire type this protocol receives."""
        return self.requests + self.messages


def resolve_spec(reference: str) -> ProtocolSpec:
    """The :class:`ProtocolSpec` that ``"package.module:name"`` names.

    ``name`` is a spec or a callable returning one (called with no argument).
    Raises :class:`~aura_sync.errors.StartFailed` naming the reference.
    """
    module_name, sep, attr = reference.partition(":")
    if not sep or not module_name or not attr:
        raise StartFailed(f"protocol {reference!r}: expected 'package.module:name'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        text = f"protocol {reference!r}: cannot import {module_name!r} ({exc})"
        raise StartFailed(text) from None
    target = getattr(module, attr, None)
    if target is None:
        raise StartFailed(f"protocol {reference!r}: module {module_name!r} has no {attr!r}")
    spec = target if isinstance(target, ProtocolSpec) else None
    if spec is None and callable(target):
        try:
            spec = target()
        except Exception as exc:
            raise StartFailed(f"protocol {reference!r}: {attr}() raised {exc!r}") from None
    if not isinstance(spec, ProtocolSpec):
        raise StartFailed(f"protocol {reference!r}: {attr!r} is not a ProtocolSpec (or a factory)")
    return spec


class Routes:
    """Which protocol receives which wire type; checked for conflicts when built."""

    def __init__(self, specs: Iterable[ProtocolSpec]) -> None:
        self.specs: tuple[ProtocolSpec, ...] = tuple(specs)
        owners: dict[type[Message], str] = {}
        ids: set[str] = set()
        for spec in self.specs:
            if spec.id in ids:
                raise StartFailed(f"two protocols have the id {spec.id!r}")
            ids.add(spec.id)
            for kind in spec.types:
                other = owners.get(kind)
                if other is not None:
                    raise StartFailed(
                        f"protocols {other!r} and {spec.id!r} both claim {kind.__name__}"
                    )
                owners[kind] = spec.id
        self.owners: Mapping[type[Message], str] = MappingProxyType(owners)
        self.requests: frozenset[type[Message]] = frozenset(
            k for s in self.specs for k in s.requests
        )


class EventRouter:
    """Routes transport events to protocol actors (transport thread; never blocks).

    Events for a protocol that is not attached yet are buffered (bounded).
    The router also keeps the live connections, for :class:`TransportHandle`.
    A banned identity's connections are closed on arrival, their events dropped.
    """

    MAX_EARLY = 10_000

    def __init__(self, routes: Routes | None = None) -> None:
        self._lock = threading.Lock()
        self._routes = routes if routes is not None else Routes(())
        self._targets: dict[str, ActorAddress] = {}
        self._early: dict[str, list[TransportEventMessage]] = {}
        self._closed = False
        self._live: dict[DeviceId, dict[str, Connection]] = {}
        self._bans: dict[DeviceId, float] = {}  # identity -> monotonic deadline

    def ban(self, peer: DeviceId, seconds: float) -> None:
        """Refuse ``peer``'s connections for ``seconds`` (any thread)."""
        with self._lock:
            now = time.monotonic()
            self._bans = {p: t for p, t in self._bans.items() if t > now}
            self._bans[peer] = now + seconds

    def is_banned(self, peer: DeviceId) -> bool:
        """Whether ``peer`` is banned now."""
        until = self._bans.get(peer)
        return until is not None and until > time.monotonic()

    @property
    def routes(self) -> Routes:
        """The routing table."""
        return self._routes

    def set_routes(self, routes: Routes) -> None:
        """Route by ``routes`` from now on (before any protocol attaches)."""
        with self._lock:
            self._routes = routes

    def attach(self, protocol: str, target: ActorAddress) -> None:
        """Deliver ``protocol``'s events to ``target`` from now on (the buffered ones first)."""
        with self._lock:
            if self._closed:
                return
            self._targets[protocol] = target
            early = self._early.pop(protocol, [])
        for msg in early:
            target.tell(msg)

    def detach(self) -> None:
        """Drop events from now on (the node is stopping)."""
        with self._lock:
            self._targets.clear()
            self._early.clear()
            self._closed = True

    def connections(self, peer: DeviceId) -> list[Connection]:
        """The live connections to ``peer`` (any thread)."""
        with self._lock:
            return list(self._live.get(peer, {}).values())

    def peers(self) -> tuple[DeviceId, ...]:
        """The peers with at least one live connection, in id order."""
        with self._lock:
            return tuple(sorted(self._live))

    def __call__(self, event: Any) -> None:
        if isinstance(event, Connected | Inbound) and self.is_banned(event.connection.peer_id):
            _log.info("event=banned_peer_refused peer=%s", event.connection.peer_id)
            event.connection.close()
            return
        if isinstance(event, Inbound):
            self._inbound(event)
            return
        if isinstance(event, Connected | Disconnected):
            self._track(event)
            with self._lock:
                ids = [s.id for s in self._routes.specs]
            for protocol in ids:
                self._deliver(protocol, TransportEventMessage(event))

    def _track(self, event: Connected | Disconnected) -> None:
        conn = event.connection
        with self._lock:
            if isinstance(event, Connected):
                self._live.setdefault(conn.peer_id, {})[conn.session_id] = conn
            else:
                live = self._live.get(conn.peer_id, {})
                live.pop(conn.session_id, None)
                if not live:
                    self._live.pop(conn.peer_id, None)

    def _inbound(self, event: Inbound) -> None:
        kind = type(event.message)
        owner = self._routes.owners.get(kind)
        if owner is None:
            _log.info("event=unrouted peer=%s type=%s", event.connection.peer_id, kind.__name__)
            if event.request_id is not None:
                text = f"no protocol of this node serves {kind.__name__}"
                try:
                    event.respond(ErrorReply("UnhandledMessage", text))
                except AuraError as exc:
                    _log.debug("event=respond_failed error=%r", str(exc))
            return
        self._deliver(owner, TransportEventMessage(event))

    def _deliver(self, protocol: str, msg: TransportEventMessage) -> None:
        with self._lock:
            if self._closed:
                return
            target = self._targets.get(protocol)
            if target is None:
                early = self._early.setdefault(protocol, [])
                if len(early) < self.MAX_EARLY:
                    early.append(msg)
                return
        target.tell(msg)


class TransportHandle:
    """What a protocol may do with the transport: send, request, see connected peers.

    Sends go out on a live connection to the peer (the newest); there is no
    dialing here (the pool dials; anti-entropy keeps peers connected).
    """

    def __init__(self, router: EventRouter, transport: Transport | None = None) -> None:
        self._router = router
        self._transport = transport

    def ban(self, peer: DeviceId, addresses: Iterable[str], seconds: float) -> None:
        """Refuse ``peer`` (right after TLS) and ``addresses``' hosts (at accept, before
        TLS, where the transport can) for ``seconds``; its live connections close now
        (their hosts are banned too)."""
        self._router.ban(peer, seconds)
        live = self._router.connections(peer)
        for conn in live:
            conn.close()
        ban_address = getattr(self._transport, "ban_address", None)
        if ban_address is None:
            return
        for address in sorted({*addresses, *(c.remote_address for c in live)}):
            try:
                ban_address(address, seconds)
            except AuraError as exc:
                _log.warning("event=ban_address_failed address=%s error=%r", address, str(exc))

    def peers(self) -> tuple[DeviceId, ...]:
        """The peers connected now (id order)."""
        return self._router.peers()

    def _connection(self, peer: DeviceId) -> Connection:
        live = self._router.connections(peer)
        if not live:
            raise PeerUnavailable(f"no live connection to peer {peer}")
        return live[-1]

    def send(self, peer: DeviceId, message: Message) -> None:
        """Send a one-way ``message`` to ``peer`` (non-blocking).

        :raises PeerUnavailable: no live connection; TransportError as the connection raises.
        """
        self._connection(peer).send(message)

    def request(self, peer: DeviceId, message: Message, timeout: float) -> Future[Any]:
        """Send a request; the future completes with the reply (or the error)."""
        return self._connection(peer).request(message, timeout)


@dataclass(frozen=True, slots=True)
class ProtocolContext:
    """What a protocol's factory gets.

    :param child: the supervisor's context (stable address, stash, effects).
    :param infra: the infrastructure actors' addresses by name (``cache``,
        ``rate_limiter``, ``peer_manager``, ``pool``), stable across restarts.
    :param transport: the :class:`TransportHandle`.
    :param config: the node's configuration.
    :param journal: the node's journal.
    :param token: this node's capability token, or None.
    :param address_book: the peer addresses the pool's connector dials.
    :param fault_injection: honour ``InjectCrash``.
    :param observer: the node's metrics (an object with ``observe_*`` methods), or None.
    """

    child: ChildContext
    infra: Mapping[str, ActorAddress]
    transport: TransportHandle
    config: NodeConfig
    journal: Journal
    token: bytes | None = None
    address_book: PeerTableView = field(default_factory=PeerTableView)
    fault_injection: bool = False
    observer: Any = None

    def admission(
        self,
        tasks: Tasks,
        stats: dict[str, int],
        *,
        ask_timeout: float = 5.0,
        denied_key: str = "requests_rate_limited",
    ) -> AdmissionHook:
        """The admission hook for this protocol's inbound messages (the node's ``[defence]``
        settings, at most the limiter's ``max_cost``); a rate-limit violation is reported
        to the peer manager from a task of ``tasks``, and a ban it earns is applied with
        :meth:`TransportHandle.ban` (its connections close, its host is refused)."""
        cfg, timeout = self.config, ask_timeout

        def punish(peer: DeviceId, offence: Offence) -> Generator[Step, Any, None]:
            ban = yield Ask(self.infra["peer_manager"], ReportOffence(peer, offence), timeout)
            if ban is not None:
                self.transport.ban(peer, (), max(ban.until - self.child.clock.now(), 0.001))

        return AdmissionHook(
            dataclasses.replace(
                cfg.defence, max_cost=min(cfg.defence.max_cost, cfg.rate_limit.max_cost)
            ),
            self.infra["rate_limiter"],
            tasks,
            clock=self.child.clock,
            ask_timeout=timeout,
            stats=stats,
            report=lambda peer, offence: tasks.spawn(punish(peer, offence), f"report {peer}"),
            denied_key=denied_key,
        )
