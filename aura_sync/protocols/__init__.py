"""Protocols: what nodes do with each other over a transport.

* :mod:`~aura_sync.protocols.journal`: the SQLite journal of content-addressed ops.
* :mod:`~aura_sync.protocols.reconcile`: range-based set reconciliation
  against a small remote interface (no actors, no sockets).
* :mod:`~aura_sync.protocols.session`: sync sessions, dials and peer exchange,
  with their compensation.
* :mod:`~aura_sync.protocols.serving`: answers to peers' sync requests.
* :mod:`~aura_sync.protocols.anti_entropy`: the protocol actor wiring ticks,
  dialing, sessions and serving.

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

__all__ = [
    "AntiEntropyActor",
    "AntiEntropyConfig",
    "AppendOps",
    "InfraAddresses",
    "Journal",
    "SyncStatus",
]
