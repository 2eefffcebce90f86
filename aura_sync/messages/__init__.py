"""Typed, immutable messages and their msgpack codec.

The base, the codec and ``Ack`` / ``ErrorReply`` sit in the values layer (cores
declare their frozen values as messages); the per-concern request modules sit
above the cores and load on first use.  Tags by concern:

=================  ==================
range              concern
=================  ==================
0x0001 - 0x000F    common (Ack, ErrorReply)
0x0010 - 0x001F    (free)
0x0020 - 0x003F    rate limiting
0x0040 - 0x005F    cache
0x0060 - 0x007F    connection pool
0x0080 - 0x009F    peers
0x00A0 - 0x00BF    actors and supervision
0x00C0 - 0x00DF    transport and protocols (sync)
0x00E0 - 0x00EF    gossip
0x00F0 - 0x00FF    transport and protocols
0x0100 - 0x011F    application API and control socket (aura_sync.node.wire)
=================  ==================
"""

from __future__ import annotations

import importlib
from types import ModuleType

from aura_sync.errors import DecodeError
from aura_sync.messages import codec
from aura_sync.messages._base import Message, Request, message, registered_messages
from aura_sync.messages.common import Ack, ErrorReply

__all__ = [
    "Ack",
    "DecodeError",
    "ErrorReply",
    "Message",
    "Request",
    "codec",
    "load_all",
    "message",
    "registered_messages",
]

_CONCERNS = (
    "cache",
    "faults",
    "gossip",
    "peers",
    "pool",
    "rate_limit",
    "supervision",
    "sync",
)


def load_all() -> None:
    """Import every concern's message module, so that the registry knows every tag."""
    for name in _CONCERNS:
        importlib.import_module(f"{__name__}.{name}")


def __getattr__(name: str) -> ModuleType:
    if name in _CONCERNS:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
