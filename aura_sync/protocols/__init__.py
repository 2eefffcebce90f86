"""Protocols: what nodes do with each other over a transport.

* :mod:`aura_sync.protocols.journal`: the SQLite journal of content-addressed
  ops that anti-entropy sync replicates.
* :mod:`aura_sync.protocols.anti_entropy`: the anti-entropy protocol actor,
  which talks to the infrastructure actors only by messages.

Layer: runtime.
"""

from aura_sync.protocols.anti_entropy import (
    AddressBook,
    AntiEntropyActor,
    AntiEntropyConfig,
    AppendOps,
    ConnectionRegistry,
    NodeConnector,
    SyncStatus,
)
from aura_sync.protocols.journal import Journal

__all__ = [
    "AddressBook",
    "AntiEntropyActor",
    "AntiEntropyConfig",
    "AppendOps",
    "ConnectionRegistry",
    "Journal",
    "NodeConnector",
    "SyncStatus",
]
