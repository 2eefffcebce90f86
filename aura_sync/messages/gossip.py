"""Gossip messages (tags 0xE0-0xEF): ephemeral publish/subscribe broadcast.

Wire (one-way, between peers): :class:`GossipMessage` (a published message,
forwarded), :class:`GossipTopics` (the sender's subscriptions),
:class:`GossipIHave` / :class:`GossipIWant` (recent ids offered, missing
ids asked for: the repair of lost forwards).  Every one of them comes from
an untrusted peer: ``check()`` bounds each field (a message out of bounds
is dropped and counted).  Local requests: :class:`Publish`,
:class:`GetGossipStats`.

Layer: messages.
"""

from __future__ import annotations

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


def check_payload(payload: object) -> bytes:
    """``payload`` if it is bytes of at most MAX_PAYLOAD, else a clear error."""
    if type(payload) is not bytes:
        raise WrongType(f"payload must be bytes, got {type(payload).__name__}")
    if len(payload) > MAX_PAYLOAD:
        raise InvalidArgument(f"payload must be at most {MAX_PAYLOAD} bytes, got {len(payload)}")
    return payload


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
    """The gossip actor's counters (``(name, value)`` pairs) and mesh sizes per topic."""

    counters: tuple[tuple[str, int], ...]
    mesh: tuple[tuple[str, int], ...]

    def counter(self, name: str) -> int:
        """One counter by name (0 if absent)."""
        return dict(self.counters).get(name, 0)


@message(0x00E6)
class GetGossipStats(Request[GossipStats]):
    """The gossip actor's :class:`GossipStats`."""
