"""Typed, immutable messages and their msgpack codec.

Every request and reply that reaches an actor is a :class:`Message`.  Tags
are allocated by concern, so a new message never collides with another:

=================  ==================
range              concern
=================  ==================
0x0001 - 0x000F    common (Ack, ErrorReply)
0x0010 - 0x001F    retry
0x0020 - 0x003F    rate limiting
0x0040 - 0x005F    cache
0x0060 - 0x007F    connection pool
0x0080 - 0x009F    peers
0x00A0 - 0x00BF    actors and supervision
0x00C0 - 0x00FF    transport and protocols
=================  ==================

Layer: messages.
"""

from aura_sync.errors import DecodeError
from aura_sync.messages import (
    cache,
    codec,
    faults,
    peers,
    pool,
    rate_limit,
    retry,
    supervision,
    sync,
)
from aura_sync.messages._base import Message, message, registered_messages
from aura_sync.messages.common import Ack, ErrorReply

__all__ = [
    "Ack",
    "DecodeError",
    "ErrorReply",
    "Message",
    "cache",
    "codec",
    "faults",
    "message",
    "peers",
    "pool",
    "rate_limit",
    "registered_messages",
    "retry",
    "supervision",
    "sync",
]
