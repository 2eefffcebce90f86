"""Protocols: what nodes do with each other over a transport.

* :mod:`~aura_sync.protocols.journal`: the SQLite journal of content-addressed ops.
* :mod:`~aura_sync.protocols.reconcile`: range-based set reconciliation
  against a small remote interface (no actors, no sockets).
* :mod:`~aura_sync.protocols.session`: sync sessions, dials and peer exchange,
  with their compensation.
* :mod:`~aura_sync.protocols.serving`: answers to peers' sync requests.
* :mod:`~aura_sync.protocols.anti_entropy`: the protocol actor wiring ticks,
  dialing, sessions and serving.
* :mod:`~aura_sync.protocols.plugin`: the plug-in spec, context and routing
  every protocol goes through; :mod:`~aura_sync.protocols.gossip`: the
  built-in publish/subscribe plug-in.

Layer: runtime.
"""

from aura_sync.protocols.anti_entropy import (
    AntiEntropyActor,
    AntiEntropyConfig,
    AppendOps,
    InfraAddresses,
    SyncStatus,
)
from aura_sync.protocols.journal import Journal
from aura_sync.protocols.plugin import ProtocolContext, ProtocolSpec

__all__ = [
    "AntiEntropyActor",
    "AntiEntropyConfig",
    "AppendOps",
    "InfraAddresses",
    "Journal",
    "ProtocolContext",
    "ProtocolSpec",
    "SyncStatus",
]
