"""Gossip messages (tags 0xE0-0xEF): ephemeral publish/subscribe broadcast.

Wire (one-way, between peers): :class:`GossipMessage` (a published message,
forwarded), :class:`GossipTopics` (the sender's subscriptions),
:class:`GossipIHave` / :class:`GossipIWant` (recent ids offered, missing
ids asked for: the repair of lost forwards).  Every one of them comes from
an untrusted peer: ``check()`` bounds each field (a message out of bounds
is dropped and counted).  Local requests: :class:`Publish`,
:class:`GetGossipStats`.  :class:`GossipConfig` holds the actor's settings
(the node's ``[gossip]`` section), checked when built.

Layer: messages.
"""

from __future__ import annotations

from dataclasses import dataclass

from aura_sync._checks import check_int
from aura_sync.effects import check_seconds
from aura_sync.errors import InvalidArgument, WrongType
from aura_sync.ids import DeviceId
from aura_sync.messages._base import Message, Request, message

__all__ = [
    "ID_SIZE",
    "MAX_IDS",
    "MAX_PAYLOAD",
    "MAX_TOPIC",
    "MAX_TOPICS",
    "GetGossipStats",
    "GossipConfig",
    "GossipIHave",
    "GossipIWant",
    "GossipMessage",
    "GossipStats",
    "GossipTopics",
    "Publish",
    "check_payload",
    "check_topic",
]

MAX_TOPIC = 256  # longest topic, UTF-8 bytes
MAX_PAYLOAD = 64 * 1024  # largest payload, bytes
ID_SIZE = 16  # bytes of a message id
MAX_IDS = 512  # most ids in one IHave or IWant
MAX_TOPICS = 64  # most topics one peer may announce


def check_topic(topic: object, name: str = "topic") -> str:
    """``topic`` if it is a str of 1..MAX_TOPIC UTF-8 bytes, else a clear error."""
    if type(topic) is not str:
        raise WrongType(f"{name} must be a str, got {type(topic).__name__}")
    size = len(topic.encode("utf-8", "surrogatepass"))
    if not 1 <= size <= MAX_TOPIC:
        raise InvalidArgument(f"{name} must be 1..{MAX_TOPIC} UTF-8 bytes, got {size}")
    return topic


def check_payload(payload: object, limit: int = MAX_PAYLOAD) -> bytes:
    """``payload`` if it is bytes of at most ``limit``, else a clear error."""
    if type(payload) is not bytes:
        raise WrongType(f"payload must be bytes, got {type(payload).__name__}")
    if len(payload) > limit:
        raise InvalidArgument(f"payload must be at most {limit} bytes, got {len(payload)}")
    return payload


@dataclass(frozen=True, slots=True)
class GossipConfig:
    """Settings of the gossip actor (the node's ``[gossip]`` section; checked here).

    :param mesh_degree: peers a message seen here is forwarded to, per topic (1..64).
    :param fanout: peers a message published here is first sent to (1..64).
    :param heartbeat: seconds between heartbeats (topic announce, IHave, expiry).
    :param history: heartbeats a message stays offered in IHave (1..100).
    :param seen_max: ids kept in the seen-cache (16..10,000,000).
    :param seen_ttl: seconds an id stays in the seen-cache (> history x heartbeat,
        so an id is never offered again once forgotten).
    :param cache_max: messages kept to answer IWant (1..1,000,000).
    :param max_payload: largest payload published or accepted, bytes
        (1..MAX_PAYLOAD); a larger one from a peer is dropped and counted invalid.
    :param ask_timeout: seconds an ask of an infrastructure actor may take.
    """

    mesh_degree: int = 6
    fanout: int = 6
    heartbeat: float = 1.0
    history: int = 5
    seen_max: int = 10_000
    seen_ttl: float = 120.0
    cache_max: int = 1000
    max_payload: int = MAX_PAYLOAD
    ask_timeout: float = 5.0

    def __post_init__(self) -> None:
        check_int(self.mesh_degree, "mesh_degree", minimum=1, maximum=64)
        check_int(self.fanout, "fanout", minimum=1, maximum=64)
        check_int(self.history, "history", minimum=1, maximum=100)
        check_int(self.seen_max, "seen_max", minimum=16, maximum=10_000_000)
        check_int(self.cache_max, "cache_max", minimum=1, maximum=1_000_000)
        check_int(self.max_payload, "max_payload", minimum=1, maximum=MAX_PAYLOAD)
        for name in ("heartbeat", "seen_ttl", "ask_timeout"):
            object.__setattr__(self, name, check_seconds(getattr(self, name), name))
        if self.seen_ttl <= self.history * self.heartbeat:
            raise InvalidArgument(
                f"seen_ttl must be longer than history x heartbeat "
                f"({self.history} x {self.heartbeat} s), got {self.seen_ttl!r}"
            )


def _check_ids(ids: tuple[bytes, ...]) -> None:
    if not 1 <= len(ids) <= MAX_IDS:
        raise InvalidArgument(f"msg_ids must hold 1..{MAX_IDS} ids, got {len(ids)}")
    for i, item in enumerate(ids):
        if type(item) is not bytes or len(item) != ID_SIZE:
            raise InvalidArgument(f"msg_ids[{i}] must be {ID_SIZE} bytes")


@message(0x00E0)
class GossipMessage(Message):
    """A published message; ``origin`` is claimed, not signed (charge the sender instead)."""

    topic: str
    payload: bytes
    msg_id: bytes
    origin: DeviceId

    def check(self) -> None:
        """The bounds of a message from a peer (raises naming the field)."""
        check_topic(self.topic)
        check_payload(self.payload)
        if len(self.msg_id) != ID_SIZE:
            raise InvalidArgument(f"msg_id must be {ID_SIZE} bytes, got {len(self.msg_id)}")


@message(0x00E1)
class GossipTopics(Message):
    """The topics the sender subscribes to (replaces what it announced before)."""

    topics: tuple[str, ...]

    def check(self) -> None:
        """The bounds of a message from a peer (raises naming the field)."""
        if len(self.topics) > MAX_TOPICS:
            raise InvalidArgument(f"topics must hold at most {MAX_TOPICS}, got {len(self.topics)}")
        for i, topic in enumerate(self.topics):
            check_topic(topic, f"topics[{i}]")


@message(0x00E2)
class GossipIHave(Message):
    """Ids of messages the sender holds in its recent-message cache."""

    msg_ids: tuple[bytes, ...]

    def check(self) -> None:
        """The bounds of a message from a peer (raises naming the field)."""
        _check_ids(self.msg_ids)


@message(0x00E3)
class GossipIWant(Message):
    """Ids (offered by an IHave) that the sender has not seen: send them."""

    msg_ids: tuple[bytes, ...]

    def check(self) -> None:
        """The bounds of a message from a peer (raises naming the field)."""
        _check_ids(self.msg_ids)


@message(0x00E4)
class Publish(Request[bytes]):
    """Publish ``payload`` on ``topic`` from this node; the reply is the new message id."""

    topic: str
    payload: bytes


@message(0x00E5)
class GossipStats(Message):
    """The gossip actor's counters (``(name, value)`` pairs), mesh sizes per topic, and the
    sizes now of its seen-cache (``seen``) and recent-message cache (``cached``)."""

    counters: tuple[tuple[str, int], ...]
    mesh: tuple[tuple[str, int], ...]
    seen: int = 0
    cached: int = 0

    def counter(self, name: str) -> int:
        """One counter by name (0 if absent)."""
        return dict(self.counters).get(name, 0)


@message(0x00E6)
class GetGossipStats(Request[GossipStats]):
    """The gossip actor's :class:`GossipStats`."""
