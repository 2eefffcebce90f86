"""Gossip: a built-in plug-in broadcasting ephemeral messages by topic (publish/subscribe).

A simplified gossipsub.  Each node announces its topics to its connected
peers (:class:`~aura_sync.messages.gossip.GossipTopics`, on connect, on a
change and every heartbeat).  A message seen for the first time is forwarded
to the topic's *mesh*: up to ``mesh_degree`` connected peers that announced
the topic, those the peer manager selects first (``SelectSyncPeers``), then
the others by id; a message published here goes to ``fanout`` of them.  Every heartbeat each node
offers the ids of its recent messages (``history`` heartbeats) to the
peers subscribed to their topics (IHave); a peer asks for those it has not
seen (IWant): lost forwards are repaired.

Guarantees: a message is delivered to a node's local subscribers at most
once while its id is in the bounded seen-cache (``seen_max`` ids, each kept
``seen_ttl`` seconds, longer than any id is offered again); the recent cache
is bounded (``cache_max``).  Peers are untrusted: every inbound gossip message
is charged to its sender at the rate limiter (cost grows with its size)
before it is looked at, its fields are bounded (``check()``), one IWant
is answered with at most 256 KiB, a peer's announced topics are capped, and
the claimed origin is never trusted for anything.  A node does not deliver
its own messages to itself.  The settings are a
:class:`~aura_sync.messages.gossip.GossipConfig` (the node's ``[gossip]``
section unless ``spec(config)`` is given one).

Layer: runtime (protocols).
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
import queue
import struct
from collections import OrderedDict
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, Final

from aura_sync._checks import check_int
from aura_sync.actors._tasks import Ask, Step, TaskHost, Tasks
from aura_sync.actors.address import ActorAddress
from aura_sync.actors.base import AuraActor, LocalMessage, handles
from aura_sync.effects import TimerHandle
from aura_sync.errors import AuraError, WrongType
from aura_sync.ids import DeviceId
from aura_sync.messages import ErrorReply
from aura_sync.messages.gossip import (
    MAX_IDS,
    MAX_PAYLOAD,
    GetGossipStats,
    GossipConfig,
    GossipIHave,
    GossipIWant,
    GossipMessage,
    GossipStats,
    GossipTopics,
    Publish,
    check_payload,
    check_topic,
)
from aura_sync.messages.peers import SelectSyncPeers
from aura_sync.protocols.admission import BYTES_PER_UNIT, IDS_PER_UNIT, cost_rule
from aura_sync.protocols.plugin import ProtocolContext, ProtocolSpec, TransportEventMessage
from aura_sync.transport.base import Connected, Disconnected, Inbound

__all__ = [
    "Gossip",
    "GossipActor",
    "GossipConfig",
    "GossipMessage",
    "Subscription",
    "spec",
]

_log = logging.getLogger("aura_sync.protocols.gossip")

Sink = Callable[[GossipMessage], None]

_STAT_NAMES: Final = (
    "published",
    "received",
    "delivered",
    "duplicates",
    "forwarded",
    "ihave_sent",
    "iwant_sent",
    "iwant_served",
    "invalid",
    "rate_limited",
    "send_failures",
    "sink_errors",
)


@dataclass(frozen=True, slots=True)
class _Heartbeat(LocalMessage):
    """The actor's own timer."""


@dataclass(frozen=True, slots=True)
class _Subscribe(LocalMessage):
    topic: str
    key: int
    sink: Sink


@dataclass(frozen=True, slots=True)
class _Unsubscribe(LocalMessage):
    topic: str
    key: int


_WIRE: Final = (GossipMessage, GossipTopics, GossipIHave, GossipIWant)
_IWANT_BYTES: Final = 256 * 1024


@cost_rule(GossipMessage)
def _message_cost(msg: GossipMessage) -> int:
    return _ceil(len(msg.payload), BYTES_PER_UNIT)


@cost_rule(GossipIHave)
def _ihave_cost(msg: GossipIHave) -> int:
    return _ceil(len(msg.msg_ids), IDS_PER_UNIT)


@cost_rule(GossipIWant)
def _iwant_cost(msg: GossipIWant) -> int:  # answered with up to _IWANT_BYTES of messages
    return _ceil(min(len(msg.msg_ids) * MAX_PAYLOAD, _IWANT_BYTES), BYTES_PER_UNIT)


@cost_rule(GossipTopics)
def _topics_cost(msg: GossipTopics) -> int:
    return 0


def _ceil(n: int, per: int) -> int:
    return -(-n // per)


class GossipActor(TaskHost, AuraActor):
    """The gossip protocol actor (see the module docstring).

    Handles :class:`Publish` and :class:`GetGossipStats` (requests), the
    local subscription messages of :class:`Gossip`, and the transport events
    of the four gossip wire messages.
    """

    def __init__(self, ctx: ProtocolContext, config: GossipConfig | None = None) -> None:
        super().__init__()
        self._ctx = ctx
        self._config = config or ctx.config.gossip
        child = ctx.child
        self._clock, self._scheduler, self._rng = child.clock, child.scheduler, child.rng
        self._me: DeviceId = ctx.journal.author
        stash = child.stash
        self._stats: dict[str, int] = stash.setdefault("stats", dict.fromkeys(_STAT_NAMES, 0))
        self._seen: OrderedDict[bytes, float] = stash.setdefault("seen", OrderedDict())
        self._subs: dict[str, dict[int, Sink]] = stash.setdefault("subs", {})
        self._counter = stash.setdefault("counter", itertools.count())
        self._cache: OrderedDict[bytes, tuple[GossipMessage, int]] = OrderedDict()
        self._peer_topics: dict[DeviceId, frozenset[str]] = {}
        self._preferred: tuple[DeviceId, ...] = ()
        self._beats = 0
        self._timer: TimerHandle | None = None
        self._tasks = Tasks(self, self._scheduler, ids=stash.setdefault("ids", itertools.count(1)))
        timeout = self._config.ask_timeout
        self._admission = ctx.admission(
            self._tasks, self._stats, ask_timeout=timeout, denied_key="rate_limited"
        )

    # --- lifecycle --------------------------------------------------------------------------

    def on_start(self) -> None:
        """Arm the heartbeat and announce this node's topics."""
        self._timer = self._scheduler.send_after(
            self._config.heartbeat * self._rng.uniform(0.1, 1.0), self.address, _Heartbeat()
        )
        self._announce()

    def on_stop(self) -> None:
        """Cancel the heartbeat and the tasks in flight."""
        if self._timer is not None:
            self._timer.cancel()
        self._tasks.abandon("stopping")

    def on_crash(self, exc: BaseException) -> None:
        """Same as :meth:`on_stop` (subscriptions and the seen-cache are in the stash)."""
        self.on_stop()

    @handles(_Heartbeat)
    def _on_heartbeat(self, msg: _Heartbeat) -> None:
        if self._timer is not None:
            self._timer.cancel()
        cfg = self._config
        self._timer = self._scheduler.send_after(
            cfg.heartbeat * self._rng.uniform(0.9, 1.1), self.address, _Heartbeat()
        )
        self._beats += 1
        horizon = self._clock.now() - cfg.seen_ttl
        while self._seen and next(iter(self._seen.values())) < horizon:
            self._seen.popitem(last=False)
        while self._cache and next(iter(self._cache.values()))[1] <= self._beats - cfg.history:
            self._cache.popitem(last=False)
        self._tasks.spawn(self._select(), "select")
        self._announce()
        self._offer()

    def _select(self) -> Generator[Step, Any, None]:
        """The peer manager's choice, best first: who gets a topic's forwards first."""
        count = 4 * max(self._config.mesh_degree, self._config.fanout)
        selected = yield Ask(
            self._ctx.infra["peer_manager"], SelectSyncPeers(count), self._config.ask_timeout
        )
        self._preferred = tuple(selected)

    # --- peers --------------------------------------------------------------------------------

    def _mesh(self, topic: str, width: int) -> list[DeviceId]:
        connected = self._ctx.transport.peers()
        subscribed = {p for p in connected if topic in self._peer_topics.get(p, ())}
        first = [p for p in self._preferred if p in subscribed]
        rest = sorted(subscribed.difference(first))
        return (first + rest)[:width]

    def _send(self, peer: DeviceId, msg: Any) -> None:
        try:
            self._ctx.transport.send(peer, msg)
        except AuraError as exc:
            self._stats["send_failures"] += 1
            _log.debug("event=gossip_send_failed peer=%s error=%r", peer, str(exc))

    def _announce(self) -> None:
        topics = GossipTopics(tuple(sorted(t for t, subs in self._subs.items() if subs)))
        for peer in self._ctx.transport.peers():
            self._send(peer, topics)

    def _offer(self) -> None:
        for peer in self._ctx.transport.peers():
            topics = self._peer_topics.get(peer)
            if not topics:
                continue
            ids = [i for i, (m, _) in self._cache.items() if m.topic in topics][-MAX_IDS:]
            if ids:
                self._stats["ihave_sent"] += 1
                self._send(peer, GossipIHave(tuple(ids)))

    # --- inbound -------------------------------------------------------------------------------

    @handles(TransportEventMessage)
    def _on_transport(self, msg: TransportEventMessage) -> None:
        event = msg.event
        if isinstance(event, Inbound):
            self._admission.serve(event, self._receive)
        elif isinstance(event, Connected):
            topics = tuple(sorted(t for t, subs in self._subs.items() if subs))
            self._send(event.connection.peer_id, GossipTopics(topics))
        elif isinstance(event, Disconnected):
            peer = event.connection.peer_id
            if peer not in self._ctx.transport.peers():
                self._peer_topics.pop(peer, None)

    def _receive(self, event: Inbound) -> bool:
        """An admitted message (False: no request was served, nothing for AIMD)."""
        msg = event.message
        peer = event.connection.peer_id
        if event.request_id is not None:
            event.respond(ErrorReply("InvalidArgument", "gossip messages are one-way"))
            return False
        if not isinstance(msg, _WIRE):
            return False
        try:
            msg.check()
            if isinstance(msg, GossipMessage):
                check_payload(msg.payload, self._config.max_payload)
        except AuraError as exc:
            self._stats["invalid"] += 1
            _log.info("event=gossip_invalid peer=%s error=%r", peer, str(exc))
            return False
        if isinstance(msg, GossipMessage):
            self._stats["received"] += 1
            self._accept(msg, peer)
        elif isinstance(msg, GossipTopics):
            self._peer_topics[peer] = frozenset(msg.topics)
        elif isinstance(msg, GossipIHave):
            want = tuple(i for i in msg.msg_ids if i not in self._seen)
            if want:
                self._stats["iwant_sent"] += 1
                self._send(peer, GossipIWant(want))
        elif isinstance(msg, GossipIWant):
            budget = _IWANT_BYTES  # one small IWant must not buy megabytes of replies
            for msg_id in msg.msg_ids:
                cached = self._cache.get(msg_id)
                if cached is not None and budget >= len(cached[0].payload):
                    budget -= len(cached[0].payload)
                    self._stats["iwant_served"] += 1
                    self._send(peer, cached[0])
        return False

    def _accept(self, msg: GossipMessage, sender: DeviceId | None) -> None:
        """A message seen for the first time: remember, deliver locally, forward."""
        if msg.msg_id in self._seen:
            self._stats["duplicates"] += 1
            return
        self._remember(msg)
        if sender is not None:
            for sink in list(self._subs.get(msg.topic, {}).values()):
                self._stats["delivered"] += 1
                try:
                    sink(msg)
                except Exception:  # a subscriber's bug must not crash the protocol
                    self._stats["sink_errors"] += 1
                    _log.exception("event=gossip_sink_failed topic=%r", msg.topic)
        width = self._config.mesh_degree if sender is not None else self._config.fanout
        for peer in self._mesh(msg.topic, width):
            if peer not in (sender, msg.origin):
                self._stats["forwarded"] += 1
                self._send(peer, msg)

    def _remember(self, msg: GossipMessage) -> None:
        self._seen[msg.msg_id] = self._clock.now()
        self._seen.move_to_end(msg.msg_id)
        while len(self._seen) > self._config.seen_max:
            self._seen.popitem(last=False)
        self._cache[msg.msg_id] = (msg, self._beats)
        while len(self._cache) > self._config.cache_max:
            self._cache.popitem(last=False)

    # --- local API --------------------------------------------------------------------------

    @handles(Publish)
    def _on_publish(self, msg: Publish) -> bytes:
        check_topic(msg.topic)
        check_payload(msg.payload, self._config.max_payload)
        seed = struct.pack(">QQ", next(self._counter), self._rng.randrange(2**63))
        msg_id = hashlib.blake2b(self._me.raw + seed, digest_size=16).digest()
        self._stats["published"] += 1
        self._accept(GossipMessage(msg.topic, msg.payload, msg_id, self._me), None)
        return msg_id

    @handles(_Subscribe)
    def _on_subscribe(self, msg: _Subscribe) -> None:
        fresh = not self._subs.get(msg.topic)
        self._subs.setdefault(msg.topic, {})[msg.key] = msg.sink
        if fresh:
            self._announce()

    @handles(_Unsubscribe)
    def _on_unsubscribe(self, msg: _Unsubscribe) -> None:
        subs = self._subs.get(msg.topic, {})
        subs.pop(msg.key, None)
        if not subs:
            self._subs.pop(msg.topic, None)
            self._announce()

    @handles(GetGossipStats)
    def _on_stats(self, msg: GetGossipStats) -> GossipStats:
        topics = sorted({*self._subs, *(t for ts in self._peer_topics.values() for t in ts)})
        return GossipStats(
            counters=tuple((n, self._stats.get(n, 0)) for n in _STAT_NAMES),
            mesh=tuple((t, len(self._mesh(t, self._config.mesh_degree))) for t in topics),
            seen=len(self._seen),
            cached=len(self._cache),
        )


# --- the application API ---------------------------------------------------------------------


class Subscription:
    """The messages of one topic, as they arrive (a bounded queue; a full one drops, counted).

    ``get(timeout)`` returns the next :class:`GossipMessage` or None after
    ``timeout`` seconds; ``await get_async(timeout)`` the same without
    blocking the event loop; ``close()`` unsubscribes (also on ``with`` exit).
    """

    _keys = itertools.count(1)

    def __init__(
        self, address: ActorAddress, topic: str, maxsize: int, callback: Sink | None = None
    ) -> None:
        self.topic = topic
        self.dropped = 0
        self._address = address
        self._key = next(self._keys)
        self._callback = callback
        self._queue: queue.Queue[GossipMessage] = queue.Queue(maxsize)
        address.tell(_Subscribe(topic, self._key, self._put))

    def _put(self, msg: GossipMessage) -> None:
        try:
            self._queue.put_nowait(msg)
        except queue.Full:
            self.dropped += 1
        if self._callback is not None:
            self._callback(msg)

    def get(self, timeout: float | None = None) -> GossipMessage | None:
        """The next message, or None after ``timeout`` seconds (None: wait on)."""
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    async def get_async(self, timeout: float | None = None) -> GossipMessage | None:
        """:meth:`get` for asyncio (waits in a worker thread)."""
        return await asyncio.to_thread(self.get, timeout)

    def close(self) -> None:
        """Stop receiving (idempotent)."""
        self._address.tell(_Unsubscribe(self.topic, self._key))

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Gossip:
    """Publish and subscribe through a node's gossip actor (``node.gossip``).

    :param address: the gossip actor's address (``node.address_of("gossip")``).
    """

    def __init__(self, address: ActorAddress) -> None:
        self._address = address

    def publish(self, topic: str, payload: bytes, timeout: float = 5.0) -> bytes:
        """Broadcast ``payload`` (bytes, at most ``max_payload``: 64 KiB by default) on
        ``topic`` (1..256 UTF-8 bytes); returns the message id.  Blocking: not for actors.

        :raises InvalidArgument, WrongType: a bad topic or payload.
        """
        self._check(topic, payload)
        return self._address.call(Publish(topic, payload), timeout)

    async def publish_async(self, topic: str, payload: bytes, timeout: float = 5.0) -> bytes:
        """:meth:`publish` for asyncio."""
        self._check(topic, payload)
        return await self._address.call_async(Publish(topic, payload), timeout)

    def subscribe(
        self, topic: str, callback: Sink | None = None, *, maxsize: int = 1000
    ) -> Subscription:
        """Receive ``topic``'s messages from now on (other nodes' only).

        ``callback`` is also called with each message, on the gossip actor's
        thread: it must be quick and must not block.
        """
        check_topic(topic)
        check_int(maxsize, "maxsize", minimum=1, maximum=1_000_000)
        if callback is not None and not callable(callback):
            raise WrongType(f"callback must be callable, got {callback!r}")
        return Subscription(self._address, topic, maxsize, callback)

    def stats(self, timeout: float = 5.0) -> GossipStats:
        """The actor's counters and mesh sizes."""
        return self._address.call(GetGossipStats(), timeout)

    @staticmethod
    def _check(topic: object, payload: object) -> None:
        check_topic(topic)
        check_payload(payload)


def spec(config: GossipConfig | None = None) -> ProtocolSpec:
    """Gossip as a plug-in (``protocols = ["gossip"]`` in the node's TOML); ``config``
    None: the node's ``[gossip]`` section."""
    return ProtocolSpec(
        "gossip",
        lambda ctx: GossipActor(ctx, config),
        messages=_WIRE,
    )
